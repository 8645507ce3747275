//! The kernel contract under fire: real traffic through the real XDP program while
//! userspace rewrites its maps a thousand times a second.
//!
//! A DR lab (client, LB, four real servers on one bridge; see `xdp_lb_lab::DrLab`)
//! with the program loaded through `Dataplane` and attached to the LB's `eth0`. A
//! generator in the client namespace injects UDP datagrams to the VIP from 4,096
//! source ports (4,096 flows) as fast as the path takes them. Meanwhile this thread
//! flips the service 1,000 times a second: new weights (a new schedule range through
//! `set_service`), a real server taken out or put back (schedule plus
//! `BACKEND_F_ACTIVE`), or a real server's MACs changed (`set_backend`). Every flip
//! is logged with the wall-clock times it started and ended.
//!
//! Each real server captures what reaches its `eth0` (AF_PACKET, kernel receive
//! timestamps). The bridge delivers a MAC only to its own server (static FDB entries
//! for every MAC a server is given), so a torn MAC would be flooded and show up
//! where it does not belong. A packet was decided by the program between its send
//! time (written in its payload) and its receive time, so it must have gone to a
//! server that was active in some state the log shows in that window, and carry a
//! destination MAC (and the matching source MAC) of that server from that window.
//! Headers, checksums and payload (sequence number, send time, FNV checksum) must
//! be intact. Needs root; fails loudly without it when CI=true.
use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use xdp_lb::{
    config::XdpMode,
    dataplane::{Dataplane, ServiceSpec},
    schedule,
};
use xdp_lb_common::{BACKEND_F_ACTIVE, BackendValue, FWD_DR, IPPROTO_UDP, ServiceKey, v4_mapped};
use xdp_lb_lab::{DrLab, DrLabOptions, Netns};

const SERVERS: usize = 4;
/// MAC versions each server cycles through.
const VERSIONS: u8 = 4;
const FLIPS_PER_SECOND: u64 = 1_000;
const RUN: Duration = Duration::from_secs(20);
const FLOWS: u16 = 4_096;
const FIRST_SPORT: u16 = 20_000;
const VPORT: u16 = 9_000;
const CLIENT: [u8; 4] = [192, 0, 2, 1];
const VIP: [u8; 4] = [192, 0, 2, 100];
const PAYLOAD: usize = 48;
const FRAME: usize = 14 + 20 + 8 + PAYLOAD;
const MAGIC: u32 = 0x5854_5253; // "XTRS"

/// Destination MAC of server `i` in version `v`: every 16-bit word differs between
/// versions, so a half-written MAC is no server's MAC.
fn dst_mac(i: usize, v: u8) -> [u8; 6] {
    let i = i as u8;
    [
        0x02 | v << 4,
        0xd0 + i,
        0x10 * v + i,
        0x40 + v,
        0x50 + i,
        0x60 + v,
    ]
}

