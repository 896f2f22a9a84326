//! The allowed range of every number a user gives `keel`, in one place.
//! Command-line options check against these as clap parses them
//! (`Bounds::parser`), configuration keys as serde reads them
//! (`Bounds::deserialize`), so a bad value is refused with one line naming
//! it, its value and its range before anything runs.

use keel_model::Bounds;
use keel_model::candles::{MAX_CANDLE_VALUE, MIN_CANDLE_PRICE};

/// `candidates.toml`'s own ranges live beside it.
pub use keel_candidates::config::{
    GATE_FOLDS, PROFIT_FACTOR, RETURN_PCT, SHADOW_SLOTS, SHARPE, TRADES,
};
/// Fees and slippage in basis points of notional, and percentages of
/// equity: shared with `candidates.toml`, so defined in `keel-model`.
pub use keel_model::bounds::{BPS, PERCENT};
/// A book's starting cash: positive, and far inside what the ledger's
/// decimals hold.
pub const CASH: Bounds<f64> = Bounds::above(0.0, 1e12);
/// The lot quantities are rounded down to.
pub const LOT_SIZE: Bounds<f64> = Bounds::above(0.0, 1e6);
/// The share of a bar's volume one fill may take.
pub const VOLUME_SHARE: Bounds<f64> = Bounds::above(0.0, 1.0);
/// `--walk-forward` folds (each window also needs enough bars:
/// `backtest::MIN_BARS_PER_WINDOW`).
pub const WALK_FORWARD_FOLDS: Bounds<usize> = Bounds::new(1, 100);
/// Replay speed, feed seconds per second (`max`: no waiting at all).
pub const SPEED: Bounds<f64> = Bounds::new(0.01, 1e9);
/// Most symbols one run's feeds may deliver.
pub const RUN_SYMBOLS: usize = 256;
/// Bars of the built-in sample feed.
pub const SAMPLE_BARS: Bounds<usize> = Bounds::new(2, 100_000_000);
/// `--bars`: a paper run stops after this many.
pub const MAX_BARS: Bounds<u64> = Bounds::new(1, 1_000_000_000_000);
/// The wall-clock time one strategy call may take in a paper or live run,
/// milliseconds.
pub const CALL_DEADLINE_MS: Bounds<u64> = Bounds::new(1, 60_000);
/// How often a live feed is polled, milliseconds.
pub const POLL_MS: Bounds<u64> = Bounds::new(10, 3_600_000);
/// `keel dev --max-reloads`.
pub const RELOADS: Bounds<usize> = Bounds::new(1, 1_000_000);
/// The compile cache's disk budget, MB (0 keeps only the code just written).
pub const CACHE_MAX_MB: Bounds<u64> = Bounds::new(0, 1 << 20);
/// `keel data synth`: bars, starting price, per-bar volatility.
pub const SYNTH_BARS: Bounds<usize> = Bounds::new(1, 100_000_000);
pub const SYNTH_PRICE: Bounds<f64> = Bounds::new(MIN_CANDLE_PRICE, MAX_CANDLE_VALUE);
pub const SYNTH_SIGMA: Bounds<f64> = Bounds::new(0.0, 0.5);
/// `keel data download`: requests a second, and bars a batch commits.
pub const DOWNLOAD_RATE: Bounds<f64> = Bounds::above(0.0, 1000.0);
pub const DOWNLOAD_BATCH: Bounds<usize> = Bounds::new(1, 1_000_000);

/// Open positions a book may hold.
pub const OPEN_POSITIONS: Bounds<u32> = Bounds::new(1, 10_000);
/// The smallest order, quote currency.
pub const MIN_ORDER_QUOTE: Bounds<f64> = Bounds::new(0.0, 1e12);
