//! Kraken spot, the first live venue (issue 18), built from the bottom: the
//! request signature (`sign`) and nonces that never repeat (`nonce`). The
//! REST client, reconciliation and the `Venue` implementation follow.

pub mod nonce;
pub mod sign;

pub use nonce::Nonces;
pub use sign::{BadSecret, SigningKey};
