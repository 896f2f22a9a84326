//! Kraken spot, the first live venue (issue 18), built from the bottom:
//! the request signature (`sign`), nonces that never repeat (`nonce`), the
//! rate limits modelled so Keel waits instead of being locked out
//! (`limits`), replies and what their errors mean for an order (`reply`),
//! and the pairs' decimals and minimums that round every order (`pairs`).
//! The REST client, reconciliation and the `Venue` implementation follow.

pub mod limits;
pub mod nonce;
pub mod pairs;
pub mod reply;
pub mod sign;

pub use nonce::Nonces;
pub use sign::{BadSecret, SigningKey};
