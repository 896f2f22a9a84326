//! The evolution's own gates, cheapest first, run on a component before it
//! is submitted as a candidate: the look-ahead probe, diversity by trade
//! list, the in-sample backtest, walk-forward, stress, the deflated Sharpe
//! ratio over every trial ever run on the data, the probability of backtest
//! overfitting over the parameter grid, and the locked holdout. Each is a
//! function of backtests run here and figures from `keel_candidates::overfit`.

use sha2::{Digest, Sha256};

use keel_backtester::engine::{BacktestConfig, BacktestResult, run_feeds};
use keel_backtester::fills::FillModel;
use keel_candidates::overfit;
use keel_model::replay::Feed;
use keel_model::{Fill, Params, RunningStrategy, Signal, Tick};

use crate::backtest::Dataset;
use crate::sandbox::{Binding, LoadedStrategy, Sandbox};

/// The night's data cut in time: the in-sample part every trial and model
/// may see, and the locked holdout after it.
#[derive(Debug, Clone)]
pub struct Split {
    pub in_sample: Vec<Dataset>,
    pub holdout: Vec<Dataset>,
    /// Names the in-sample data in the trial registry.
    pub digest: String,
    pub holdout_digest: String,
    /// Where the holdout window begins: no figure computed on a bar at or
    /// after it may reach a model.
    pub holdout_from_ms: i64,
}

