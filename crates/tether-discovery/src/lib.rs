//! LAN discovery for Tether (R2): members of one account find each other on
//! the local network by rotating, unlinkable mDNS tokens.
//!
//! A device advertises `_tether._udp.local.` under an instance name that is a
//! [`DiscoveryToken`]: a random nonce and a truncated HMAC of it under the
//! account's discovery key. The TXT record holds only the protocol version.
//! Members holding the key resolve the token to "one of ours" and connect;
//! everyone else sees 16 random bytes that change every
//! [`TOKEN_ROTATION`] and on every network change. No MAC address, device
//! id, account id, VIN or device name is ever published: R2 keeps those
//! identifiers local. Discovery only says where to connect; the session
//! layer then makes the trusted, authenticated connection R2 asks for.
//!
//! The crate has two layers:
//! - [`token`] is the protocol core. It is a fully deterministic
//!   implementation that contains no networking code, reads no clock and
//!   draws no randomness: nonces and instants come from the caller.
//! - [`mdns`] is a thin Tokio driver over `mdns-sd` ([`Advertiser`],
//!   [`Browser`]). It is the only code that reads the clock, draws nonces or
//!   touches sockets. [`Interfaces::LoopbackOnly`] (the default) keeps all
//!   traffic on `127.0.0.1`.
//!
//! Discovery keys come in as raw `[u8; 32]`; the caller derives them from the
//! account group key. This crate does not know about identities.
//!
//! # Usage
//! ```no_run
//! use std::time::Duration;
//! use tether_discovery::{Advertiser, AdvertiserConfig, Browser, Interfaces};
//!
//! # async fn demo() -> Result<(), tether_discovery::DiscoveryError> {
//! let discovery_key = [7u8; 32]; // derived by the caller from the group key
//!
//! // The head unit advertises its session port.
//! let advertiser = Advertiser::start(AdvertiserConfig::new(discovery_key, 4433))?;
//!
//! // The phone looks for any device of its account.
//! let mut browser = Browser::start(vec![discovery_key], Interfaces::LoopbackOnly)?;
//! let car = browser.find_first(Duration::from_secs(10)).await?;
//! assert_eq!(car.port, 4433);
//! println!("connect to {:?}:{}", car.addresses, car.port);
//!
//! // On a network change, and every 15 minutes by itself:
//! let _new_token = advertiser.rotate_now().await?;
//!
//! browser.shutdown().await?;
//! advertiser.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The sans-IO core on its own:
//! ```
//! use tether_discovery::token::{DiscoveryToken, TokenResolver};
//!
//! let ours = [1u8; 32];
//! let theirs = [2u8; 32];
//! let token = DiscoveryToken::mint(&ours, [0x5a; 8]); // nonce from the caller's RNG
//! let heard = DiscoveryToken::parse(token.label()).unwrap();
//! assert_eq!(TokenResolver::new(&[theirs, ours]).resolve(&heard), Some(1));
//! assert_eq!(TokenResolver::new(&[theirs]).resolve(&heard), None);
//! ```

mod error;
pub mod mdns;
pub mod token;

pub use error::DiscoveryError;
pub use mdns::{
    Advertiser, AdvertiserConfig, Browser, DiscoveryEvent, Interfaces, Resolved, SERVICE_TYPE,
};
pub use token::{
    DiscoveryToken, PROTOCOL_VERSION, Rotation, RotationOutput, TOKEN_ROTATION, TokenError,
    TokenResolver, TxtError,
};