/// Source MAC written with `dst_mac(i, v)`: the pair tells a torn value apart.
fn src_mac(i: usize, v: u8) -> [u8; 6] {
    let i = i as u8;
    [0x02 | v << 4, 0xe0 + i, v, i, 0x70 + v, 0x80 + i]
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The Internet checksum of `data` added to `sum`, folded and inverted.
fn inet_checksum(sum: u32, data: &[u8]) -> u16 {
    let mut sum = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .fold(sum, |a, w| a + w);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp_checksum(ip: &[u8], udp: &[u8]) -> u16 {
    let word = |b: &[u8]| u32::from(u16::from_be_bytes([b[0], b[1]]));
    let pseudo = word(&ip[12..])
        + word(&ip[14..])
        + word(&ip[16..])
        + word(&ip[18..])
        + u32::from(IPPROTO_UDP)
        + udp.len() as u32;
    match inet_checksum(pseudo, udp) {
        0 => 0xffff,
        c => c,
    }
}

/// Builds the datagram number `seq` (client → VIP:VPORT), stamped with `send_ns`.
fn build_frame(frame: &mut [u8; FRAME], lb_mac: [u8; 6], client_mac: [u8; 6], seq: u64, now: u64) {
    let sport = FIRST_SPORT + (seq % u64::from(FLOWS)) as u16;
    frame[0..6].copy_from_slice(&lb_mac);
    frame[6..12].copy_from_slice(&client_mac);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let (ip, rest) = frame[14..].split_at_mut(20);
    ip[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&CLIENT);
    ip[16..20].copy_from_slice(&VIP);
    let check = inet_checksum(0, ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let (udp, payload) = rest.split_at_mut(8);
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&VPORT.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    payload[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    payload[4..12].copy_from_slice(&seq.to_be_bytes());
    payload[12..20].copy_from_slice(&now.to_be_bytes());
    payload[20..22].copy_from_slice(&sport.to_be_bytes());
    for (k, b) in payload[22..PAYLOAD - 4].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
    let fnv = fnv1a(&payload[..PAYLOAD - 4]);
    payload[PAYLOAD - 4..].copy_from_slice(&fnv.to_be_bytes());
    let mut udp_all = [0u8; 8 + PAYLOAD];
    udp_all[..8].copy_from_slice(udp);
    udp_all[8..].copy_from_slice(payload);
    let check = udp_checksum(ip, &udp_all);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&check.to_be_bytes());
}

/// What a real server's capture made of one frame.
#[derive(Clone, Copy)]
struct Seen {
    recv_ns: u64,
    send_ns: u64,
    seq: u64,
    /// MAC version, valid when `problem` is None.
    version: u8,
    problem: Option<&'static str>,
}

/// Checks one frame captured at server `me`.
fn inspect(me: usize, frame: &[u8], recv_ns: u64, macs: &HashMap<[u8; 6], (usize, u8)>) -> Seen {
    let mut seen = Seen {
        recv_ns,
        send_ns: 0,
        seq: u64::MAX,
        version: 0,
        problem: None,
    };
    let bad = |mut s: Seen, why| {
        s.problem = Some(why);
        s
    };
    if frame.len() < FRAME {
        return bad(seen, "short frame");
    }
    let payload = &frame[14 + 28..FRAME];
    if u32::from_be_bytes(payload[0..4].try_into().unwrap()) == MAGIC {
        seen.seq = u64::from_be_bytes(payload[4..12].try_into().unwrap());
        seen.send_ns = u64::from_be_bytes(payload[12..20].try_into().unwrap());
    }
    let dst: [u8; 6] = frame[0..6].try_into().unwrap();
    let src: [u8; 6] = frame[6..12].try_into().unwrap();
    let Some(&(owner, version)) = macs.get(&dst) else {
        return bad(seen, "destination MAC is no server's (torn?)");
    };
    if owner != me {
        return bad(seen, "destination MAC of another server");
    }
    if src != src_mac(me, version) {
        return bad(seen, "source MAC does not match the destination MAC (torn)");
    }
    seen.version = version;
    let ip = &frame[14..34];
    if frame[12..14] != [0x08, 0x00] || ip[0] != 0x45 || ip[9] != IPPROTO_UDP {
        return bad(seen, "not IPv4/UDP");
    }
    if inet_checksum(0, ip) != 0 {
        return bad(seen, "IPv4 header checksum");
    }
    if ip[12..16] != CLIENT || ip[16..20] != VIP || ip[8] != 64 {
        return bad(seen, "IPv4 addresses or TTL changed");
    }
    if u16::from_be_bytes([ip[2], ip[3]]) as usize != 20 + 8 + PAYLOAD {
        return bad(seen, "IPv4 total length");
    }
    let udp = &frame[34..FRAME];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    if u16::from_be_bytes([udp[2], udp[3]]) != VPORT
        || !(FIRST_SPORT..FIRST_SPORT + FLOWS).contains(&sport)
        || u16::from_be_bytes([udp[4], udp[5]]) as usize != 8 + PAYLOAD
    {
        return bad(seen, "UDP ports or length changed");
    }
    let mut zeroed = [0u8; 8 + PAYLOAD];
    zeroed.copy_from_slice(udp);
    zeroed[6..8].copy_from_slice(&[0, 0]);
    if udp_checksum(ip, &zeroed) != u16::from_be_bytes([udp[6], udp[7]]) {
        return bad(seen, "UDP checksum");
    }
    if seen.seq == u64::MAX
        || fnv1a(&payload[..PAYLOAD - 4])
            != u32::from_be_bytes(payload[PAYLOAD - 4..].try_into().unwrap())
        || u16::from_be_bytes([payload[20], payload[21]]) != sport
    {
        return bad(seen, "payload");
    }
    seen
}

/// An AF_PACKET socket on `eth0` of the calling thread's namespace: for receiving
/// (every frame, kernel receive timestamps, a big buffer) or for sending only.
fn packet_socket(receive: bool) -> OwnedFd {
    let name = std::ffi::CString::new("eth0").unwrap();
    // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert_ne!(index, 0, "no eth0");
        let proto = if receive {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0 // receives nothing
        };
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        assert_eq!(libc::bind(raw, (&raw const addr).cast(), len), 0);
        fn set<T>(fd: i32, opt: i32, value: &T) -> i32 {
            let len = size_of::<T>() as libc::socklen_t;
            // SAFETY: `value` is valid for `len` bytes.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (value as *const T).cast(), len) }
        }
        if receive {
            assert_eq!(set(raw, libc::SO_TIMESTAMPNS, &1i32), 0);
            assert_eq!(set(raw, libc::SO_RCVBUFFORCE, &(64i32 << 20)), 0);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            assert_eq!(set(raw, libc::SO_RCVTIMEO, &tv), 0);
        }
        fd
    }
}

/// (packets, drops) the kernel counted on a packet socket since the last call.
fn packet_stats(fd: &OwnedFd) -> (u32, u32) {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: a valid buffer and length for PACKET_STATISTICS.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    (st.tp_packets, st.tp_drops)
}

/// Captures on server `me` until `stop`: every incoming frame inspected.
fn capture(me: usize, stop: Arc<AtomicBool>) -> (Vec<Seen>, Vec<String>, u64) {
    const BATCH: usize = 64;
    let macs: HashMap<[u8; 6], (usize, u8)> = (0..SERVERS)
        .flat_map(|i| (0..VERSIONS).map(move |v| (dst_mac(i, v), (i, v))))
        .collect();
    let fd = packet_socket(true);
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut ctrl = vec![[0u64; 16]; BATCH];
    // SAFETY: all-zero sockaddr_ll / mmsghdr are valid.
    let mut names: Vec<libc::sockaddr_ll> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is a plain C struct for which all zeroes is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let (mut seen, mut examples, mut drops) = (Vec::new(), Vec::new(), 0u64);
    let _ = packet_stats(&fd);
    while !stop.load(Ordering::Relaxed) {
        for k in 0..BATCH {
            let h = &mut msgs[k].msg_hdr;
            h.msg_name = (&raw mut names[k]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            h.msg_iov = &raw mut iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = ctrl[k].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 16]>();
        }
        // SAFETY: BATCH headers, each pointing at its own name, iovec and control
        // buffer, all alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        for k in 0..n.max(0) as usize {
            if names[k].sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = msgs[k].msg_len as usize;
            let frame = &bufs[k][..len];
            if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != IPPROTO_UDP {
                continue; // ARP, IPv6 neighbour discovery, ...
            }
            let recv_ns = timestamp(&msgs[k].msg_hdr).unwrap_or_else(realtime_ns);
            let s = inspect(me, frame, recv_ns, &macs);
            if let Some(why) = s.problem
                && examples.len() < 5
            {
                examples.push(format!("{why}: {:02x?}", &frame[..frame.len().min(64)]));
            }
            seen.push(s);
        }
        drops += u64::from(packet_stats(&fd).1);
    }
    (seen, examples, drops)
}

/// The SCM_TIMESTAMPNS of a received message.
fn timestamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: `h` was filled by recvmmsg; the CMSG macros stay within msg_control.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Sends datagrams from the client's eth0 as fast as it goes until `stop`.
fn generate(lb_mac: [u8; 6], client_mac: [u8; 6], stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    const BATCH: usize = 32;
    let fd = packet_socket(false);
    let mut frames = vec![[0u8; FRAME]; BATCH];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = realtime_ns();
        for f in frames.iter_mut() {
            build_frame(f, lb_mac, client_mac, seq, now);
            seq += 1;
        }
        let mut iovs: Vec<libc::iovec> = frames
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: FRAME,
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid; each points at one live iovec.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is a plain C struct for which all zeroes is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: BATCH valid headers whose buffers outlive the call.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        // Frames not taken were never sent: their sequence numbers stay unused.
        let taken = n.max(0) as u64;
        seq -= BATCH as u64 - taken;
        sent.fetch_add(taken, Ordering::Relaxed);
        if taken < BATCH as u64 {
            thread::yield_now();
        }
    }
}

