//! Orders as the kernel decides them and venues report on them.

use std::sync::Arc;

use keel_model::{Signal, Size};

/// The id an order is known by at the venue, chosen by us so a resent
/// order is recognised (and never placed twice).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientOrderId(pub String);

impl ClientOrderId {
    /// `{time_ms}-{seq}`: a backtest's id for the `seq`th signal of the
    /// close at `time_ms`. Written digit by digit: one is made per signal,
    /// and `format!` took about 1.5% of a backtest.
    pub fn at(time_ms: i64, seq: usize) -> ClientOrderId {
        // Written from the end: the sequence, '-', the time, its sign.
        const LONGEST: usize = 42;
        let mut text = [0u8; LONGEST];
        let mut at = digits_before(&mut text, LONGEST, seq as u64);
        at -= 1;
        text[at] = b'-';
        at = digits_before(&mut text, at, time_ms.unsigned_abs());
        if time_ms < 0 {
            at -= 1;
            text[at] = b'-';
        }
        let text = std::str::from_utf8(&text[at..]).unwrap_or_default();
        ClientOrderId(text.to_owned())
    }
}

/// Writes `n` in decimal to end just before `end`, two digits at a time;
/// where it begins.
fn digits_before(out: &mut [u8], mut end: usize, mut n: u64) -> usize {
    while n >= 100 {
        let pair = 2 * (n % 100) as usize;
        end -= 2;
        out[end..end + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        n /= 100;
    }
    if n >= 10 {
        let pair = 2 * n as usize;
        end -= 2;
        out[end..end + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        end -= 1;
        out[end] = b'0' + n as u8;
    }
    end
}

/// `00`, `01`, … `99`.
const PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

impl std::fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An order intent: a market order for one signal of one book.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: ClientOrderId,
    /// Index of the symbol in the run's [`super::Market`].
    pub sym: usize,
    /// What the strategy asked for (symbol, tag, action, size, exits);
    /// shared, so the copies of an order (the book's, the venue's) cost no
    /// strings.
    pub signal: Arc<Signal>,
    /// Buying (opening long, closing short) or selling.
    pub buy: bool,
    /// The book's equity when the order was made: what a fraction of
    /// equity means.
    pub equity: f64,
    /// For closes and reductions: at most this much (what was held).
    pub max_quantity: Option<f64>,
    /// The last close when it was decided, and how far the fill may stray
    /// from it (percent; `None`: any price).
    pub reference_price: f64,
    pub max_deviation_pct: Option<f64>,
    /// A stop order: it rests at the venue and trades at market once the
    /// price crosses this (a live book's protective stop-loss, which works
    /// while the host is down). `None`: a market order, now.
    pub trigger: Option<f64>,
}

impl Order {
    pub fn size(&self) -> Size {
        self.signal.size
    }
}

/// What a venue reports on one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub id: ClientOrderId,
    /// When it happened (a fill: the open time of the bar it filled at).
    pub time_ms: i64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Filled whole, at exchange precision.
    Filled {
        price: f64,
        quantity: f64,
        fee: f64,
        /// The volume cap cut it.
        capped: bool,
    },
    Rejected(String),
    Cancelled(String),
    /// One execution of an order that may trade in several (a live
    /// venue's trade, named by the venue's id for it): booked as it comes;
    /// the order stays in flight.
    Part {
        price: f64,
        quantity: f64,
        fee: f64,
        trade: String,
    },
    /// The venue is done with an order whose executions came as `Part`s
    /// (every one of them reported before this): filled, cancelled or
    /// expired, as the venue says.
    Ended(String),
}

/// What became of one signal at the risk checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Accepted; the order to send (none for a close of nothing held).
    Accepted(Option<Order>),
    Rejected(String),
}

/// A signal refused before it became a trade.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub time_ms: i64,
    pub signal: Signal,
    pub reason: String,
    pub by: RejectedBy,
}

/// Which check refused a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedBy {
    /// The checks of whatever runs the strategy (a sandbox's: bound symbol,
    /// finite positive size, …), before any risk check.
    Sandbox,
    /// The trading state or the pre-trade risk checks (`risk::check`).
    Risk,
    /// At fill time: no fillable quantity, a price outside the collar, or
    /// no later bar to fill at.
    Fill,
}

#[cfg(test)]
mod tests {
    use super::ClientOrderId;

    #[test]
    fn ids_read_as_format_writes_them() {
        let times = [
            0,
            7,
            10,
            99,
            100,
            -1,
            -60_000,
            1_704_067_200_000,
            i64::MAX,
            i64::MIN,
        ];
        for time_ms in times {
            for seq in [0, 1, 9, 10, 11, 99, 100, 101, 999, 12_345, usize::MAX] {
                assert_eq!(
                    ClientOrderId::at(time_ms, seq).0,
                    format!("{time_ms}-{seq}")
                );
            }
        }
    }
}
