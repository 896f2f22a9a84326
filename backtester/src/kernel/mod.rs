//! The trading kernel: what happens at a bar close, decided the same way for
//! a backtest, a paper run and a live run. It decides; it does no IO.
//!
//! At each close time, for each book:
//!
//! 1. the venue's reports on the book's orders are settled ([`Book::settle`]):
//!    fills at the bar's open, rejections;
//! 2. stop-losses and take-profits are taken inside the bar ([`Book::exits`]);
//! 3. positions are marked at the close ([`Book::mark`]);
//! 4. the driver shows the strategy the closed bars and its portfolio;
//! 5. its signals pass the trading state and the risk checks and become
//!    order intents ([`Book::decide`]), which the driver journals and then
//!    sends to its [`Venue`].
//!
//! Around it, only the venue and the journal differ: a backtest uses a
//! [`SimulatedVenue`] in memory and journals nothing; a paper run a durable
//! paper venue and a journal that writes each bar in one SQLite
//! transaction; a live run an exchange.

mod book;
mod market;
mod order;
mod state;
mod venue;

pub use crate::fills::ExitReason;
pub use book::{Book, Booked, FillSource, Open, Trade};
pub use market::{Market, PLACES, exact};
pub use order::{ClientOrderId, Decision, Execution, Order, Outcome, RejectedBy, Rejection};
pub use state::{TradingState, collar, halt_reason, pre_trade};
pub use venue::{Balances, OrderState, SimulatedVenue, Venue, execute};