/// One completed flip: when its writes started and ended, and the state after it.
#[derive(Clone, Copy)]
struct Flip {
    start_ns: u64,
    end_ns: u64,
    active: [bool; SERVERS],
    version: [u8; SERVERS],
}

/// The writer's side: the map contents it maintains.
struct Writer {
    dp: Dataplane,
    key: ServiceKey,
    ifindex: u32,
    active: [bool; SERVERS],
    weights: [u32; SERVERS],
    version: [u8; SERVERS],
}

impl Writer {
    fn backend(&mut self, i: usize) {
        let value = BackendValue {
            addr: v4_mapped([192, 0, 2, 11 + i as u8]),
            dst_mac: dst_mac(i, self.version[i]),
            src_mac: src_mac(i, self.version[i]),
            ifindex: self.ifindex,
            flags: if self.active[i] { BACKEND_F_ACTIVE } else { 0 },
            port_be: VPORT.to_be(),
            mtu: 1500,
            tun_src: [0; 16],
        };
        self.dp.set_backend(i as u32, &value).unwrap();
    }

    fn schedule(&mut self) {
        let weights: Vec<u32> = (0..SERVERS)
            .map(|i| if self.active[i] { self.weights[i] } else { 0 })
            .collect();
        let wrr = schedule::weighted_round_robin(&weights).unwrap();
        self.dp
            .set_service(&ServiceSpec {
                key: self.key,
                id: 0,
                forwarding: FWD_DR,
                select: wrr.select,
                active: true,
                slots: wrr.slots,
                ..Default::default()
            })
            .unwrap();
    }

