//! Tiny XDP programs loaded straight from bytecode (no compiler, no ELF):
//! the pass-through program the lab puts on the LB-facing veth peers, and a
//! loader for hand-assembled programs that tests use to check the lab's own
//! XDP paths without the xdp-lb daemon.
//!
//! Why the pass-through program: a veth only delivers frames that native XDP
//! on its peer sends with `XDP_TX` once the receiving end runs NAPI *and* has
//! an XDP program. GRO alone enables NAPI, which is enough for `bpf_redirect`
//! (its flush schedules NAPI), but the `XDP_TX` flush skips peers without a
//! program, so those frames sat in the ring until unrelated traffic came by
//! (seen on 6.18: SYNs arriving in bursts seconds late).
//!
//! Programs are loaded with the `bpf(2)` syscall and attached in native
//! (driver) mode over rtnetlink (`RTM_SETLINK` + `IFLA_XDP`), from a thread
//! inside the namespace. A program attached this way lives as long as the
//! interface, so the namespace's deletion cleans it up.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// `BPF_PROG_LOAD` command of `bpf(2)`.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `IFLA_XDP` and its nested attributes (linux/if_link.h).
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
/// `XDP_FLAGS_DRV_MODE`: native mode, fail rather than fall back to generic.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// XDP action codes.
pub const XDP_DROP: i32 = 1;
/// Hand the frame to the kernel stack.
pub const XDP_PASS: i32 = 2;
/// Send the frame back out of the interface it came in on.
pub const XDP_TX: i32 = 3;

/// Encodes one eBPF instruction as the kernel's `struct bpf_insn` (little endian):
/// opcode, destination and source registers, offset, immediate.
pub const fn bpf_insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [
        code,
        (dst & 0x0f) | ((src & 0x0f) << 4),
        o[0],
        o[1],
        i[0],
        i[1],
        i[2],
        i[3],
    ]
}

/// `r0 = XDP_PASS; exit`.
const PASS_PROGRAM: [[u8; 8]; 2] = [
    bpf_insn(0xb7, 0, 0, 0, XDP_PASS), // BPF_ALU64 | BPF_MOV | BPF_K
    bpf_insn(0x95, 0, 0, 0, 0),        // BPF_JMP | BPF_EXIT
];

/// Attaches a program that passes every frame to `ifname` in `ns` (native mode).
pub fn attach_xdp_pass(ns: &Netns, ifname: &str) -> Result<()> {
    attach_xdp_bytecode(ns, ifname, "xdp_lab_pass", &PASS_PROGRAM)
}

/// The tunnels the lab's real servers can end with [`attach_decap`]: this kernel has
/// neither `ip6_tunnel` nor `sit`, so an XDP stand-in does what the device would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// IPv6 in IPv6 (next header 41), as an `ip6tnl` device in mode ip6ip6.
    Ip6InIp6,
    /// IPv4 in IPv6 (next header 4), as an `ip6tnl` device in mode ipip6.
    Ip4InIp6,
    /// IPv6 in IPv4 (protocol 41, a 20-byte outer header), as a `sit` device.
    Ip6InIp4,
}

const ETH_IPV4_LE: i32 = 0x0008;
const ETH_IPV6_LE: i32 = 0xdd86;

