//! The truth a night starts from, computed from the ledger by code and never
//! by a model: per book of the latest run its return, Sharpe, drawdown, win
//! rate, trades, exposure and fees beside buy-and-hold of the run's symbols;
//! per symbol its volatility and trend.

use rusqlite::{Connection, OptionalExtension};

use keel_candidates::overfit;

/// One book's figures over its run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BookFigures {
    pub slot: String,
    pub strategy: String,
    pub artifact: String,
    pub start_cash: f64,
    pub equity: f64,
    pub return_pct: f64,
    /// Mean over standard deviation of the per-close equity returns.
    pub sharpe_per_bar: Option<f64>,
    pub max_drawdown_pct: f64,
    pub trades: u64,
    pub win_rate_pct: Option<f64>,
    pub fees: f64,
    /// Share of the run's time with a position open, percent.
    pub exposure_pct: f64,
}

/// One symbol of the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SymbolFigures {
    pub symbol: String,
    pub bars: u64,
    /// Standard deviation of close-to-close returns, percent.
    pub volatility_pct: f64,
    /// Last close over first, percent.
    pub trend_pct: f64,
}

/// What the ledger says of the latest run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Benchmarks {
    pub run_id: Option<i64>,
    pub mode: Option<String>,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub books: Vec<BookFigures>,
    pub symbols: Vec<SymbolFigures>,
    /// Equal weights in every symbol from the first close to the last.
    pub buy_and_hold_pct: Option<f64>,
}

/// The benchmarks of the latest run in the ledger (none: an empty record).
pub fn compute(conn: &Connection) -> anyhow::Result<Benchmarks> {
    let run: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, mode FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((run_id, mode)) = run else {
        return Ok(Benchmarks {
            run_id: None,
            mode: None,
            first_ms: None,
            last_ms: None,
            books: Vec::new(),
            symbols: Vec::new(),
            buy_and_hold_pct: None,
        });
    };
    let (first_ms, last_ms): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT MIN(close_ms), MAX(close_ms) FROM run_bars WHERE run_id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let symbols = symbol_figures(conn, run_id)?;
    let buy_and_hold_pct = (!symbols.is_empty())
        .then(|| symbols.iter().map(|s| s.trend_pct).sum::<f64>() / symbols.len() as f64);
    let mut books = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT b.id, b.slot, COALESCE(a.name, '?'), b.artifact_hash, b.start_cash, b.fees
         FROM books b LEFT JOIN artifacts a ON a.hash = b.artifact_hash
         WHERE b.run_id = ?1 ORDER BY b.id",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    for row in rows {
        let (id, slot, strategy, artifact, start_cash, fees) = row?;
        let start_cash = number(&start_cash);
        let span = first_ms.zip(last_ms);
        books.push(book_figures(
            conn,
            id,
            BookFigures {
                slot,
                strategy,
                artifact,
                start_cash,
                equity: start_cash,
                return_pct: 0.0,
                sharpe_per_bar: None,
                max_drawdown_pct: 0.0,
                trades: 0,
                win_rate_pct: None,
                fees: number(&fees),
                exposure_pct: 0.0,
            },
            span,
        )?);
    }
    Ok(Benchmarks {
        run_id: Some(run_id),
        mode: Some(mode),
        first_ms,
        last_ms,
        books,
        symbols,
        buy_and_hold_pct,
    })
}

fn number(text: &str) -> f64 {
    text.parse().unwrap_or(f64::NAN)
}