/// Cuts `data` at the time `holdout_pct` percent before the end of its
/// span; each part must keep bars of every symbol.
pub fn split(data: Vec<Dataset>, holdout_pct: f64) -> anyhow::Result<Split> {
    let first = data
        .iter()
        .filter_map(|d| d.series.candles.first())
        .map(|c| c.time_ms)
        .min();
    let last = data
        .iter()
        .filter_map(|d| d.series.candles.last())
        .map(|c| c.time_ms)
        .max();
    let (Some(first), Some(last)) = (first, last) else {
        anyhow::bail!("the evolution's data is empty");
    };
    let cut = first + ((last - first) as f64 * (1.0 - holdout_pct / 100.0)) as i64;
    let in_sample = (data.iter())
        .map(|d| part(d, &|t| t < cut, "in-sample part"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let holdout = (data.iter())
        .map(|d| part(d, &|t| t >= cut, "holdout"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let digest = |parts: &[Dataset]| {
        let mut h = Sha256::new();
        for d in parts {
            h.update(d.series.symbol.as_bytes());
            h.update(registry_hash(&d.series.candles).as_bytes());
        }
        hex::encode(h.finalize())
    };
    Ok(Split {
        digest: digest(&in_sample),
        holdout_digest: digest(&holdout),
        in_sample,
        holdout,
        holdout_from_ms: cut,
    })
}

/// `data` without its bars at or after `cut_ms` (a holdout window's
/// start); each data set must keep bars.
pub fn before(data: &[Dataset], cut_ms: i64) -> anyhow::Result<Vec<Dataset>> {
    data.iter()
        .map(|d| part(d, &|t| t < cut_ms, "part before the locked holdout"))
        .collect()
}

/// The bars of `d` whose time `keep` keeps, named `name` in an error.
fn part(d: &Dataset, keep: &dyn Fn(i64) -> bool, name: &str) -> anyhow::Result<Dataset> {
    let candles: Vec<_> = (d.series.candles.iter())
        .filter(|c| keep(c.time_ms))
        .copied()
        .collect();
    if candles.len() < 2 {
        anyhow::bail!(
            "{}: too few bars for its {name} ({} of {})",
            d.reference.source,
            candles.len(),
            d.series.candles.len()
        );
    }
    let reference = keel_backtester::report::DataRef::of(
        &d.reference.symbol,
        d.reference.source.clone(),
        &candles,
    );
    let mut series = d.series.clone();
    series.candles = candles;
    Ok(Dataset { series, reference })
}

/// The trial registry's name for a part's bars: SHA-256 of each bar's time
/// and values, little-endian, as reports named data before they moved to
/// BLAKE3. Kept so that every trial already registered still counts against
/// its data set: a new hash would part them and under-count the trials the
/// deflated Sharpe ratio deflates by.
fn registry_hash(candles: &[keel_model::Candle]) -> String {
    let mut h = Sha256::new();
    for c in candles {
        h.update(c.time_ms.to_le_bytes());
        for v in [c.open, c.high, c.low, c.close, c.volume] {
            h.update(v.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// How the gates' backtests fill: the candidate gate's fees and slippage.
pub fn config(fills: FillModel, record_signals: bool) -> BacktestConfig {
    BacktestConfig {
        fills,
        record_signals,
        record_fills: false,
        ..BacktestConfig::default()
    }
}

/// Backtests `strategy` with `params` on `data`; `late` gives each signal
/// one close after the strategy did.
pub fn run(
    sandbox: &Sandbox,
    strategy: &LoadedStrategy,
    params: &Params,
    data: &[Dataset],
    config: &BacktestConfig,
    late: bool,
) -> anyhow::Result<BacktestResult> {
    let feeds: Vec<Feed<'_>> = data.iter().map(|d| d.series.feed()).collect();
    let binding = Binding {
        symbols: data.iter().map(|d| d.series.symbol.clone()).collect(),
        params: params.clone(),
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(strategy, binding)?;
    Ok(if late {
        let mut late = Late {
            inner: &mut instance,
            held: Vec::new(),
        };
        run_feeds(&mut late, feeds, config)
    } else {
        run_feeds(&mut instance, feeds, config)
    })
}

/// A strategy whose signals arrive one close late.
struct Late<'a, S: RunningStrategy> {
    inner: &'a mut S,
    held: Vec<Signal>,
}

impl<S: RunningStrategy> RunningStrategy for Late<'_, S> {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let now = self.inner.on_bar(tick)?;
        Ok(std::mem::replace(&mut self.held, now))
    }

    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        self.inner.on_fill(fill)
    }
}

/// The equity curve's returns, point to point.
pub fn returns(result: &BacktestResult) -> Vec<f64> {
    let mut last = result.cash_start;
    let mut out = Vec::with_capacity(result.equity.len());
    for p in &result.equity {
        if last > 0.0 {
            out.push(p.equity / last - 1.0);
        }
        last = p.equity;
    }
    out
}

/// A run's trade list, hashed: two strategies with the same hash trade
/// the same.
pub fn trades_hash(result: &BacktestResult) -> String {
    let mut h = Sha256::new();
    for t in &result.trades {
        h.update(t.symbol.as_bytes());
        h.update(t.tag.as_bytes());
        h.update([t.side as u8]);
        h.update(t.time_entry_ms.to_le_bytes());
        h.update(t.time_exit_ms.to_le_bytes());
        for v in [t.quantity, t.price_entry, t.price_exit] {
            h.update(v.to_bits().to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// One gate's verdict and figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub gate: &'static str,
    pub passed: bool,
    pub detail: String,
    pub figures: serde_json::Value,
}

impl Verdict {
    fn new(
        gate: &'static str,
        passed: bool,
        detail: String,
        figures: serde_json::Value,
    ) -> Verdict {
        Verdict {
            gate,
            passed,
            detail,
            figures,
        }
    }
}

/// The look-ahead probe: the signals given at each of `probes` closes
/// with the data cut just after it must be those given there with all the
/// data. A strategy that knows later bars (or is not deterministic) fails.
pub fn lookahead(
    sandbox: &Sandbox,
    strategy: &LoadedStrategy,
    params: &Params,
    data: &[Dataset],
    fills: FillModel,
    probes: usize,
) -> anyhow::Result<Verdict> {
    let full = run(sandbox, strategy, params, data, &config(fills, true), false)?;
    let mut times: Vec<i64> = full.signals.iter().map(|(t, _)| *t).collect();
    times.dedup();
    // Closes with signals, spread over the run; without signals, nothing to
    // compare (the backtest gate judges a strategy that never trades).
    let picks: Vec<i64> = (0..probes.min(times.len()))
        .map(|k| times[(k + 1) * times.len() / (probes.min(times.len()) + 1)])
        .collect();
    for &close in &picks {
        let cut: Vec<Dataset> = data
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.series
                    .candles
                    .retain(|c| c.time_ms + d.series.bar_ms <= close);
                d
            })
            .filter(|d| !d.series.candles.is_empty())
            .collect();
        let part = run(sandbox, strategy, params, &cut, &config(fills, true), false)?;
        let at = |r: &BacktestResult| -> Vec<Signal> {
            (r.signals.iter())
                .filter(|(t, _)| *t == close)
                .map(|(_, s)| s.clone())
                .collect()
        };
        if at(&full) != at(&part) {
            return Ok(Verdict::new(
                "lookahead",
                false,
                format!(
                    "its signals at {} differ when the later bars are removed: it uses data it cannot have",
                    keel_model::candles::format_time(close)
                ),
                serde_json::json!({ "probes": picks.len(), "failed_at_ms": close }),
            ));
        }
    }
    Ok(Verdict::new(
        "lookahead",
        true,
        format!(
            "{} probes, the same signals with the later bars removed",
            picks.len()
        ),
        serde_json::json!({ "probes": picks.len() }),
    ))
}

/// Deflated Sharpe ratio of `returns` against the trial registry's `n`
/// trials with Sharpe variance `variance`.
pub fn deflated(returns: &[f64], n: u64, variance: f64, min: f64) -> Verdict {
    let Some(m) = overfit::moments(returns) else {
        return Verdict::new(
            "deflated-sharpe",
            false,
            "no variation in its returns: nothing to judge".into(),
            serde_json::json!({ "trials": n }),
        );
    };
    let dsr = overfit::deflated_sharpe(
        m.sharpe,
        n.max(1),
        variance,
        m.n as u64,
        m.skewness,
        m.kurtosis,
    );
    let expected = overfit::expected_max_sharpe(n.max(1), variance);
    Verdict::new(
        "deflated-sharpe",
        dsr >= min,
        format!(
            "DSR {dsr:.4} (min {min}) for Sharpe {:.5} per bar against {n} trials (expected best by luck {expected:.5})",
            m.sharpe
        ),
        serde_json::json!({
            "dsr": dsr, "sharpe_per_bar": m.sharpe, "trials": n, "sharpe_variance": variance,
            "expected_max_sharpe": expected, "observations": m.n, "skew": m.skewness, "kurtosis": m.kurtosis,
        }),
    )
}

/// Probability of backtest overfitting over the grid's return series.
pub fn pbo(grid_returns: &[Vec<f64>], splits: usize, max: f64) -> Verdict {
    let len = grid_returns.iter().map(Vec::len).min().unwrap_or(0);
    let rows: Vec<Vec<f64>> = grid_returns
        .iter()
        .filter(|r| r.iter().all(|x| x.is_finite()))
        .map(|r| r[..len].to_vec())
        .take(overfit::MAX_CONFIGURATIONS)
        .collect();
    match overfit::pbo(&rows, splits) {
        Ok(p) => Verdict::new(
            "pbo",
            p.probability <= max,
            format!(
                "PBO {:.3} (max {max}) over {} parameter sets, {} combinations",
                p.probability,
                rows.len(),
                p.combinations
            ),
            serde_json::json!({
                "pbo": p.probability, "configurations": rows.len(), "combinations": p.combinations,
                "oos_loss_share": p.oos_loss_share,
            }),
        ),
        Err(e) => Verdict::new(
            "pbo",
            false,
            format!("cannot be judged: {e}"),
            serde_json::json!({ "configurations": rows.len() }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_data_as_it_always_has() {
        // Digests computed by the release before reports moved to BLAKE3:
        // trials registered then must still count against the same data.
        let candles: Vec<keel_model::Candle> = (0..10)
            .map(|i| keel_model::Candle {
                time_ms: i * 60_000,
                open: 100.0 + i as f64,
                high: 101.0 + i as f64,
                low: 99.0 + i as f64,
                close: 100.5 + i as f64,
                volume: 10.0 * i as f64,
            })
            .collect();
        let data = Dataset {
            series: keel_model::replay::Series {
                symbol: "ETH/BTC".into(),
                candles: candles.clone(),
                bar_ms: 60_000,
            },
            reference: keel_backtester::report::DataRef::of("ETH/BTC", "a.csv".into(), &candles),
        };
        let split = split(vec![data], 20.0).expect("split");
        assert_eq!(
            (
                split.in_sample[0].series.candles.len(),
                split.holdout[0].series.candles.len()
            ),
            (8, 2)
        );
        assert_eq!(
            split.digest,
            "d2eb5cc01fe38022db0dadf5992c7e1b66ffb0cad42eac246f9404ec39e0dd00"
        );
        assert_eq!(
            split.holdout_digest,
            "64906f3f4ad7319e968aa6163c69cf6bbfeb30bb024e734cc7ecb7fd90fe537d"
        );
    }

    #[test]
    fn deflation_rejects_a_lucky_best_of_many_and_passes_a_strong_one() {
        // A Sharpe that would look fine alone, deflated by 1,000 trials.
        let mut state = 5u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let weak: Vec<f64> = (0..2000).map(|_| 0.0001 + noise() * 0.02).collect();
        let strong: Vec<f64> = (0..2000).map(|_| 0.02 + noise() * 0.02).collect();
        assert!(!deflated(&weak, 1000, 0.001, 0.95).passed);
        assert!(deflated(&strong, 1000, 0.001, 0.95).passed);
        assert!(!deflated(&[0.0; 10], 5, 0.1, 0.95).passed);
    }

    #[test]
    fn pbo_of_noise_is_refused_and_a_dominant_grid_is_not() {
        let mut state = 11u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let dominant: Vec<Vec<f64>> = (0..6)
            .map(|c| {
                (0..400)
                    .map(|_| c as f64 * 0.01 + noise() * 0.001)
                    .collect()
            })
            .collect();
        assert!(pbo(&dominant, 8, 0.5).passed);
        let bad = pbo(&[vec![0.1; 3]], 8, 0.5);
        assert!(
            !bad.passed && bad.detail.starts_with("cannot be judged"),
            "{bad:?}"
        );
    }
}
