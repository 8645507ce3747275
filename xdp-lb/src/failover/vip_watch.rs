//! Split brain seen even when VRRP is blocked both ways: ARP is not IP, and a firewall
//! dropping protocol 112 lets neighbour discovery through too. While this node holds
//! VIPs as MASTER, one task per interface and family listens and asks, once per advert
//! interval, who else has each VIP: an RFC 5227 ARP probe (sender address 0.0.0.0, so
//! no one's cache changes) for IPv4, a neighbour solicitation to the VIP's
//! solicited-node group for IPv6. Another MAC announcing or answering for a held VIP is
//! a conflict: another MASTER, or a real server that answers for the VIP it holds on
//! `lo` (DR without `arp_ignore`). It is reported only when seen again half an interval
//! later, so the moment of a normal takeover (the new MASTER's gratuitous ARP reaching
//! the old one before its advert does) is not one.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    time::Instant,
};

const ETH_P_ARP: u16 = 0x0806;

/// The VIPs this node holds on one interface as MASTER, with the advert interval of
/// the instance holding each (how often it is probed).
pub(super) type Held = HashMap<IpAddr, Duration>;

/// Another MAC seen announcing or answering for a held VIP: `confirmed` once seen
/// again half an interval later (a conflict), unconfirmed the first time (enough to
/// announce again: its announcement may have taken clients' ARP entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Conflict {
    pub ifindex: u32,
    pub vip: IpAddr,
    pub mac: [u8; 6],
    pub confirmed: bool,
}

/// How one family asks and listens: ARP for IPv4, neighbour discovery for IPv6.
pub(super) enum Listener {
    Arp(ArpSocket),
    Ndp(NdpSocket),
}

impl Listener {
    fn ifindex(&self) -> u32 {
        match self {
            Listener::Arp(s) => s.ifindex,
            Listener::Ndp(s) => s.ifindex,
        }
    }

    /// The next (MAC, address) someone announced or answered for.
    async fn next_claim(&self, buf: &mut [u8]) -> std::io::Result<Option<([u8; 6], IpAddr)>> {
        Ok(match self {
            Listener::Arp(s) => {
                let n = s.recv(buf).await?;
                arp_sender(&buf[..n]).map(|(mac, ip)| (mac, IpAddr::V4(ip)))
            }
            Listener::Ndp(s) => {
                let n = s.recv(buf).await?;
                na_target(&buf[..n]).map(|(mac, ip)| (mac, IpAddr::V6(ip)))
            }
        })
    }

    /// Asks who has `vip` (of this listener's family; others are skipped).
    fn probe(&self, mac: [u8; 6], vip: IpAddr) {
        // A lost probe only delays detection by one interval.
        let _ = match (self, vip) {
            (Listener::Arp(s), IpAddr::V4(v4)) => s.send(&arp_probe(mac, v4)),
            (Listener::Ndp(s), IpAddr::V6(v6)) => s.solicit(mac, v6),
            _ => Ok(()),
        };
    }
}

/// An AF_PACKET socket receiving ARP on one interface (and sending the probes).
pub(super) struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl ArpSocket {
    pub(super) fn open(ifindex: u32) -> std::io::Result<ArpSocket> {
        let protocol = i32::from(ETH_P_ARP.to_be());
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                protocol,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_ll is valid; the fields bind needs are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll of the length given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the socket is owned by the AsyncFd from here on and closed by it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(ArpSocket { fd, ifindex })
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        recv(&self.fd, buf).await
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        crate::announce::send_frame(self.fd.get_ref().as_raw_fd(), self.ifindex, frame)
    }
}

/// One datagram or frame from a non-blocking socket, waiting until one is there.
async fn recv<T: AsRawFd>(fd: &AsyncFd<T>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(e);
        }
        ready.clear_ready();
    }
}

/// An ARP frame's sender: (MAC, IPv4 address), for Ethernet/IPv4 ARP only.
pub(super) fn arp_sender(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    let arp = frame.get(14..42)?;
    if frame[12..14] != ETH_P_ARP.to_be_bytes() || arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let mac: [u8; 6] = arp[8..14].try_into().ok()?;
    let ip = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    Some((mac, ip))
}

/// "Who has `vip`?" from `mac` with sender address 0.0.0.0 (RFC 5227's probe): the
/// holder answers, nobody's ARP cache learns anything from it.
pub(super) fn arp_probe(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    // Sender IP 0.0.0.0 and target MAC 00:..: already zero.
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An ICMPv6 neighbour advertisement's target and target link-layer address: the MAC
/// that claims the address (`None` for anything else, or without that option).
pub(super) fn na_target(icmp: &[u8]) -> Option<([u8; 6], Ipv6Addr)> {
    if icmp.len() < 24 || icmp[0] != 136 || icmp[1] != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    let mut options = &icmp[24..];
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == 2 {
            return Some((options[2..8].try_into().ok()?, target));
        }
        options = &options[len..];
    }
    None
}