fn book_figures(
    conn: &Connection,
    book: i64,
    mut f: BookFigures,
    span: Option<(i64, i64)>,
) -> anyhow::Result<BookFigures> {
    let mut stmt =
        conn.prepare("SELECT equity FROM equity_snapshots WHERE book_id = ?1 ORDER BY time_ms")?;
    let equity: Vec<f64> = stmt
        .query_map([book], |r| r.get::<_, String>(0))?
        .map(|e| e.map(|e| number(&e)))
        .collect::<rusqlite::Result<_>>()?;
    let mut returns = Vec::with_capacity(equity.len());
    let mut last = f.start_cash;
    for &e in &equity {
        if last > 0.0 {
            returns.push(e / last - 1.0);
        }
        last = e;
    }
    f.max_drawdown_pct = max_drawdown_pct(f.start_cash, &equity);
    f.equity = last;
    f.return_pct = if f.start_cash > 0.0 {
        (last / f.start_cash - 1.0) * 100.0
    } else {
        0.0
    };
    f.sharpe_per_bar = overfit::moments(&returns).map(|m| m.sharpe);
    let (trades, wins): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(CAST(pnl_gross AS REAL) - CAST(fees AS REAL) > 0), 0)
         FROM trades WHERE book_id = ?1",
        [book],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    f.trades = trades as u64;
    f.win_rate_pct = (trades > 0).then(|| wins as f64 / trades as f64 * 100.0);
    if let Some((first, last)) = span.filter(|(a, b)| b > a) {
        let mut held: Vec<(i64, i64)> = Vec::new();
        let mut stmt = conn.prepare(
            "SELECT opened_ms, closed_ms FROM trades WHERE book_id = ?1
             UNION ALL SELECT opened_ms, ?2 FROM positions WHERE book_id = ?1",
        )?;
        for row in stmt.query_map(rusqlite::params![book, last], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (a, b) = row?;
            held.push((a.max(first), b.min(last)));
        }
        f.exposure_pct = covered(&mut held) as f64 / (last - first) as f64 * 100.0;
    }
    Ok(f)
}

/// The deepest fall of `equity` below its running peak (which starts at
/// `start`), percent.
pub fn max_drawdown_pct(start: f64, equity: &[f64]) -> f64 {
    let mut peak = start;
    let mut worst: f64 = 0.0;
    for &e in equity {
        peak = peak.max(e);
        if peak > 0.0 {
            worst = worst.max((peak - e) / peak * 100.0);
        }
    }
    worst
}

/// The length of the union of `intervals`.
fn covered(intervals: &mut [(i64, i64)]) -> i64 {
    intervals.sort_unstable();
    let (mut total, mut end) = (0, i64::MIN);
    for &(a, b) in intervals.iter() {
        if b <= a {
            continue;
        }
        let start = a.max(end);
        if b > start {
            total += b - start;
        }
        end = end.max(b);
    }
    total
}

fn symbol_figures(conn: &Connection, run_id: i64) -> anyhow::Result<Vec<SymbolFigures>> {
    let mut stmt = conn.prepare(
        "SELECT symbol, close FROM run_bars WHERE run_id = ?1 ORDER BY symbol, close_ms",
    )?;
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for row in stmt.query_map([run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
    })? {
        let (symbol, close) = row?;
        match out.last_mut() {
            Some((s, closes)) if *s == symbol => closes.push(close),
            _ => out.push((symbol, vec![close])),
        }
    }
    Ok(out
        .into_iter()
        .map(|(symbol, closes)| {
            let returns: Vec<f64> = closes.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
            SymbolFigures {
                symbol,
                bars: closes.len() as u64,
                volatility_pct: overfit::moments(&returns).map_or(0.0, |m| m.sd * 100.0),
                trend_pct: match (closes.first(), closes.last()) {
                    (Some(a), Some(b)) if *a > 0.0 => (b / a - 1.0) * 100.0,
                    _ => 0.0,
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drawdown_is_the_deepest_fall_below_the_running_peak() {
        assert_eq!(max_drawdown_pct(100.0, &[110.0, 99.0, 120.0, 108.0]), 10.0);
        assert_eq!(max_drawdown_pct(100.0, &[90.0]), 10.0);
        assert_eq!(max_drawdown_pct(100.0, &[]), 0.0);
    }

    #[test]
    fn exposure_counts_overlapping_positions_once() {
        assert_eq!(covered(&mut [(0, 10), (5, 15), (20, 30), (25, 26)]), 25);
        assert_eq!(covered(&mut [(3, 3), (9, 2)]), 0);
        assert_eq!(covered(&mut []), 0);
    }
}
