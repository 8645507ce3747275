//! Link state of the interfaces the instances run on and track, from an rtnetlink
//! subscription to link changes (`RTMGRP_LINK`). An interface counts as down when it is
//! not `UP` or has no carrier (keepalived's test): an instance whose own interface is
//! down goes to FAULT, and a tracked interface applies its weight.
//!
//! A connection of its own rather than [`crate::netlink::Netlink`]'s: multicast
//! notifications arrive on the socket that subscribed, and mixing them into the request
//! connection would hand them to nobody.

use std::collections::HashMap;

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkFlags, LinkMessage},
    },
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::{sync::mpsc, task::JoinHandle};

/// Whether an interface can carry adverts: administratively up and with carrier.
fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up) && link.header.flags.contains(LinkFlags::Running)
}

/// What [`monitor`] returns: each interface's state now (`true`: up), the changes from
/// then on as `(ifindex, up)`, and the task reading the notifications (abort it when
/// done).
pub(crate) type Monitor = (
    HashMap<u32, bool>,
    mpsc::UnboundedReceiver<(u32, bool)>,
    JoinHandle<()>,
);

/// Watches `ifindexes`.
pub(crate) async fn monitor(ifindexes: &[u32]) -> std::io::Result<Monitor> {
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let driver = tokio::spawn(conn);

    let mut states = HashMap::new();
    for &index in ifindexes {
        if states.contains_key(&index) {
            continue;
        }
        // Subscribed first, so a change between this query and the loop is not lost.
        let up = match handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
        {
            Ok(Some(link)) => is_up(&link),
            Ok(None) => false,
            Err(e) => {
                driver.abort();
                return Err(std::io::Error::other(format!(
                    "reading the state of ifindex {index}: {e}"
                )));
            }
        };
        states.insert(index, up);
    }
    let (tx, changes) = mpsc::unbounded_channel();
    let mut last = states.clone();

    let task = tokio::spawn(async move {
        // Aborting this task stops the connection too.
        let _driver = AbortOnDrop(driver);
        while let Some((msg, _)) = messages.next().await {
            let (index, up) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    (link.header.index, is_up(&link))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    (link.header.index, false)
                }
                _ => continue,
            };
            if let Some(old) = last.get_mut(&index)
                && std::mem::replace(old, up) != up
                && tx.send((index, up)).is_err()
            {
                return;
            }
        }
    });
    Ok((states, changes, task))
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
