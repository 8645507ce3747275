//! Telling the segment that an address moved here: gratuitous ARP for IPv4 and
//! unsolicited neighbour advertisements for IPv6, sent when a VRRP instance becomes
//! MASTER (and periodically, if configured), as keepalived does, on keepalived's
//! schedule ([`Schedule`]).
//!
//! Frames are built whole (etherparse computes the ICMPv6 checksum) and sent on an
//! `AF_PACKET` socket bound to the interface, so the source MAC, the hop limit of 255
//! that RFC 4861 requires, and the link-local source are exactly what we set.
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinHandle;

use etherparse::{
    ArpEthIpv4Packet, ArpHardwareId, ArpOperation, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};

const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, all nodes, and its Ethernet multicast address 33:33:00:00:00:01.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Option type 2, target link-layer address, length 1 (8 bytes).
const OPTION_TARGET_LL: [u8; 2] = [2, 1];

/// When to announce, with keepalived's keys and defaults: a burst of `repeat`
/// (`garp_master_repeat`, 5) on becoming MASTER, a second burst `delay`
/// (`garp_master_delay`, 5 s; zero: none) later, then `refresh_repeat`
/// (`garp_master_refresh_repeat`, 1) every `refresh` (`garp_master_refresh`; none by
/// default) while MASTER. Within a burst, one round every `interval` (`garp_interval`,
/// 0). A round announces every VIP once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub repeat: u32,
    pub delay: Duration,
    pub refresh: Option<Duration>,
    pub refresh_repeat: u32,
    pub interval: Duration,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            repeat: 5,
            delay: Duration::from_secs(5),
            refresh: None,
            refresh_repeat: 1,
            interval: Duration::ZERO,
        }
    }
}

impl Schedule {
    /// Runs the schedule from now, calling `round` for each round, until dropped (the
    /// instance left MASTER) or, without a refresh, after the second burst.
    pub async fn run(self, mut round: impl FnMut()) {
        let start = tokio::time::Instant::now();
        burst(self.repeat, self.interval, &mut round).await;
        let mut second = (!self.delay.is_zero()).then(|| start + self.delay);
        let refresh = self.refresh.filter(|d| !d.is_zero());
        let mut next_refresh = refresh.map(|every| start + every);
        loop {
            let (at, is_second) = match (second, next_refresh) {
                (Some(s), Some(r)) if r < s => (r, false),
                (Some(s), _) => (s, true),
                (None, Some(r)) => (r, false),
                (None, None) => return,
            };
            tokio::time::sleep_until(at).await;
            if is_second {
                second = None;
                burst(self.repeat, self.interval, &mut round).await;
            } else {
                let every = refresh.expect("a refresh is due only if set");
                next_refresh = Some(at + every);
                burst(self.refresh_repeat, self.interval, &mut round).await;
            }
        }
    }
}

/// One round: every frame, each on its interface's socket.
pub type Frames = Arc<Vec<(Arc<FrameSocket>, Vec<u8>)>>;

/// The announcements of one instance while it is MASTER: the takeover schedule and,
/// when a lower-priority advert arrives, extra bursts (keepalived's
/// `garp_lower_prio_*`), each on a task of its own. [`Announcer::stop`] ends both.
#[derive(Default)]
pub struct Announcer {
    instance: Arc<str>,
    frames: Frames,
    takeover: Option<JoinHandle<()>>,
    lower_prio: Option<JoinHandle<()>>,
    /// A burst waiting for another node's claim on a VIP to stop (see [`Self::after`]).
    reclaim: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Starts announcing `frames` on `schedule` (becoming MASTER), replacing what ran.
    pub fn start(&mut self, instance: &str, frames: Frames, schedule: Schedule) {
        self.stop();
        self.instance = instance.into();
        self.frames = frames;
        self.takeover = Some(self.spawn(schedule));
    }

