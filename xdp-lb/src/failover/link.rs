//! Link state of the interfaces the instances run on, from an rtnetlink subscription
//! to link changes (`RTMGRP_LINK`): an instance whose interface is down (not `UP`, or no
//! carrier, keepalived's test) goes to FAULT, and back to BACKUP when it returns.
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
use tokio::{sync::watch, task::JoinHandle};

/// Whether an interface can carry adverts: administratively up and with carrier.
fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up) && link.header.flags.contains(LinkFlags::Running)
}

/// Watches `ifindexes`: one receiver per interface (`true` while it is up), and the
/// task reading the notifications (abort it when done).
pub(crate) async fn monitor(
    ifindexes: &[u32],
) -> std::io::Result<(HashMap<u32, watch::Receiver<bool>>, JoinHandle<()>)> {
    let (mut conn, handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let driver = tokio::spawn(conn);

    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for &index in ifindexes {
        if senders.contains_key(&index) {
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
        let (tx, rx) = watch::channel(up);
        senders.insert(index, tx);
        receivers.insert(index, rx);
    }

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
            if let Some(tx) = senders.get(&index) {
                tx.send_if_modified(|old| std::mem::replace(old, up) != up);
            }
        }
    });
    Ok((receivers, task))
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
