//! Packet capture inside a namespace: an `AF_PACKET` socket bound to one interface,
//! opened inside the namespace (the socket stays bound to it) and read from a thread
//! here. Tests use it to see exactly what went on the wire, e.g. IP-in-IP frames that
//! the real server's kernel cannot decapsulate.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

const ETH_P_ALL: u16 = 0x0003;

/// Frames received on one interface since [`Capture::start`]; stops on drop.
pub struct Capture {
    frames: mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
    what: String,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns`; frames sent after this returns are seen.
    pub fn start(ns: &Netns, ifname: &str) -> Result<Capture> {
        let what = format!("{ifname} in netns {}", ns.name());
        let name = ifname.to_owned();
        let fd = ns.run(move || open(&name))??;
        let (tx, frames) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for its length; fd is an open socket.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && tx.send(buf[..n as usize].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Capture {
            frames,
            stop,
            reader: Some(reader),
            what,
        })
    }

    /// The first frame (from now on) for which `matches` is true.
    pub fn next_matching(
        &self,
        timeout: Duration,
        matches: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(frame) if matches(&frame) => return Ok(frame),
                Ok(_) => {}
                Err(_) => bail!("no matching frame on {} within {timeout:?}", self.what),
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A packet socket for all protocols, bound to `ifname`, with a short receive
/// timeout so the reader notices when to stop.
fn open(ifname: &str) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(ifname).context("interface name with NUL")?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned right away.
    unsafe {
        let index = libc::if_nametoindex(cname.as_ptr());
        if index == 0 {
            bail!("no interface {ifname}");
        }
        let raw = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ALL.to_be()),
        );
        if raw < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = index as i32;
        let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) < 0 {
            bail!("bind to {ifname}: {}", std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let tv_len = size_of::<libc::timeval>() as libc::socklen_t;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            tv_len,
        );
        Ok(fd)
    }
}