    /// A lower-priority advert arrived: a burst of `repeat` now and another `delay`
    /// after the last such advert (a newer one restarts that wait rather than adding
    /// bursts). Nothing while not started or with `repeat` zero.
    pub fn again(&mut self, repeat: u32, delay: Duration, interval: Duration) {
        if self.frames.is_empty() || repeat == 0 {
            return;
        }
        if let Some(old) = self.lower_prio.take() {
            old.abort();
        }
        self.lower_prio = Some(self.spawn(Schedule {
            repeat,
            delay,
            refresh: None,
            refresh_repeat: 0,
            interval,
        }));
    }

    /// Leaving MASTER (or shutting down): no more announcements.
    pub fn stop(&mut self) {
        for task in [
            self.takeover.take(),
            self.lower_prio.take(),
            self.reclaim.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        self.frames = Frames::default();
    }

    /// One burst of `repeat` rounds `delay` from now, replacing one still waiting:
    /// another node claimed a VIP, and once it stops (a split brain healing) the
    /// clients it took must come back. Each new claim postpones it, so two sides of a
    /// lasting split brain do not take the clients from each other in turn. Nothing
    /// while not started.
    pub fn after(&mut self, delay: Duration, repeat: u32, interval: Duration) {
        if self.frames.is_empty() || repeat == 0 {
            return;
        }
        if let Some(old) = self.reclaim.take() {
            old.abort();
        }
        let mut round = self.sender();
        self.reclaim = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            burst(repeat, interval, &mut round).await;
        }));
    }

    fn spawn(&self, schedule: Schedule) -> JoinHandle<()> {
        tokio::spawn(schedule.run(self.sender()))
    }

    /// One round: every frame out of its socket.
    fn sender(&self) -> impl FnMut() + Send + 'static {
        let (frames, instance) = (Arc::clone(&self.frames), Arc::clone(&self.instance));
        // Send errors repeat at the announcement rate (ENOBUFS): one line per period.
        let mut warnings = crate::log_limit::LogLimit::default();
        move || {
            for (socket, frame) in frames.iter() {
                if let Err(e) = socket.send(frame)
                    && let Some(suppressed) = warnings.allow(std::time::Instant::now())
                {
                    tracing::warn!(instance = %instance, suppressed, "cannot send announcement: {e}");
                }
            }
        }
    }
}

/// `n` rounds, `interval` apart.
async fn burst(n: u32, interval: Duration, round: &mut impl FnMut()) {
    for i in 0..n {
        if i > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        round();
    }
}

/// A gratuitous ARP: a broadcast request whose sender and target address are both the
/// VIP (the form keepalived sends; every stack updates its cache from it).
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: vip.octets(),
        target_mac: [0; 6],
        target_ipv4: vip.octets(),
    };
    let mut frame = Vec::with_capacity(42);
    PacketBuilder::ethernet2(mac, BROADCAST)
        .arp(arp.to_arp_packet())
        .write(&mut frame)
        .expect("writing to a Vec cannot fail");
    debug_assert_eq!(frame[12..14], EtherType::ARP.0.to_be_bytes());
    debug_assert_eq!(frame[14..16], ArpHardwareId::ETHERNET.0.to_be_bytes());
    frame
}

/// An unsolicited neighbour advertisement for `vip` from `link_local`, to all nodes,
/// hop limit 255, override flag set, with our MAC as target link-layer address.
pub fn unsolicited_na(mac: [u8; 6], link_local: Ipv6Addr, vip: Ipv6Addr) -> Vec<u8> {
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&vip.octets());
    body.extend_from_slice(&OPTION_TARGET_LL);
    body.extend_from_slice(&mac);
    let mut frame = Vec::with_capacity(86);
    PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(link_local.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(
            NeighborAdvertisementHeader {
                router: false,
                solicited: false,
                // The receiver replaces its cached MAC (RFC 4861 §4.4).
                r#override: true,
            },
        ))
        .write(&mut frame, &body)
        .expect("writing to a Vec cannot fail");
    frame
}