    /// One random change: new weights, a server out or back in, or new MACs.
    fn flip(&mut self, rng: &mut u64) -> Flip {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        let (what, x, w) = (next() % 10, next() as usize % SERVERS, next());
        let start_ns = realtime_ns();
        match what {
            0..=3 => {
                for (i, weight) in self.weights.iter_mut().enumerate() {
                    *weight = 1 + ((w >> (8 * i)) % 4) as u32;
                }
                self.schedule();
            }
            4..=6 if self.active[x] && self.active.iter().filter(|a| **a).count() > 1 => {
                // Out: no new flows first, then pinned flows move.
                self.active[x] = false;
                self.schedule();
                self.backend(x);
            }
            4..=6 if !self.active[x] => {
                // In: usable first, then scheduled.
                self.active[x] = true;
                self.backend(x);
                self.schedule();
            }
            _ => {
                self.version[x] = (self.version[x] + 1) % VERSIONS;
                self.backend(x);
            }
        }
        Flip {
            start_ns,
            end_ns: realtime_ns(),
            active: self.active,
            version: self.version,
        }
    }
}

/// What the states in force during [from, to] allow: active servers and, per
/// server, MAC versions (bit sets). States before `from` ended before the packet
/// existed; flips starting after `to` came after it arrived.
fn allowed(log: &[Flip], from: u64, to: u64) -> (u8, [u8; SERVERS]) {
    // The last flip complete when the packet was sent (log[0] is the initial state).
    let lo = log.partition_point(|f| f.end_ns <= from).saturating_sub(1);
    // The last flip begun before it was received.
    let hi = log.partition_point(|f| f.start_ns <= to).max(1) - 1;
    let (mut active, mut versions) = (0u8, [0u8; SERVERS]);
    for f in &log[lo..=hi.max(lo)] {
        for (i, (on, version)) in f.active.iter().zip(f.version).enumerate() {
            active |= u8::from(*on) << i;
            versions[i] |= 1 << version;
        }
    }
    (active, versions)
}

