//! A thin typed wrapper over rtnetlink: interface lookup, route lookup and the
//! neighbour entries that give DR its next-hop MACs.
//!
//! Real servers' MACs come from *managed* neighbour entries (`NTF_EXT_MANAGED`,
//! kernel ≥ 5.16): the kernel resolves them and keeps re-validating them although no
//! packet to the real server ever crosses the kernel (XDP sends them all), so a MAC
//! never silently goes stale under us. Entries we created are removed on shutdown.
use std::{collections::HashMap, net::IpAddr};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::LinkAttribute,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage,
            NeighbourState,
        },
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("unknown interface `{0}`: no such network device in this namespace")]
    UnknownInterface(String),
    #[error("interface `{name}` has no Ethernet address; XDP DR needs an Ethernet device")]
    NoMac { name: String },
    #[error("no route to {addr}: {source}")]
    NoRoute {
        addr: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot build a route query for {addr}: {reason}")]
    RouteQuery { addr: IpAddr, reason: String },
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// An interface as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// Where the kernel would send a packet for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick (`src` of `ip route get`).
    pub prefsrc: Option<IpAddr>,
    /// An address of this host (`local` in `ip route get`): delivered, not forwarded.
    pub local: bool,
}

/// Whether an address change found the kernel already in the wanted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    AlreadyThere,
}

/// A neighbour entry's MAC and whether the kernel considers it usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

