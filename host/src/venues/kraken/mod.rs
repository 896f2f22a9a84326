//! Kraken spot, the first live venue (issue 18), built from the bottom:
//! the request signature (`sign`), nonces that never repeat (`nonce`), the
//! rate limits modelled so Keel waits instead of being locked out
//! (`limits`), replies and what their errors mean for an order (`reply`),
//! and the pairs' decimals and minimums that round every order (`pairs`).
//! `client` signs and sends REST calls; `fake` is a Kraken on loopback that
//! checks signatures and nonces as Kraken does and can be scripted to fail.
//! `venue` is Kraken as the kernel's `Venue`; `history` is its public
//! trade history, which `keel data download` makes bars of.

pub mod client;
pub mod fake;
pub mod history;
pub mod limits;
pub mod nonce;
pub mod pairs;
pub mod reply;
pub mod sign;
pub mod stream;
pub mod venue;

pub use nonce::Nonces;
pub use sign::{BadSecret, SigningKey};
pub use venue::{KrakenVenue, VenueHealth};
