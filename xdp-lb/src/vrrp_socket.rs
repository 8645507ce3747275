//! The VRRP transport: raw IP sockets for protocol 112 on one interface, multicast
//! (224.0.0.18 / ff02::12) or unicast to configured peers, always sent with TTL / hop
//! limit 255, and received with the TTL / hop limit the sender used (RFC 5798 §5.1.1.3
//! and §7.1 require dropping anything else) and the source and destination addresses.
//! The IP header matches keepalived's: TOS / traffic class 0xc0 (network control) and,
//! for IPv4, no DF bit.
use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

pub const IPPROTO_VRRP: i32 = 112;
pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
const TTL: u32 = 255;
/// IPTOS_PREC_INTERNETCONTROL: what keepalived (and FRR) send adverts with.
const TOS: u32 = 0xc0;

/// An advertisement as it arrived: the VRRP payload and what the IP layer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6) on arrival.
    pub ttl: u8,
    pub payload: Vec<u8>,
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    /// The source of multicast adverts, set per packet (IP_PKTINFO / IPV6_PKTINFO):
    /// binding the socket to it would stop it receiving the group's adverts.
    multicast_source: Option<IpAddr>,
    ifindex: u32,
}

impl VrrpSocket {
    /// A socket on `ifname` (index `ifindex`). With `multicast`, joins the VRRP group on
    /// that interface; `source` (if any) is the address adverts are sent from
    /// (keepalived's `mcast_src_ip` / `unicast_src_ip`).
    pub fn open(
        ifname: &str,
        ifindex: u32,
        v6: bool,
        multicast: bool,
        source: Option<IpAddr>,
    ) -> io::Result<VrrpSocket> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
        socket.set_nonblocking(true)?;
        // Only this interface's adverts: instances on other interfaces have their own.
        socket.bind_device(Some(ifname.as_bytes()))?;
        // A unicast socket is bound to its source, which also keeps other instances'
        // unicast adverts (to other addresses of ours) off it.
        if let (Some(src), false) = (source, multicast) {
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        if v6 {
            socket.set_tclass_v6(TOS)?;
            socket.set_multicast_hops_v6(TTL)?;
            socket.set_unicast_hops_v6(TTL)?;
            socket.set_multicast_loop_v6(false)?;
            socket.set_multicast_if_v6(ifindex)?;
            set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
            set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
            if multicast {
                socket.join_multicast_v6(&VRRP_GROUP_V6, ifindex)?;
            }
        } else {
            socket.set_tos_v4(TOS)?;
            set_int(
                &socket,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DONT,
            )?;
            socket.set_multicast_ttl_v4(TTL)?;
            socket.set_ttl_v4(TTL)?;
            socket.set_multicast_loop_v4(false)?;
            // SO_BINDTODEVICE also picks the interface multicast leaves by.
            if multicast {
                socket.join_multicast_v4_n(
                    &VRRP_GROUP_V4,
                    &socket2::InterfaceIndexOrAddress::Index(ifindex),
                )?;
            }
        }
        // SAFETY: the socket is owned by the AsyncFd from here on and closed by it.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(VrrpSocket {
            fd,
            v6,
            multicast_source: source.filter(|_| multicast),
            ifindex,
        })
    }

    /// Sends one VRRP payload (the IP header is the kernel's, TTL 255).
    pub async fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddr::new(dst, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| match self.multicast_source {
                Some(src) => send_from(s.get_ref(), self.ifindex, payload, dst, src),
                None => s.get_ref().send_to(payload, &addr),
            }) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for the next advertisement on this interface.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|s| {
                if self.v6 {
                    recv_v6(s.get_ref())
                } else {
                    recv_v4(s.get_ref())
                }
            });
            match result {
                Ok(Ok(Some(received))) => return Ok(received),
                // Too short to be IP at all: read and forget, wait for the next.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Sends `payload` to `dst` from `src`, which must be one of the host's addresses.
fn send_from(
    socket: &Socket,
    ifindex: u32,
    payload: &[u8],
    dst: IpAddr,
    src: IpAddr,
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, SockaddrIn, sendmsg};
    let iov = [io::IoSlice::new(payload)];
    let sent = match (dst, src) {
        (IpAddr::V4(dst), IpAddr::V4(src)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: ifindex as i32,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
        }
        (IpAddr::V6(dst), IpAddr::V6(src)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(dst, 0, 0, 0));
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source {src} and destination {dst} are of different families"),
            ));
        }
    };
    sent.map_err(io::Error::from)
}

/// IPv4 raw sockets deliver the IP header: TTL and addresses come from it.
fn recv_v4(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let (n, _) = socket.recv_from(&mut buf)?;
    // SAFETY: recv_from initialised the first n bytes.
    let packet: Vec<u8> = buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    if packet.len() < 20 {
        return Ok(None);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return Ok(None);
    }
    Ok(Some(Received {
        src: IpAddr::V4(Ipv4Addr::new(
            packet[12], packet[13], packet[14], packet[15],
        )),
        dst: IpAddr::V4(Ipv4Addr::new(
            packet[16], packet[17], packet[18], packet[19],
        )),
        ttl: packet[8],
        payload: packet[ihl..].to_vec(),
    }))
}

/// IPv6 raw sockets deliver only the payload: hop limit and destination come as
/// ancillary data.
fn recv_v6(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = vec![0u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut ttl = 0u8;
    let mut dst = Ipv6Addr::UNSPECIFIED;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6HopLimit(h) => ttl = h as u8,
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Ipv6Addr::from(info.ipi6_addr.s6_addr)
            }
            _ => {}
        }
    }
    let Some(src) = msg.address.map(|a| a.ip()) else {
        return Ok(None);
    };
    let n = msg.bytes;
    buf.truncate(n);
    Ok(Some(Received {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        ttl,
        payload: buf,
    }))
}

fn set_int(socket: &Socket, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