impl Neighbour {
    /// A MAC we may forward to: the kernel has (or had recently) confirmed it.
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        match self.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp => self.mac,
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection and spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Link, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(NetlinkError::UnknownInterface(name.to_string())),
            // ENODEV comes back as an error message, not an empty dump.
            Err(rtnetlink::Error::NetlinkError(_)) => {
                return Err(NetlinkError::UnknownInterface(name.to_string()));
            }
            Err(source) => {
                return Err(NetlinkError::Request {
                    what: format!("looking up interface `{name}`"),
                    source,
                });
            }
        };
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                Some([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
            }
            _ => None,
        });
        let mac = mac.ok_or_else(|| NetlinkError::NoMac {
            name: name.to_string(),
        })?;
        let mtu = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        Ok(Link {
            name: name.to_string(),
            index: msg.header.index,
            mac,
            mtu,
        })
    }

    /// The index of interface `name`, of any kind (`lo` has no Ethernet address, so
    /// [`Netlink::link_by_name`] does not take it).
    pub async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.index),
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
                Err(NetlinkError::UnknownInterface(name.to_string()))
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("looking up interface `{name}`"),
                source,
            }),
        }
    }

    /// `ip route get ADDR`.
    pub async fn route_to(&self, addr: IpAddr) -> Result<Route, NetlinkError> {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, prefix)
            .map_err(|e| NetlinkError::RouteQuery {
                addr,
                reason: e.to_string(),
            })?
            .build();
        let mut routes = self.handle.route().get(msg).execute();
        let route = routes
            .try_next()
            .await
            .map_err(|source| NetlinkError::NoRoute { addr, source })?
            .ok_or(NetlinkError::NoRoute {
                addr,
                source: rtnetlink::Error::RequestFailed,
            })?;
        let mut oif = 0;
        let mut gateway = None;
        let mut prefsrc = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = *i,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
                RouteAttribute::PrefSource(RouteAddress::Inet(a)) => prefsrc = Some(IpAddr::V4(*a)),
                RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => {
                    prefsrc = Some(IpAddr::V6(*a))
                }
                _ => {}
            }
        }
        Ok(Route {
            oif,
            gateway,
            prefsrc,
            local: route.header.kind == RouteType::Local,
        })
    }

    /// Adds `addr/prefix_len` to `ifindex` (a VIP): IPv6 without duplicate address
    /// detection, so it is usable at once (as keepalived does); an IPv4 label if given.
    /// Present already is not an error.
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
        scope: Option<u8>,
    ) -> Result<Change, NetlinkError> {
        let req = self.address_request(ifindex, addr, prefix_len, label, scope);
        match req.execute().await {
            Ok(()) => Ok(Change::Done),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                Ok(Change::AlreadyThere)
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("adding {addr}/{prefix_len} to ifindex {ifindex}"),
                source,
            }),
        }
    }

    /// The request adding a VIP: IPv6 without duplicate address detection (usable at
    /// once, as keepalived does), the IPv4 label and the scope if given.
    fn address_request(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
        scope: Option<u8>,
    ) -> rtnetlink::AddressAddRequest {
        let mut req = self.handle.address().add(ifindex, addr, prefix_len);
        let msg = req.message_mut();
        if let Some(scope) = scope {
            msg.header.scope = scope.into();
        }
        if addr.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if let (Some(label), IpAddr::V4(_)) = (label, addr) {
            msg.attributes
                .push(AddressAttribute::Label(label.to_string()));
        }
        req
    }

    /// Adds `addr` (as [`Netlink::add_address`] does) with a lifetime of `secs`, or
    /// renews the lifetime if it is there: the kernel removes the address by itself
    /// unless it is renewed in time, so a VIP does not outlive a daemon killed with
    /// `kill -9`.
    pub async fn lease_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
        scope: Option<u8>,
        secs: u32,
    ) -> Result<(), NetlinkError> {
        let mut req = self
            .address_request(ifindex, addr, prefix_len, label, scope)
            .replace();
        let mut lifetime = rtnetlink::packet_route::address::CacheInfo::default();
        lifetime.ifa_preferred = secs;
        lifetime.ifa_valid = secs;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        req.execute().await.map_err(|source| NetlinkError::Request {
            what: format!("leasing {addr}/{prefix_len} on ifindex {ifindex} for {secs} s"),
            source,
        })
    }

    /// The kernel's entries of `addr` on `ifindex` (none when it is not there).
    async fn find_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(addr)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("looking up {addr} on ifindex {ifindex}"),
                source,
            })
    }

    /// `addr` is on `ifindex` with a finite lifetime: a VIP [`Netlink::lease_address`]
    /// put there and a live daemon renewed within the lease (a static address, with no
    /// lifetime, is not one).
    pub async fn is_leased(&self, ifindex: u32, addr: IpAddr) -> Result<bool, NetlinkError> {
        let found = self.find_address(ifindex, addr).await?;
        Ok(found.iter().any(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::CacheInfo(c) if c.ifa_valid != u32::MAX && c.ifa_valid > 0)
            })
        }))
    }

    /// Removes `addr` from `ifindex`; absent already is not an error.
    pub async fn remove_address(&self, ifindex: u32, addr: IpAddr) -> Result<Change, NetlinkError> {
        let found = self.find_address(ifindex, addr).await?;
        let Some(msg) = found.into_iter().next() else {
            return Ok(Change::AlreadyThere);
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(Change::Done),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENOENT =>
            {
                Ok(Change::AlreadyThere)
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("removing {addr} from ifindex {ifindex}"),
                source,
            }),
        }
    }

    /// The interface's addresses of global scope, with their prefix lengths.
    pub async fn global_addresses(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        Ok(self
            .addresses(ifindex)
            .await?
            .iter()
            .filter(|m| m.header.scope == rtnetlink::packet_route::address::AddressScope::Universe)
            .flat_map(|m| {
                let prefix = m.header.prefix_len;
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(addr) => Some((*addr, prefix)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Every address message of the interface.
    async fn addresses(
        &self,
        ifindex: u32,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("listing the addresses of ifindex {ifindex}"),
                source,
            })
    }

    /// The interface's IPv6 link-local address (the source of VRRPv3 adverts and NAs).
    pub async fn link_local_v6(
        &self,
        ifindex: u32,
    ) -> Result<Option<std::net::Ipv6Addr>, NetlinkError> {
        Ok(self
            .addresses(ifindex)
            .await?
            .iter()
            .flat_map(|m| &m.attributes)
            .find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V6(v6))
                    if v6.segments()[0] & 0xffc0 == 0xfe80 =>
                {
                    Some(*v6)
                }
                _ => None,
            }))
    }

    /// Creates (or converts an existing entry into) a managed neighbour entry so the
    /// kernel resolves `addr` on `ifindex` and keeps it fresh.
    pub async fn ensure_managed_neighbour(
        &self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .replace();
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        req.execute().await.map_err(|source| NetlinkError::Request {
            what: format!("adding a managed neighbour entry for {addr} (ifindex {ifindex})"),
            source,
        })
    }

    /// The whole neighbour table, keyed by (ifindex, address). One dump serves every
    /// real server, and the dump is always read to its end.
    pub async fn neighbours(&self) -> Result<HashMap<(u32, IpAddr), Neighbour>, NetlinkError> {
        let mut table = HashMap::new();
        for msg in self.neighbour_messages().await? {
            let Some(addr) = destination(&msg) else {
                continue;
            };
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    Some([b[0], b[1], b[2], b[3], b[4], b[5]])
                }
                _ => None,
            });
            table.insert(
                (msg.header.ifindex, addr),
                Neighbour {
                    mac,
                    state: msg.header.state,
                },
            );
        }
        Ok(table)
    }

    /// Deletes the neighbour entry for `addr` on `ifindex` (missing is fine).
    pub async fn remove_neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let Some(msg) = self.neighbour_message(ifindex, addr).await? else {
            return Ok(());
        };
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("removing the neighbour entry for {addr} (ifindex {ifindex})"),
                source,
            }),
        }
    }

    async fn neighbour_message(
        &self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<NeighbourMessage>, NetlinkError> {
        Ok(self
            .neighbour_messages()
            .await?
            .into_iter()
            .find(|m| m.header.ifindex == ifindex && destination(m) == Some(addr)))
    }

    async fn neighbour_messages(&self) -> Result<Vec<NeighbourMessage>, NetlinkError> {
        self.handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "dumping the neighbour table".to_string(),
                source,
            })
    }
}

fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}