/// Stops the lab's threads on every exit path, also when an assert fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn flips_at_a_thousand_a_second_never_misdirect_or_tear_a_packet() {
    // Fails (never skips) without root, as every lab test: namespaces, XDP, raw sockets.
    xdp_lb_lab::require_root().unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let names: Vec<String> = (1..=SERVERS).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let lab = DrLab::build(DrLabOptions::one_arm(&names)).expect("build the DR lab");
    // Every MAC a server will be given reaches only that server's port.
    for (i, b) in lab.backends.iter().enumerate() {
        for v in 0..VERSIONS {
            let mac: Vec<String> = dst_mac(i, v).iter().map(|b| format!("{b:02x}")).collect();
            let port = format!("b-{}", b.name);
            let mut cmd = lab.switch.command("bridge");
            cmd.args([
                "fdb",
                "add",
                &mac.join(":"),
                "dev",
                &port,
                "master",
                "static",
            ]);
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    let lb_mac = lab.lb.mac_bytes("eth0").unwrap();
    let client_mac = lab.client.mac_bytes("eth0").unwrap();
    let ifindex = lab.lb.ifindex("eth0").unwrap();

    // Loaded here, attached from inside the LB's namespace (the link outlives the
    // thread that made it).
    let dp = Dataplane::load(65_536).expect("load the XDP program");
    let dp = lab
        .lb
        .run(move || {
            let mut dp = dp;
            // The error as text: DataplaneError is too big for clippy to pass around.
            dp.attach("eth0", XdpMode::Driver)
                .map(|_| dp)
                .map_err(|e| e.to_string())
        })
        .unwrap()
        .expect("attach XDP to the LB's eth0");
    let mut writer = Writer {
        dp,
        key: ServiceKey {
            addr: v4_mapped(VIP),
            port_be: VPORT.to_be(),
            proto: IPPROTO_UDP,
            _pad: 0,
        },
        ifindex,
        active: [true; SERVERS],
        weights: [1; SERVERS],
        version: [0; SERVERS],
    };
    for i in 0..SERVERS {
        writer.backend(i);
    }
    writer.schedule();

    let stop = Arc::new(AtomicBool::new(false));
    let stop_capture = Arc::new(AtomicBool::new(false));
    let _guard = (StopOnDrop(stop.clone()), StopOnDrop(stop_capture.clone()));
    let captures: Vec<_> = lab
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let stop = stop_capture.clone();
            b.ns.spawn(move || capture(i, stop)).unwrap()
        })
        .collect();
    thread::sleep(Duration::from_millis(200)); // sockets open
    let sent = Arc::new(AtomicU64::new(0));
    let generator = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let ns: &Netns = &lab.client;
        ns.spawn(move || generate(lb_mac, client_mac, stop, sent))
            .unwrap()
    };

    // The writer: FLIPS_PER_SECOND flips for RUN, logged.
    let now = realtime_ns();
    let mut log = vec![Flip {
        start_ns: now,
        end_ns: now,
        active: writer.active,
        version: writer.version,
    }];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let begin = Instant::now();
    let every = Duration::from_nanos(1_000_000_000 / FLIPS_PER_SECOND);
    let mut due = begin;
    while begin.elapsed() < RUN {
        log.push(writer.flip(&mut rng));
        due += every;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => thread::sleep(wait),
            // Far behind (a busy machine): do not burst to catch up.
            None if Instant::now() - due > 10 * every => due = Instant::now(),
            None => {}
        }
    }
    let flipping = begin.elapsed();
    stop.store(true, Ordering::Relaxed);
    generator.join().unwrap().unwrap();
    thread::sleep(Duration::from_millis(300)); // let the last packets land
    stop_capture.store(true, Ordering::Relaxed);
    let results: Vec<(Vec<Seen>, Vec<String>, u64)> = captures
        .into_iter()
        .map(|c| c.join().unwrap().unwrap())
        .collect();

    // Judge every captured packet against the log.
    let sent = sent.load(Ordering::Relaxed);
    let (mut to_inactive, mut stale_mac, mut malformed, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
    let mut seqs = vec![false; sent as usize];
    let mut latencies = Vec::new();
    let mut problems = Vec::new();
    for (i, (seen, examples, _)) in results.iter().enumerate() {
        problems.extend(examples.iter().map(|e| format!("s{}: {e}", i + 1)));
        for s in seen {
            if s.problem.is_some() {
                malformed += 1;
                continue;
            }
            match seqs.get_mut(s.seq as usize) {
                Some(seen_before) if *seen_before => duplicates += 1,
                Some(first) => *first = true,
                None => malformed += 1,
            }
            latencies.push(s.recv_ns.saturating_sub(s.send_ns));
            let (active, versions) = allowed(&log, s.send_ns, s.recv_ns);
            if active & (1 << i) == 0 {
                to_inactive += 1;
                if problems.len() < 10 {
                    let ms = |ns: u64| ns.saturating_sub(log[0].start_ns) as f64 / 1e6;
                    problems.push(format!(
                        "s{}: seq {} sent at +{:.3} ms, received at +{:.3} ms; active \
                         sets in that window {:04b} (bit i = server i+1)",
                        i + 1,
                        s.seq,
                        ms(s.send_ns),
                        ms(s.recv_ns),
                        active,
                    ));
                }
            }
            if versions[i] & (1 << s.version) == 0 {
                stale_mac += 1;
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get(latencies.len() * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let captured: Vec<usize> = results.iter().map(|r| r.0.len()).collect();
    let capture_drops: Vec<u64> = results.iter().map(|r| r.2).collect();
    let counted: Vec<u64> = (0..SERVERS as u32)
        .map(|i| writer.dp.backend_stats(i).unwrap().packets)
        .collect();
    let flips = log.len() - 1;
    println!("dataplane stress, {flipping:.1?} of flipping:");
    println!("  packets sent            {sent}");
    println!("  captured per server     {captured:?} (socket drops {capture_drops:?})");
    println!("  counted per server      {counted:?} (BACKEND_STATS)");
    println!(
        "  flips done              {flips} ({:.0}/s)",
        flips as f64 / flipping.as_secs_f64()
    );
    println!(
        "  send→capture latency    p50 {} µs, p99 {} µs, max {} µs",
        pct(50) / 1000,
        pct(99) / 1000,
        latencies.last().copied().unwrap_or(0) / 1000
    );
    println!("  to an inactive server   {to_inactive}");
    println!("  stale MAC               {stale_mac}");
    println!("  malformed               {malformed}");
    println!("  duplicates              {duplicates}");
    println!("  wall time               {:.1?}", started.elapsed());
    for p in &problems {
        println!("  {p}");
    }
    assert_eq!(
        (to_inactive, stale_mac, malformed, duplicates),
        (0, 0, 0, 0),
        "packets misdirected or damaged under map updates: {problems:#?}"
    );
    // Generous floors: the run really exercised something.
    assert!(sent > 10_000, "only {sent} packets sent");
    assert!(
        captured.iter().all(|c| *c > 100),
        "a server saw almost nothing: {captured:?}"
    );
    assert!(
        flips as f64 >= 0.3 * FLIPS_PER_SECOND as f64 * RUN.as_secs_f64(),
        "only {flips} flips in {flipping:?}"
    );
}
