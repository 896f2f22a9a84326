//! The backtest report as one HTML page: what it is of, the figures, the
//! settings and limits it ran under, equity and drawdown beside buy and
//! hold, monthly returns, each symbol's price with its trades, per-symbol
//! figures, the distribution of trade returns, every trade (held how long,
//! returning what), and every signal refused with its reason. Inline SVG
//! and CSS, no script, nothing fetched.

use keel_model::Side;
use keel_model::candles::format_time;
use keel_model::shown::{fixed, text};

use super::Report;
use crate::html::{self, Level, Marker, escape};

/// A symbol's closes, for drawing its trades on (and buy and hold).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSeries {
    pub symbol: String,
    /// `[close time ms, close]`.
    pub closes: Vec<(i64, f64)>,
}

/// A duration as days, hours and minutes.
fn held(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match (minutes / 1440, minutes % 1440 / 60, minutes % 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m:02}m"),
        (d, h, _) => format!("{d}d{h:02}h"),
    }
}

/// A trade's return on what it put in, percent.
fn return_pct(t: &crate::engine::Trade) -> f64 {
    let cost = t.price_entry * t.quantity;
    if cost > 0.0 {
        t.pnl / cost * 100.0
    } else {
        0.0
    }
}

/// Equal parts of `cash` put in every symbol at its first close and held:
/// the value at each close of any of them.
fn buy_and_hold(cash: f64, prices: &[PriceSeries]) -> Vec<(i64, f64)> {
    let series: Vec<&PriceSeries> = prices
        .iter()
        .filter(|p| p.closes.first().is_some_and(|c| c.1 > 0.0))
        .collect();
    if series.is_empty() {
        return Vec::new();
    }
    let mut times: Vec<i64> = series
        .iter()
        .flat_map(|p| p.closes.iter().map(|c| c.0))
        .collect();
    times.sort_unstable();
    times.dedup();
    let share = cash / series.len() as f64;
    let mut at = vec![0usize; series.len()];
    times
        .into_iter()
        .map(|t| {
            let value: f64 = series
                .iter()
                .zip(at.iter_mut())
                .map(|(p, i)| {
                    while *i + 1 < p.closes.len() && p.closes[*i + 1].0 <= t {
                        *i += 1;
                    }
                    share * p.closes[*i].1 / p.closes[0].1
                })
                .sum();
            (t, value)
        })
        .collect()
}

impl Report {
    /// The page without prices: no price charts and no buy and hold.
    pub fn html(&self) -> String {
        self.html_with(&[])
    }

