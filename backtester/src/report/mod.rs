//! The backtest report: a versioned JSON document (`schema` names its
//! version; fields are only ever added), and the same figures as a terminal
//! table. A report records what it is a report *of* — the artifact hash, a
//! hash of every series' candles, and every setting — and nothing else (no
//! wall-clock time, no host name), so the same inputs give the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use keel_model::candles::{Candle, columns, format_time};
use keel_model::shown::{fixed, line, text};

use crate::engine::{BacktestConfig, BacktestResult, Trade};
use crate::metrics::Metrics;

mod grid;
mod page;

pub use grid::{Fold, GridRun, WalkForward, grid_html, score};
pub use page::PriceSeries;

pub const SCHEMA: &str = "keel.backtest/2";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Resolved parameters, in declaration order.
    pub params: Vec<ParamEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamEntry {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataRef {
    pub symbol: String,
    /// Where it came from: a file path or `store:SYMBOL@TF`.
    pub source: String,
    /// The candles' digest, `blake3:<hex>` (`candles::columns::digest`): of
    /// the bars themselves, so the same data has the same digest from a
    /// file or the store (where it is kept, not recomputed).
    pub digest: String,
    pub bars: usize,
    pub first: String,
    pub last: String,
    /// How many of the bars are partial, when they were aggregated from
    /// finer ones (`--timeframe`): fewer candles than a whole bar, a gap
    /// inside or the data starting or ending inside; absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub partial: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub cash: f64,
    pub fee_bps: f64,
    pub slippage_bps: f64,
    pub max_volume_share: Option<f64>,
    pub lot_size: f64,
    pub max_position_fraction: f64,
    pub max_open_positions: u32,
    pub max_trade_fraction: f64,
    pub min_order_quote: f64,
    /// Minimum orders set by quote currency or symbol (see `risk::MinOrders`).
    pub min_order: BTreeMap<String, f64>,
    /// How strategy calls were bounded (fuel per call, deterministic).
    pub fuel_per_call: Option<u64>,
    /// A time window, when the run covers only part of the data.
    pub window: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub bars: usize,
    pub signals: usize,
    pub fills: usize,
    pub rejected: usize,
    pub errors: usize,
    pub capped_fills: usize,
    pub cash_start: f64,
    pub equity_final: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub time: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub strategy: StrategyRef,
    pub data: Vec<DataRef>,
    pub settings: Settings,
    pub summary: Summary,
    pub metrics: Metrics,
    pub trades: Vec<Trade>,
    /// `[close time ms, equity]` after every step.
    pub equity: Vec<(i64, f64)>,
    pub rejected: Vec<Issue>,
    pub errors: Vec<Issue>,
}

impl DataRef {
    /// The reference of `candles` of `symbol` read from `source`: their
    /// hash, count and span.
    pub fn of(symbol: &str, source: String, candles: &[Candle]) -> DataRef {
        DataRef::with_digest(symbol, source, candles, columns::digest(candles))
    }

    /// `of`, with the candles' digest already known (the store keeps it).
    pub fn with_digest(
        symbol: &str,
        source: String,
        candles: &[Candle],
        digest: String,
    ) -> DataRef {
        let time = |c: Option<&Candle>| c.map_or_else(String::new, |c| format_time(c.time_ms));
        DataRef {
            symbol: symbol.to_owned(),
            source,
            digest,
            bars: candles.len(),
            first: time(candles.first()),
            last: time(candles.last()),
            partial: 0,
        }
    }
}

impl Report {
    pub fn new(
        strategy: StrategyRef,
        data: Vec<DataRef>,
        config: &BacktestConfig,
        fuel_per_call: Option<u64>,
        window: Option<(i64, i64)>,
        result: &BacktestResult,
    ) -> Report {
        let issue = |time: i64, message: String| Issue {
            time: format_time(time),
            message,
        };
        Report {
            schema: SCHEMA,
            strategy,
            data,
            settings: Settings {
                cash: config.cash,
                fee_bps: config.fills.fee_bps,
                slippage_bps: config.fills.slippage_bps,
                max_volume_share: config.fills.max_volume_share,
                lot_size: config.fills.lot_size,
                max_position_fraction: config.limits.max_position_fraction,
                max_open_positions: config.limits.max_open_positions,
                max_trade_fraction: config.limits.max_trade_fraction,
                min_order_quote: config.limits.min_order_quote,
                min_order: config.min_orders.entries().clone(),
                fuel_per_call,
                window: window.map(|(a, b)| (format_time(a), format_time(b))),
            },
            summary: Summary {
                steps: result.steps,
                bars: result.bars,
                signals: result.signal_count,
                fills: result.fill_count,
                rejected: result.rejected.len(),
                errors: result.errors.len(),
                capped_fills: result.capped_fills,
                cash_start: result.cash_start,
                equity_final: result.equity_final,
            },
            metrics: Metrics::of(result),
            trades: result.trades.clone(),
            equity: result
                .equity
                .iter()
                .map(|p| (p.time_ms, p.equity))
                .collect(),
            rejected: result
                .rejected
                .iter()
                .map(|r| {
                    issue(
                        r.time_ms,
                        format!(
                            "{} {} [{}]: {}",
                            r.signal.action.as_str(),
                            text(&r.signal.symbol),
                            text(&r.signal.tag),
                            line(&r.reason)
                        ),
                    )
                })
                .collect(),
            errors: result
                .errors
                .iter()
                .map(|(t, e)| issue(*t, line(e).to_string()))
                .collect(),
        }
    }

    /// The JSON document (pretty, stable field order).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The figures as an aligned terminal table.
    pub fn table(&self) -> String {
        let m = &self.metrics;
        let pct = |v: f64| format!("{}%", fixed(v * 100.0, 2));
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "-".to_owned(), f);
        let num = |v: f64| fixed(v, 2).to_string();
        let days = m.max_drawdown_duration_ms as f64 / 86_400_000.0;
        let rows: Vec<(&str, String)> = vec![
            ("total return", pct(m.total_return)),
            ("CAGR", opt(m.cagr, &pct)),
            ("volatility (ann.)", pct(m.volatility)),
            ("Sharpe", opt(m.sharpe, &num)),
            ("Sortino", opt(m.sortino, &num)),
            ("Calmar", opt(m.calmar, &num)),
            ("max drawdown", pct(m.max_drawdown)),
            ("max drawdown duration", format!("{days:.1} days")),
            ("trades", m.trades.to_string()),
            ("win rate", opt(m.win_rate, &pct)),
            ("profit factor", opt(m.profit_factor, &num)),
            ("expectancy", opt(m.expectancy, &num)),
            ("average win", opt(m.average_win, &num)),
            ("average loss", opt(m.average_loss, &num)),
            ("exposure", pct(m.exposure)),
            ("fees paid", num(m.fees)),
            (
                "equity",
                format!(
                    "{} -> {}",
                    fixed(self.summary.cash_start, 2),
                    fixed(self.summary.equity_final, 2)
                ),
            ),
            (
                "bars / signals / rejected",
                format!(
                    "{} / {} / {}",
                    self.summary.bars, self.summary.signals, self.summary.rejected
                ),
            ),
        ];
        let mut out = format!(
            "{} {} ({})  on {}\n",
            self.strategy.name,
            text(&self.strategy.version),
            &self.strategy.sha256[..12.min(self.strategy.sha256.len())],
            self.data
                .iter()
                .map(|d| text(&d.symbol).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, value) in rows {
            out.push_str(&format!("  {name:<26} {value:>22}\n"));
        }
        out
    }
}