/// Decapsulates one kind of tunnel: if the frame's outer header is of the tunnel's
/// family (IPv4: exactly version 4 with a 20-byte header) and carries its protocol, the
/// MACs move forward over the outer header, the inner packet's ethertype is written
/// before it, `bpf_xdp_adjust_head` drops the outer header, and the inner packet goes
/// to the kernel as if it had arrived bare. Anything else passes untouched. With `N`
/// the outer header's length and `E` = 14 + N:
///
/// ```text
///  0: r6 = r1                       ctx
///  1: r2 = *(u32 *)(r6 + 0)         data
///  2: r3 = *(u32 *)(r6 + 4)         data_end
///  3: r4 = r2
///  4: r4 += E                       Ethernet + outer header
///  5: if r4 > r3 goto 23
///  6: r5 = *(u16 *)(r2 + 12)        ethertype, as loaded little-endian
///  7: if r5 != outer ethertype goto 23
///  8: r5 = *(u8 *)(r2 + 14)         version (and IPv4's header length)
///  9: r5 &= mask                    0xf0 for IPv6, 0xff for IPv4
/// 10: if r5 != 0x60 / 0x45 goto 23
/// 11: r5 = *(u8 *)(r2 + 20 / 23)    next header / protocol
/// 12: if r5 != protocol goto 23
/// 13..18: copy bytes 0..12 to N..N+12 (the MACs)
/// 19: *(u16 *)(r2 + N + 12) = inner ethertype
/// 20: r1 = r6
/// 21: r2 = N
/// 22: call bpf_xdp_adjust_head
/// 23: r0 = XDP_PASS
/// 24: exit
/// ```
const fn decap_program(tunnel: Tunnel) -> [[u8; 8]; 25] {
    // (N, outer ethertype, version mask and value, protocol's offset, protocol, inner)
    let (n, outer, mask, version, proto_at, proto, inner) = match tunnel {
        Tunnel::Ip6InIp6 => (40, ETH_IPV6_LE, 0xf0, 0x60, 20, 41, ETH_IPV6_LE),
        Tunnel::Ip4InIp6 => (40, ETH_IPV6_LE, 0xf0, 0x60, 20, 4, ETH_IPV4_LE),
        Tunnel::Ip6InIp4 => (20, ETH_IPV4_LE, 0xff, 0x45, 23, 41, ETH_IPV6_LE),
    };
    [
        bpf_insn(0xbf, 6, 1, 0, 0),
        bpf_insn(0x61, 2, 6, 0, 0),
        bpf_insn(0x61, 3, 6, 4, 0),
        bpf_insn(0xbf, 4, 2, 0, 0),
        bpf_insn(0x07, 4, 0, 0, 14 + n),
        bpf_insn(0x2d, 4, 3, 17, 0),
        bpf_insn(0x69, 5, 2, 12, 0),
        bpf_insn(0x55, 5, 0, 15, outer),
        bpf_insn(0x71, 5, 2, 14, 0),
        bpf_insn(0x57, 5, 0, 0, mask),
        bpf_insn(0x55, 5, 0, 12, version),
        bpf_insn(0x71, 5, 2, proto_at, 0),
        bpf_insn(0x55, 5, 0, 10, proto),
        bpf_insn(0x61, 5, 2, 0, 0),
        bpf_insn(0x63, 2, 5, n as i16, 0),
        bpf_insn(0x61, 5, 2, 4, 0),
        bpf_insn(0x63, 2, 5, n as i16 + 4, 0),
        bpf_insn(0x61, 5, 2, 8, 0),
        bpf_insn(0x63, 2, 5, n as i16 + 8, 0),
        bpf_insn(0x6a, 2, 0, n as i16 + 12, inner),
        bpf_insn(0xbf, 1, 6, 0, 0),
        bpf_insn(0xb7, 2, 0, 0, n),
        bpf_insn(0x85, 0, 0, 0, 44), // bpf_xdp_adjust_head
        bpf_insn(0xb7, 0, 0, 0, XDP_PASS),
        bpf_insn(0x95, 0, 0, 0, 0),
    ]
}

/// Makes `ifname` in `ns` a TUN real server's end of a `tunnel` with any remote, for
/// kernels built without `CONFIG_IPV6_TUNNEL` or `CONFIG_IPV6_SIT` (this one). Frames
/// captured on the interface are seen after the decapsulation (capture on the sending
/// side to see the outer header).
pub fn attach_decap(ns: &Netns, ifname: &str, tunnel: Tunnel) -> Result<()> {
    let name = match tunnel {
        Tunnel::Ip6InIp6 => "xdp_lab_6in6",
        Tunnel::Ip4InIp6 => "xdp_lab_4in6",
        Tunnel::Ip6InIp4 => "xdp_lab_6in4",
    };
    attach_xdp_bytecode(ns, ifname, name, &decap_program(tunnel))
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes) and attaches
/// it to `ifname` in `ns` in native mode, replacing any program there. A
/// verifier rejection comes back with the verifier's log.
pub fn attach_xdp_bytecode(ns: &Netns, ifname: &str, name: &str, insns: &[[u8; 8]]) -> Result<()> {
    let prog = load_xdp(name, insns).with_context(|| format!("loading XDP program {name}"))?;
    let ifname_owned = ifname.to_owned();
    ns.run(move || set_link_xdp(&ifname_owned, Some(&prog)))?
        .with_context(|| {
            format!(
                "attaching XDP program {name} to {ifname} in netns {}",
                ns.name()
            )
        })
}

