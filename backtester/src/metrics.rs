//! Performance figures from a backtest's trades and equity curve. Returns are
//! per step of the merged time axis, annualised by the steps a year the run
//! took: its steps over its span. For one series without gaps that is a
//! year over the bar length; a daily stock series (no weekends) counts its
//! ~252 steps a year, not 365; and feeds of different bar lengths (a daily
//! series beside a few 5m bars) are no longer annualised as if every step
//! were the shortest bar's (which put √288 on a daily series' Sharpe).

use crate::engine::BacktestResult;

const YEAR_MS: f64 = 365.25 * 86_400_000.0;

/// Every figure of a report. Ratios are `None` where undefined (no trades,
/// no losses, no variance).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub total_return: f64,
    pub cagr: Option<f64>,
    pub volatility: f64,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub calmar: Option<f64>,
    pub max_drawdown: f64,
    pub max_drawdown_duration_ms: i64,
    pub trades: usize,
    pub win_rate: Option<f64>,
    pub profit_factor: Option<f64>,
    pub expectancy: Option<f64>,
    pub average_win: Option<f64>,
    pub average_loss: Option<f64>,
    pub exposure: f64,
    pub fees: f64,
}

impl Metrics {
    pub fn of(result: &BacktestResult) -> Metrics {
        let stats = &result.equity_stats;
        let start = result.cash_start;
        let end = result.equity_final;
        let total_return = end / start - 1.0;
        let span_ms = stats
            .first_ms
            .map_or(0.0, |first| (stats.last_ms - first + result.bar_ms) as f64);
        let cagr =
            (span_ms > 0.0 && end > 0.0).then(|| (end / start).powf(YEAR_MS / span_ms) - 1.0);
        let n = stats.points.max(1) as f64;
        let (mean, variance) = stats.returns();
        let downside = (stats.downside_sq / n).sqrt();
        // Steps a year: the intervals between steps over the time they took.
        let stepped_ms = stats.first_ms.map_or(0, |first| stats.last_ms - first);
        let per_year = match stats.points > 1 && stepped_ms > 0 {
            true => (stats.points - 1) as f64 * YEAR_MS / stepped_ms as f64,
            false => YEAR_MS / result.bar_ms.max(1) as f64,
        };
        let std = variance.sqrt();
        let volatility = std * per_year.sqrt();
        let sharpe = (std > 0.0).then(|| mean / std * per_year.sqrt());
        let sortino = (downside > 0.0).then(|| mean / downside * per_year.sqrt());
        let max_dd = stats.max_drawdown;
        let max_dd_ms = stats.max_drawdown_ms;
        let calmar = cagr.filter(|_| max_dd > 0.0).map(|c| c / max_dd);

        let trades = &result.trades;
        let wins: Vec<f64> = trades.iter().map(|t| t.pnl).filter(|p| *p > 0.0).collect();
        let losses: Vec<f64> = trades.iter().map(|t| t.pnl).filter(|p| *p <= 0.0).collect();
        let gross_win: f64 = wins.iter().sum();
        let gross_loss: f64 = -losses.iter().sum::<f64>();
        let count = trades.len();
        let mean_of = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Metrics {
            total_return,
            cagr,
            volatility,
            sharpe,
            sortino,
            calmar,
            max_drawdown: max_dd,
            max_drawdown_duration_ms: max_dd_ms,
            trades: count,
            win_rate: (count > 0).then(|| wins.len() as f64 / count as f64),
            profit_factor: (gross_loss > 0.0).then(|| gross_win / gross_loss),
            expectancy: (count > 0).then(|| (gross_win - gross_loss) / count as f64),
            average_win: mean_of(&wins),
            average_loss: mean_of(&losses),
            exposure: result.exposure,
            fees: result.fees,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ExitReason, Trade};
    use crate::equity::{CURVE_POINTS, EquityPoint, EquityTracker};
    use keel_model::Side;

    const DAY: i64 = 86_400_000;

    fn trade(pnl: f64) -> Trade {
        Trade {
            symbol: "A".into(),
            tag: String::new(),
            side: Side::Long,
            quantity: 1.0,
            price_entry: 1.0,
            price_exit: 1.0,
            time_entry_ms: 0,
            time_exit_ms: 0,
            pnl,
            fees: 0.5,
            mae: 0.0,
            mfe: 0.0,
            exit_reason: ExitReason::Signal,
            stop_loss: None,
            take_profit: None,
        }
    }

    /// A result with the given equity after each step (and at the end).
    fn result(start: f64, points: &[(i64, f64)], trades: Vec<Trade>) -> BacktestResult {
        let mut tracker = EquityTracker::new(start);
        for &(time_ms, equity) in points {
            tracker.push(EquityPoint { time_ms, equity });
        }
        let equity_final = points.last().map_or(start, |p| p.1);
        let (equity_stats, equity) = tracker.finish(equity_final);
        BacktestResult {
            cash_start: start,
            equity_final,
            trades,
            equity,
            equity_stats,
            fills: vec![],
            fill_count: 0,
            rejected: vec![],
            errors: vec![],
            steps: points.len(),
            bars: points.len(),
            bar_ms: DAY,
            exposure: 2.0 / 3.0,
            fees: 2.0,
            capped_fills: 0,
            signals: vec![],
            signal_count: 0,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    /// Figures checked against an independent computation (Python, same
    /// definitions): daily bars, equity 100 -> 110 -> 99 -> 121.
    #[test]
    fn figures_by_hand() {
        let result = result(
            100.0,
            &[(0, 110.0), (DAY, 99.0), (2 * DAY, 121.0)],
            [10.0, -5.0, 20.0, -5.0].map(trade).to_vec(),
        );
        let m = Metrics::of(&result);
        assert!(close(Some(m.total_return), 0.21));
        assert!(close(Some(m.max_drawdown), 0.1));
        assert_eq!(m.max_drawdown_duration_ms, DAY);
        assert!(close(m.sharpe, 8.70279982119768), "{:?}", m.sharpe);
        assert!(close(m.sortino, 24.52008498968215), "{:?}", m.sortino);
        assert!(close(Some(m.volatility), 3.108833491683392));
        assert!(close(m.cagr, 11998275670.32402), "{:?}", m.cagr);
        assert!(close(m.calmar, 119982756703.2402));
        assert_eq!(m.trades, 4);
        assert!(close(m.win_rate, 0.5) && close(m.profit_factor, 3.0) && close(m.expectancy, 5.0));
        assert!(close(m.average_win, 15.0) && close(m.average_loss, -5.0));
    }

    /// Annualised by the steps a year the run took: not by the shortest
    /// bar among its feeds (a few 5m bars beside a daily series put √288
    /// on its Sharpe), and a daily series without weekends counts five
    /// steps a week.
    #[test]
    fn returns_are_annualised_by_the_steps_taken_not_the_shortest_bar() {
        let points = [(0, 110.0), (DAY, 99.0), (2 * DAY, 121.0)];
        let daily = Metrics::of(&result(100.0, &points, vec![]));
        let mut mixed = result(100.0, &points, vec![]);
        mixed.bar_ms = 5 * 60_000;
        let mixed = Metrics::of(&mixed);
        assert_eq!(mixed.sharpe, daily.sharpe);
        assert_eq!(mixed.volatility, daily.volatility);
        assert!(close(daily.sharpe, 8.70279982119768), "{:?}", daily.sharpe);
        // Weekdays only: 5 steps in 7 days, so √(5/7) of a daily Sharpe.
        let weekdays: Vec<(i64, f64)> = (0..200)
            .filter(|d| d % 7 < 5)
            .map(|d| (d * DAY, 100.0 + (d % 3) as f64))
            .collect();
        let gapped = Metrics::of(&result(100.0, &weekdays, vec![]));
        let steps = weekdays.len() as f64;
        let days = (weekdays[weekdays.len() - 1].0 / DAY) as f64;
        let (mean, variance) = result(100.0, &weekdays, vec![]).equity_stats.returns();
        let per_year = (steps - 1.0) / days * 365.25;
        assert!(close(
            gapped.sharpe,
            mean / variance.sqrt() * per_year.sqrt()
        ));
    }

    #[test]
    fn a_long_curve_is_thinned_evenly_but_its_figures_are_exact() {
        let points: Vec<(i64, f64)> = (0..100_003)
            .map(|i| (i * DAY, 100.0 + (i % 7) as f64))
            .collect();
        let r = result(100.0, &points, vec![]);
        assert!(r.equity.len() <= CURVE_POINTS + 1, "{}", r.equity.len());
        assert_eq!(r.equity.first().map(|p| p.time_ms), Some(0));
        assert_eq!(
            r.equity.last(),
            Some(&EquityPoint {
                time_ms: 100_002 * DAY,
                equity: 100.0 + (100_002 % 7) as f64
            })
        );
        let gaps: std::collections::BTreeSet<i64> = r
            .equity
            .windows(2)
            .map(|w| w[1].time_ms - w[0].time_ms)
            .collect();
        assert!(
            gaps.len() <= 2,
            "evenly spaced but for the last point: {gaps:?}"
        );
        assert_eq!(r.equity_stats.points, 100_003);
        // Peak 106 then 100: 1 - 100/106 at most.
        assert!((r.equity_stats.max_drawdown - (1.0 - 100.0 / 106.0)).abs() < 1e-12);
    }

    #[test]
    fn undefined_ratios_are_none() {
        let flat = result(100.0, &[(0, 100.0), (DAY, 100.0)], vec![]);
        let m = Metrics::of(&flat);
        assert_eq!(
            (m.sharpe, m.sortino, m.calmar, m.win_rate, m.profit_factor),
            (None, None, None, None, None)
        );
        assert_eq!(m.max_drawdown, 0.0);
    }

    /// The figures accumulated step by step equal the ones computed from
    /// the whole curve at once: two-pass mean and variance, and every
    /// point's drawdown from the peak before it.
    #[test]
    fn step_by_step_figures_equal_the_whole_curves() {
        let mut state = 7u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut equity = 100.0;
        let mut points = Vec::new();
        for i in 0..5000 {
            // Flat stretches, slides and recoveries, ending under the peak.
            if i % 50 >= 20 {
                equity *= 1.0 + (next() - 0.5) * 0.02 - if i > 4900 { 0.01 } else { 0.0 };
            }
            points.push((i * DAY, equity));
        }
        let r = result(100.0, &points, vec![]);
        let stats = &r.equity_stats;
        let mut previous = 100.0;
        let returns: Vec<f64> = points
            .iter()
            .map(|&(_, e)| {
                let r = e / previous - 1.0;
                previous = e;
                r
            })
            .collect();
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let variance = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let (got_mean, got_variance) = stats.returns();
        assert!(
            (got_mean - mean).abs() <= 1e-12 * mean.abs().max(1e-9),
            "{got_mean} {mean}"
        );
        assert!(
            (got_variance / variance - 1.0).abs() <= 1e-9,
            "{got_variance} {variance}"
        );
        let (mut peak, mut peak_ms, mut worst, mut longest) = (100.0, 0, 0.0f64, 0);
        for &(t, e) in &points {
            if e >= peak {
                (peak, peak_ms) = (e, t);
            } else {
                worst = worst.max(1.0 - e / peak);
                longest = longest.max(t - peak_ms);
            }
        }
        assert!(worst > 0.05 && longest > 10 * DAY, "{worst} {longest}");
        assert_eq!(stats.max_drawdown, worst);
        assert_eq!(stats.max_drawdown_ms, longest);
    }
}