/// An `AF_PACKET` socket bound to one interface, for sending whole frames.
pub struct FrameSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl FrameSocket {
    pub fn open(ifindex: u32) -> io::Result<FrameSocket> {
        // SAFETY: plain socket(2); the fd is owned at once. Protocol 0: send only.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FrameSocket {
            // SAFETY: raw is a fresh, valid fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            ifindex,
        })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(self.fd.as_raw_fd(), self.ifindex, frame)
    }
}

/// Sends an Ethernet `frame` (its destination MAC first) out of `ifindex` on the
/// AF_PACKET socket `fd`.
pub(crate) fn send_frame(fd: std::os::fd::RawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_ll is valid; we fill the fields sendto needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and addr are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times (from the start) of each round of `schedule` within `window`.
    async fn rounds(schedule: Schedule, window: Duration) -> Vec<Duration> {
        let start = tokio::time::Instant::now();
        let times = std::cell::RefCell::new(Vec::new());
        let _ = tokio::time::timeout(
            window,
            schedule.run(|| times.borrow_mut().push(start.elapsed())),
        )
        .await;
        times.into_inner()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn keepalived_defaults_two_bursts_of_five() {
        let times = rounds(Schedule::default(), Duration::from_secs(60)).await;
        let mut expected = vec![ms(0); 5];
        expected.extend([ms(5000); 5]);
        assert_eq!(times, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_spaced_by_the_interval_and_refreshes_follow() {
        let schedule = Schedule {
            repeat: 3,
            delay: ms(1000),
            refresh: Some(ms(400)),
            refresh_repeat: 2,
            interval: ms(10),
        };
        let times = rounds(schedule, ms(1250)).await;
        assert_eq!(
            times,
            [
                ms(0),
                ms(10),
                ms(20),
                ms(400),
                ms(410),
                ms(800),
                ms(810),
                ms(1000),
                ms(1010),
                ms(1020),
                ms(1200),
                ms(1210),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_burst_with_zero_delay_and_nothing_with_zero_repeat() {
        let once = Schedule {
            delay: Duration::ZERO,
            ..Schedule::default()
        };
        assert_eq!(rounds(once, Duration::from_secs(60)).await, [ms(0); 5]);
        let none = Schedule {
            repeat: 0,
            ..Schedule::default()
        };
        assert!(rounds(none, Duration::from_secs(60)).await.is_empty());
    }
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn gratuitous_arp_announces_the_vip_from_our_mac() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 200));
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[0..6], &BROADCAST);
        assert_eq!(&frame[6..12], &MAC);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Arp(arp)) = packet.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), &MAC);
        assert_eq!(arp.sender_protocol_addr(), &[192, 0, 2, 200]);
        assert_eq!(arp.target_protocol_addr(), &[192, 0, 2, 200]);
    }

    #[test]
    fn unsolicited_na_has_hop_limit_255_override_and_a_valid_checksum() {
        let ll: Ipv6Addr = "fe80::11:22ff:fe33:4455".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8::200".parse().unwrap();
        let frame = unsolicited_na(MAC, ll, vip);
        assert_eq!(&frame[0..6], &ALL_NODES_MAC);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &packet.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().hop_limit(), 255);
        assert_eq!(ip.header().source_addr(), ll);
        assert_eq!(ip.header().destination_addr(), ALL_NODES);
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.slice()[0], 136, "neighbour advertisement");
        assert_eq!(
            icmp.slice()[4],
            0x20,
            "override flag, not solicited, not router"
        );
        let payload = icmp.payload();
        assert_eq!(&payload[..16], &vip.octets(), "target address");
        assert_eq!(&payload[16..18], &OPTION_TARGET_LL);
        assert_eq!(&payload[18..24], &MAC);
        let header = ip.header().to_header();
        assert_eq!(
            icmp.header().checksum,
            icmp.header()
                .icmp_type
                .calc_checksum(header.source, header.destination, payload)
                .unwrap()
        );
    }
}