    /// The whole page, drawing each symbol's `prices` with its trades.
    pub fn html_with(&self, prices: &[PriceSeries]) -> String {
        let title = format!(
            "{} {} backtest",
            self.strategy.name,
            text(&self.strategy.version)
        );
        let mut page = String::with_capacity(64 * 1024);
        page.push_str(&html::page_start(&title));
        page.push_str(&format!(
            "<p>artifact <code>{}</code></p>\n",
            escape(&self.strategy.sha256)
        ));
        page.push_str(&super::grid::data_lines(&self.data));
        page.push_str("<table>\n");
        for line in self.table().lines().skip(1) {
            let (name, value) = line.trim().split_at(line.trim().len().min(26));
            page.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(name.trim()),
                escape(value.trim())
            ));
        }
        page.push_str("</table>\n");
        self.settings_section(&mut page);
        let benchmark = buy_and_hold(self.summary.cash_start, prices);
        page.push_str("<h2>Equity and drawdown</h2>\n");
        page.push_str(&html::equity_chart(&self.equity, &benchmark));
        if let Some(&(_, last)) = benchmark.last() {
            page.push_str(&format!(
                "<p class=\"muted\">buy and hold (equal parts of each symbol, held from the first close): {:+.2}%</p>\n",
                (last / self.summary.cash_start - 1.0) * 100.0
            ));
        }
        page.push_str("<h2>Monthly returns</h2>\n");
        page.push_str(&html::monthly_returns(&self.equity));
        self.symbols_section(&mut page, prices);
        page.push_str("<h2>Distribution of trade returns</h2>\n");
        let returns: Vec<f64> = self.trades.iter().map(return_pct).collect();
        page.push_str(&html::histogram(&returns));
        self.trades_section(&mut page);
        for (title, issues) in [
            ("Rejected signals", &self.rejected),
            ("Strategy errors", &self.errors),
        ] {
            if issues.is_empty() {
                continue;
            }
            page.push_str(&format!("<h2>{title} ({})</h2>\n<table>\n", issues.len()));
            for issue in issues {
                page.push_str(&format!(
                    "<tr><th>{}</th><td style=\"text-align:left\">{}</td></tr>\n",
                    escape(&issue.time),
                    escape(&issue.message)
                ));
            }
            page.push_str("</table>\n");
        }
        page.push_str(html::PAGE_END);
        page
    }

    /// The parameters, fills and risk limits the run had.
    fn settings_section(&self, page: &mut String) {
        let s = &self.settings;
        let params: Vec<String> = self
            .strategy
            .params
            .iter()
            .map(|p| format!("{}={}", p.name, p.value))
            .collect();
        let mut rows = vec![
            ("parameters", params.join(", ")),
            ("starting cash", fixed(s.cash, 2).to_string()),
            ("fees", format!("{} bps", s.fee_bps)),
            ("slippage", format!("{} bps", s.slippage_bps)),
            (
                "volume cap",
                s.max_volume_share.map_or("none".into(), |v| {
                    format!("{}% of a bar's volume", v * 100.0)
                }),
            ),
            ("lot size", s.lot_size.to_string()),
            (
                "max position",
                format!("{}% of equity", s.max_position_fraction * 100.0),
            ),
            ("max open positions", s.max_open_positions.to_string()),
            (
                "max trade",
                format!("{}% of equity", s.max_trade_fraction * 100.0),
            ),
            ("min order (fiat quote)", s.min_order_quote.to_string()),
        ];
        for (quote, min) in &s.min_order {
            rows.push(("min order", format!("{} {min}", text(quote))));
        }
        if let Some(fuel) = s.fuel_per_call {
            rows.push(("fuel per call", fuel.to_string()));
        }
        if let Some((from, to)) = &s.window {
            rows.push(("window", format!("{from} .. {to}")));
        }
        page.push_str("<h2>Settings and limits</h2>\n<table>\n");
        for (name, value) in rows {
            page.push_str(&format!(
                "<tr><th>{name}</th><td style=\"text-align:left\">{}</td></tr>\n",
                escape(&value)
            ));
        }
        page.push_str("</table>\n");
    }

    /// Per symbol: its figures, and its price with the trades on it.
    fn symbols_section(&self, page: &mut String, prices: &[PriceSeries]) {
        page.push_str(
            "<h2>By symbol</h2>\n<table><tr><th>symbol</th><th>trades</th><th>won</th>\
             <th>win rate</th><th>net P&amp;L</th><th>fees</th><th>best</th><th>worst</th></tr>\n",
        );
        for d in &self.data {
            let trades: Vec<_> = self
                .trades
                .iter()
                .filter(|t| t.symbol == d.symbol)
                .collect();
            let won = trades.iter().filter(|t| t.pnl > 0.0).count();
            let pnl: f64 = trades.iter().map(|t| t.pnl).sum();
            let fees: f64 = trades.iter().map(|t| t.fees).sum();
            let best = trades
                .iter()
                .map(|t| return_pct(t))
                .fold(f64::NAN, f64::max);
            let worst = trades
                .iter()
                .map(|t| return_pct(t))
                .fold(f64::NAN, f64::min);
            let pct = |x: f64| {
                if x.is_nan() {
                    "—".to_owned()
                } else {
                    format!("{x:+.2}%")
                }
            };
            page.push_str(&format!(
                "<tr><th>{}</th><td>{}</td><td>{won}</td><td>{}</td><td class=\"{}\">{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&text(&d.symbol).to_string()),
                trades.len(),
                match trades.len() {
                    0 => "—".to_owned(),
                    n => format!("{:.1}%", won as f64 / n as f64 * 100.0),
                },
                if pnl >= 0.0 { "pos" } else { "neg" },
                fixed(pnl, 2),
                fixed(fees, 2),
                pct(best),
                pct(worst),
            ));
        }
        page.push_str("</table>\n");
        for p in prices {
            let markers: Vec<Marker> = self
                .trades
                .iter()
                .filter(|t| t.symbol == p.symbol)
                .flat_map(|t| {
                    let long = t.side == Side::Long;
                    [
                        Marker {
                            time_ms: t.time_entry_ms,
                            price: t.price_entry,
                            entry: true,
                            long,
                        },
                        Marker {
                            time_ms: t.time_exit_ms,
                            price: t.price_exit,
                            entry: false,
                            long,
                        },
                    ]
                })
                .collect();
            let levels: Vec<Level> = (self.trades.iter())
                .filter(|t| t.symbol == p.symbol)
                .flat_map(|t| {
                    Level::of(t.time_entry_ms, t.time_exit_ms, t.stop_loss, t.take_profit)
                })
                .collect();
            page.push_str(&html::price_chart(&p.symbol, &p.closes, &markers, &levels));
        }
    }

    fn trades_section(&self, page: &mut String) {
        page.push_str(&format!(
            "<h2>Trades ({})</h2>\n<table>\n",
            self.trades.len()
        ));
        page.push_str(
            "<tr><th>symbol</th><th>tag</th><th>side</th><th>entry</th><th>exit</th><th>held</th>\
             <th>qty</th><th>price in</th><th>price out</th><th>return</th><th>P&amp;L</th>\
             <th>MAE</th><th>MFE</th><th>exit by</th></tr>\n",
        );
        for t in &self.trades {
            let class = if t.pnl >= 0.0 { "pos" } else { "neg" };
            page.push_str(&format!(
                "<tr><th>{}</th><th>{}</th><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"{class}\">{:+.2}%</td><td class=\"{class}\">{}</td>\
                 <td>{}</td><td>{}</td><td>{:?}</td></tr>\n",
                escape(&text(&t.symbol).to_string()),
                escape(&text(&t.tag).to_string()),
                t.side,
                format_time(t.time_entry_ms),
                format_time(t.time_exit_ms),
                held(t.time_exit_ms - t.time_entry_ms),
                fixed(t.quantity, 6),
                fixed(t.price_entry, 8),
                fixed(t.price_exit, 8),
                return_pct(t),
                fixed(t.pnl, 2),
                fixed(t.mae, 2),
                fixed(t.mfe, 2),
                t.exit_reason
            ));
        }
        page.push_str("</table>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buy_and_hold_splits_the_cash_and_carries_each_last_close() {
        let a = PriceSeries {
            symbol: "A".into(),
            closes: vec![(0, 10.0), (2, 20.0)],
        };
        let b = PriceSeries {
            symbol: "B".into(),
            closes: vec![(1, 5.0), (2, 2.5)],
        };
        let held = buy_and_hold(1000.0, &[a, b]);
        assert_eq!(held, [(0, 1000.0), (1, 1000.0), (2, 1000.0 + 250.0)]);
        assert_eq!(held_text(), ["45m", "3h05m", "2d03h"]);
    }

    fn held_text() -> [String; 3] {
        [
            held(45 * 60_000),
            held((3 * 60 + 5) * 60_000),
            held((51 * 60 + 7) * 60_000),
        ]
    }
}