/// A neighbour solicitation for `vip` carrying our MAC (source link-layer option).
pub(super) fn neighbour_solicitation(mac: [u8; 6], vip: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 135;
    m[8..24].copy_from_slice(&vip.octets());
    m[24] = 1;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// A raw ICMPv6 socket on one interface that hears neighbour advertisements only
/// (ICMP6_FILTER) and sends solicitations (the kernel fills in the checksum).
pub(super) struct NdpSocket {
    socket: AsyncFd<socket2::Socket>,
    ifindex: u32,
}

impl NdpSocket {
    pub(super) fn open(ifindex: u32, name: &str) -> std::io::Result<NdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.set_nonblocking(true)?;
        socket.bind_device(Some(name.as_bytes()))?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.set_multicast_hops_v6(255)?;
        socket.set_unicast_hops_v6(255)?;
        socket.set_multicast_loop_v6(false)?;
        // linux/icmpv6.h ICMP6_FILTER: a set bit blocks its type; pass only NA (136).
        const ICMP6_FILTER: libc::c_int = 1;
        let mut filter = [u32::MAX; 8];
        filter[136 >> 5] &= !(1 << (136 & 31));
        // SAFETY: filter is a valid 32-byte icmp6_filter for the length given.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                filter.as_ptr().cast(),
                std::mem::size_of_val(&filter) as u32,
            )
        };
        if set < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the socket is owned by the AsyncFd from here on and closed by it.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(NdpSocket { socket, ifindex })
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        recv(&self.socket, buf).await
    }

    fn solicit(&self, mac: [u8; 6], vip: Ipv6Addr) -> std::io::Result<()> {
        // The VIP's solicited-node group: ff02::1:ff and its last 24 bits.
        let o = vip.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(o[13]),
            u16::from_be_bytes([o[14], o[15]]),
        );
        let to = std::net::SocketAddrV6::new(group, 0, 0, self.ifindex);
        self.socket
            .get_ref()
            .send_to(&neighbour_solicitation(mac, vip), &to.into())
            .map(drop)
    }
}

/// First sightings not yet confirmed: (VIP, other MAC) → when.
#[derive(Default)]
pub(super) struct Suspects(HashMap<(IpAddr, [u8; 6]), Instant>);

impl Suspects {
    /// A sighting of `mac` for `vip` (held, probed every `interval`) at `now`: `true`
    /// once it was also seen at least half an interval earlier.
    pub(super) fn seen(
        &mut self,
        vip: IpAddr,
        mac: [u8; 6],
        interval: Duration,
        now: Instant,
    ) -> bool {
        match self.0.get(&(vip, mac)) {
            Some(first) => now.duration_since(*first) >= interval / 2,
            None => {
                self.0.insert((vip, mac), now);
                false
            }
        }
    }

    /// Forgets sightings of VIPs no longer held.
    pub(super) fn keep(&mut self, held: &Held) {
        self.0.retain(|(vip, _), _| held.contains_key(vip));
    }
}

/// Watches one interface and family until the task is aborted.
pub(super) async fn watch(
    listener: Listener,
    mac: [u8; 6],
    mut held: watch::Receiver<Held>,
    conflicts: mpsc::Sender<Conflict>,
) {
    let mut suspects = Suspects::default();
    let mut buf = [0u8; 256];
    let mut probe_at = Instant::now();
    loop {
        let interval = held.borrow().values().min().copied();
        let probe = async {
            match interval {
                Some(_) => tokio::time::sleep_until(probe_at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = held.changed() => {
                if changed.is_err() {
                    return;
                }
                suspects.keep(&held.borrow());
                probe_at = Instant::now();
            }
            () = probe => {
                for vip in held.borrow().keys() {
                    listener.probe(mac, *vip);
                }
                probe_at = Instant::now() + interval.unwrap_or(Duration::from_secs(1));
            }
            claim = listener.next_claim(&mut buf) => {
                let Ok(claim) = claim else {
                    return;
                };
                let Some((sender, ip)) = claim else {
                    continue;
                };
                let Some(&every) = held.borrow().get(&ip) else {
                    continue;
                };
                if sender == mac {
                    continue;
                }
                let confirmed = suspects.seen(ip, sender, every, Instant::now());
                let conflict = Conflict {
                    ifindex: listener.ifindex(),
                    vip: ip,
                    mac: sender,
                    confirmed,
                };
                if conflicts.send(conflict).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_an_arp_request_from_zero_that_names_the_vip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let f = arp_probe(mac, vip);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender address 0.0.0.0");
        assert_eq!(&f[38..42], &vip.octets());
        // Our own probe names no sender address: never a conflict by itself.
        assert_eq!(arp_sender(&f), Some((mac, Ipv4Addr::UNSPECIFIED)));
        assert_eq!(arp_sender(&f[..41]), None, "too short");
    }

    #[test]
    fn a_solicitation_carries_our_mac_and_an_advertisement_names_its_claimant() {
        let (ours, theirs) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let ns = neighbour_solicitation(ours, vip);
        assert_eq!(
            (ns[0], &ns[8..24], &ns[26..32]),
            (135, &vip.octets()[..], &ours[..])
        );
        assert_eq!(na_target(&ns), None, "a solicitation claims nothing");
        // The answer: an advertisement with the target link-layer option.
        let mut na = ns;
        na[0] = 136;
        na[24] = 2;
        na[26..32].copy_from_slice(&theirs);
        assert_eq!(na_target(&na), Some((theirs, vip)));
        na[25] = 0;
        assert_eq!(na_target(&na), None, "a zero-length option ends the parse");
        assert_eq!(
            na_target(&na[..24]),
            None,
            "no link-layer option: no claimant"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_counts_once_seen_again_half_an_interval_later() {
        let mut s = Suspects::default();
        let (vip, mac) = (IpAddr::from([192, 0, 2, 100]), [2, 0, 0, 0, 0, 9]);
        let every = Duration::from_millis(200);
        let t0 = Instant::now();
        assert!(
            !s.seen(vip, mac, every, t0),
            "a takeover's one GARP is not one"
        );
        assert!(!s.seen(vip, mac, every, t0 + Duration::from_millis(50)));
        assert!(s.seen(vip, mac, every, t0 + Duration::from_millis(100)));
        // Released and held again: it starts over.
        s.keep(&Held::new());
        assert!(!s.seen(vip, mac, every, t0 + Duration::from_millis(300)));
    }
}
