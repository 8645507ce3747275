//! Split brain seen even when VRRP is blocked both ways: ARP is not IP, so a firewall
//! dropping protocol 112 lets it through. While this node holds IPv4 VIPs as MASTER,
//! one task per interface listens to ARP and asks, once per advert interval, who else
//! has each VIP (an RFC 5227 probe: sender address 0.0.0.0, so no one's cache
//! changes). Another MAC announcing or answering for a held VIP is a conflict: another
//! MASTER, or a real server that answers ARP for the VIP it holds on `lo` (DR without
//! `arp_ignore`). It is reported only when seen again an interval later, so the
//! moment of a normal takeover (the new MASTER's gratuitous ARP reaching the old one
//! before its advert does) is not one.
use std::{
    collections::HashMap,
    net::Ipv4Addr,
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
pub(super) type Held = HashMap<Ipv4Addr, Duration>;

/// Another MAC seen announcing or answering for a held VIP, twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Conflict {
    pub ifindex: u32,
    pub vip: Ipv4Addr,
    pub mac: [u8; 6],
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
        loop {
            let mut ready = self.fd.readable().await?;
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                ready.clear_ready();
                continue;
            }
            return Err(e);
        }
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: a zeroed sockaddr_ll is valid; the fields sendto needs are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and addr are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
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

/// First sightings not yet confirmed: (VIP, other MAC) → when.
#[derive(Default)]
pub(super) struct Suspects(HashMap<(Ipv4Addr, [u8; 6]), Instant>);

impl Suspects {
    /// A sighting of `mac` for `vip` (held, probed every `interval`) at `now`: `true`
    /// once it was also seen at least half an interval earlier.
    pub(super) fn seen(
        &mut self,
        vip: Ipv4Addr,
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

/// Watches one interface until the task is aborted.
pub(super) async fn watch(
    socket: ArpSocket,
    mac: [u8; 6],
    mut held: watch::Receiver<Held>,
    conflicts: mpsc::Sender<Conflict>,
) {
    let mut suspects = Suspects::default();
    let mut buf = [0u8; 128];
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
                    // A lost probe only delays detection by one interval.
                    let _ = socket.send(&arp_probe(mac, *vip));
                }
                probe_at = Instant::now() + interval.unwrap_or(Duration::from_secs(1));
            }
            received = socket.recv(&mut buf) => {
                let Ok(n) = received else {
                    return;
                };
                let Some((sender, ip)) = arp_sender(&buf[..n]) else {
                    continue;
                };
                let Some(&every) = held.borrow().get(&ip) else {
                    continue;
                };
                if sender != mac
                    && suspects.seen(ip, sender, every, Instant::now())
                    && conflicts
                        .send(Conflict { ifindex: socket.ifindex, vip: ip, mac: sender })
                        .await
                        .is_err()
                {
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

    #[tokio::test(start_paused = true)]
    async fn a_conflict_counts_once_seen_again_half_an_interval_later() {
        let mut s = Suspects::default();
        let (vip, mac) = (Ipv4Addr::new(192, 0, 2, 100), [2, 0, 0, 0, 0, 9]);
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
