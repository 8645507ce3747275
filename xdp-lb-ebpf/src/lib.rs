//! Empty library target: `xdp-lb` names this crate as a build-dependency so cargo
//! rebuilds the daemon (and re-embeds the object) whenever the program changes.
#![no_std]
