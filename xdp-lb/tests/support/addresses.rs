//! The hosts of the TUN fixtures (documentation ranges): a client, the VIP, the LB's
//! own address towards the real server (the outer source) and a real server behind a
//! gateway, in each family.

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x33];

pub mod v4 {
    pub const CLIENT: [u8; 4] = [198, 51, 100, 7];
    pub const VIP: [u8; 4] = [192, 0, 2, 100];
    pub const LB_ADDR: [u8; 4] = [192, 0, 2, 2];
    pub const SERVER: [u8; 4] = [203, 0, 113, 11];
}

/// 2001:db8:1::7, 2001:db8::100, 2001:db8::2, 2001:db8:2::11.
pub mod v6 {
    pub const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    pub const VIP: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    pub const LB_ADDR: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const SERVER: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ];
}