/// Detaches whatever native XDP program `ifname` in `ns` has.
pub fn detach_xdp(ns: &Netns, ifname: &str) -> Result<()> {
    let ifname_owned = ifname.to_owned();
    ns.run(move || set_link_xdp(&ifname_owned, None))?
        .with_context(|| format!("detaching XDP from {ifname} in netns {}", ns.name()))
}

/// `union bpf_attr` as used by `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

fn load_xdp(name: &str, insns: &[[u8; 8]]) -> Result<OwnedFd> {
    if name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("program name {name:?}: use at most 15 ASCII letters, digits or '_'");
    }
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len().try_into().context("too many instructions")?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix whose pointers
    // (instructions, license, log buffer) outlive the call; the kernel reads
    // at most `size_of::<ProgLoadAttr>()` bytes of it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]);
        bail!(
            "bpf(BPF_PROG_LOAD) failed: {err}\nverifier log:\n{}",
            log.trim()
        );
    }
    // SAFETY: the syscall returned a fresh file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Appends one netlink attribute (header + payload, padded to 4 bytes).
fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Sets (or with `None` clears) the native XDP program of `ifname` in the
/// calling thread's network namespace.
fn set_link_xdp(ifname: &str, prog: Option<&OwnedFd>) -> Result<()> {
    let c_ifname = CString::new(ifname).context("interface name contains NUL")?;
    // SAFETY: a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_ifname.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", io::Error::last_os_error());
    }

    let mut nested = Vec::new();
    let fd = prog.map_or(-1, |p| p.as_raw_fd());
    push_attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    push_attr(
        &mut nested,
        IFLA_XDP_FLAGS,
        &XDP_FLAGS_DRV_MODE.to_ne_bytes(),
    );

    let mut body = Vec::new();
    // struct ifinfomsg: family, pad, type, index, flags, change.
    body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);

    let mut msg = Vec::new();
    // struct nlmsghdr: len, type, flags, seq, pid.
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);

    let sock = crate::netns::route_netlink()?;
    // SAFETY: `msg` is a valid buffer of the given length.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        bail!("netlink send: {}", io::Error::last_os_error());
    }
    let mut reply = [0u8; 4096];
    // SAFETY: `reply` is a writable buffer of the given length.
    let got = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if got < 0 {
        bail!("netlink recv: {}", io::Error::last_os_error());
    }
    let reply = &reply[..got as usize];
    // An ack is NLMSG_ERROR with error 0; anything else non-zero is -errno.
    if reply.len() < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != libc::NLMSG_ERROR as u16 {
        bail!("unexpected netlink reply ({} bytes)", reply.len());
    }
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if errno != 0 {
        bail!(
            "RTM_SETLINK IFLA_XDP on {ifname} (native mode): {}",
            io::Error::from_raw_os_error(-errno)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_like_the_kernel() {
        // r0 = 2 / exit, as llvm-objdump prints them.
        assert_eq!(PASS_PROGRAM[0], [0xb7, 0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(PASS_PROGRAM[1], [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // r2 = *(u32 *)(r1 + 4)
        assert_eq!(bpf_insn(0x61, 2, 1, 4, 0), [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        // if r3 > r2 goto +52
        assert_eq!(
            bpf_insn(0x2d, 3, 2, 52, 0),
            [0x2d, 0x23, 0x34, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn attributes_are_padded() {
        let mut buf = Vec::new();
        push_attr(&mut buf, 1, &[1, 2, 3, 4, 5]);
        assert_eq!(buf.len(), 12);
        assert_eq!(&buf[..4], &[9, 0, 1, 0]);
    }
}
