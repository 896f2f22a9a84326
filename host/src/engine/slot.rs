//! A slot of a run: one strategy's sandboxed instance, the kernel's book
//! that decides for it, and the decimal ledger the journal books it in.

use anyhow::anyhow;
use rusqlite::{Connection, params};
use rust_decimal::Decimal;

use keel_backtester::kernel::Book;
use keel_model::{Params, Side};

use crate::control::{SnapshotBook, SnapshotPosition};
use crate::ledger::{Holding, Ledger, dec, float};
use crate::sandbox::{Binding, LoadedStrategy, Sandbox, StrategyHash, StrategyInstance};

use super::journal::{d, now_ms, side_text};
use super::settings::RunSettings;

/// One book of a run.
pub(super) struct Slot {
    pub id: i64,
    pub slot: String,
    pub hash: StrategyHash,
    pub instance: StrategyInstance,
    /// The run's symbols its strategy is bound to, and for each of the
    /// run's symbols (by index) whether it is one of them.
    pub symbols: Vec<String>,
    pub sees: Vec<bool>,
    /// What decides: cash, positions with their exits, orders in flight.
    pub book: Book,
    /// What is booked: the same fills in exact decimals.
    pub ledger: Ledger,
    pub peak: Decimal,
    pub day: i64,
    pub day_start: Decimal,
    pub signals: u64,
    pub rejected: u64,
    /// The candidate this book runs in shadow (its paper gate), until the
    /// gate's verdict ends the shadow.
    pub candidate: Option<i64>,
    /// Per-bar equity returns, for Sharpe.
    pub returns: Returns,
    /// A shadow's yardstick: the main book's returns over the same bars.
    pub active_returns: Returns,
    /// The highest closing equity and the deepest fall below it so far,
    /// percent.
    pub equity_peak: f64,
    pub max_drawdown_pct: f64,
    pub last_equity: Option<f64>,
    pub trades: u64,
    /// Equity and feed time (ms) when the current version took over (main
    /// book), for the automatic rollback.
    pub promoted_at: Option<(f64, i64)>,
}

impl Slot {
    /// Whether a close with these bars (by run symbol index) has a bar of
    /// a symbol this book is bound to: a close without one is not shown to
    /// its strategy, as a backtest of its symbols would not have it.
    pub fn sees_any(&self, bars: &[(usize, keel_model::candles::Candle)]) -> bool {
        bars.iter().any(|(sym, _)| self.sees[*sym])
    }

    /// Books this bar's closing equity: its return (none on the first bar)
    /// and the drawdown.
    pub fn record_equity(&mut self, equity: f64) -> Option<f64> {
        let r = self
            .last_equity
            .filter(|last| *last > 0.0)
            .map(|last| equity / last - 1.0);
        if let Some(r) = r {
            self.returns.push(r);
        }
        self.last_equity = Some(equity);
        self.equity_peak = self.equity_peak.max(equity);
        if self.equity_peak > 0.0 {
            let drawdown = (self.equity_peak - equity) / self.equity_peak * 100.0;
            self.max_drawdown_pct = self.max_drawdown_pct.max(drawdown);
        }
        r
    }

    /// What the control API shows of this book.
    pub fn snapshot(&self) -> SnapshotBook {
        let mut book = SnapshotBook {
            signals: self.signals,
            rejected: self.rejected,
            calls: self.instance.stats().calls,
            traps: self.instance.stats().traps,
            ..book_snapshot(
                &self.slot,
                self.instance.label(),
                &self.symbols,
                &self.ledger,
                self.peak,
            )
        };
        for p in &mut book.positions {
            if let Some(open) = self
                .book
                .open
                .iter()
                .find(|o| o.pos.symbol == p.symbol && o.pos.tag == p.tag)
            {
                (p.stop_loss, p.take_profit) = (open.stop_loss, open.take_profit);
            }
        }
        book
    }
}

/// Per-bar returns as count, mean and sum of squared deviations (Welford),
/// so a Sharpe ratio costs no memory however long a run goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Returns {
    pub n: u64,
    mean: f64,
    m2: f64,
}

impl Returns {
    pub fn push(&mut self, r: f64) {
        self.n += 1;
        let delta = r - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (r - self.mean);
    }

    /// Mean over standard deviation, per bar: 0 for a book that stayed
    /// flat; none before two returns, or for a constant non-zero return.
    pub fn sharpe(&self) -> Option<f64> {
        let sd = (self.m2 / self.n.saturating_sub(1).max(1) as f64).sqrt();
        match (self.n > 1, sd > 0.0, self.mean == 0.0) {
            (false, ..) => None,
            (true, true, _) => Some(self.mean / sd),
            (true, false, flat) => flat.then_some(0.0),
        }
    }
}

/// A book to open: its slot, the strategy for it, its parameters, and the
/// candidate it shadows.
pub(super) struct BookPlan<'a> {
    pub slot: String,
    /// The run's symbols the strategy is bound to.
    pub symbols: Vec<String>,
    pub strategy: &'a LoadedStrategy,
    pub params: Params,
    pub candidate: Option<i64>,
}

/// Opens the book of `plan` in run `run_id` — created, or its ledger as
/// stored when the run resumes — with its strategy bound and initialised.
/// Its kernel book starts empty: the engine rebuilds it from the run's
/// history (`history::replay`).
/// Book `id`'s ledger as stored: its start cash, cash, realized P&L and
/// fees (as stored text), and its positions.
pub(super) fn stored_ledger(
    conn: &Connection,
    id: i64,
    [start_cash, cash, realized, fees]: [&str; 4],
) -> rusqlite::Result<Ledger> {
    let mut ledger = Ledger::new(d(start_cash));
    ledger.cash = d(cash);
    ledger.realized = d(realized);
    ledger.fees = d(fees);
    let mut stmt = conn.prepare(
        "SELECT symbol, tag, side, quantity, cost, fees, opened_ms, mark, mae
         FROM positions WHERE book_id = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([id], |r| {
        let side: String = r.get(2)?;
        Ok(Holding {
            symbol: r.get(0)?,
            tag: r.get(1)?,
            side: if side == "short" {
                Side::Short
            } else {
                Side::Long
            },
            quantity: d(&r.get::<_, String>(3)?),
            cost: d(&r.get::<_, String>(4)?),
            fees: d(&r.get::<_, String>(5)?),
            opened_ms: r.get(6)?,
            mark: d(&r.get::<_, String>(7)?),
            mae: d(&r.get::<_, String>(8)?),
        })
    })?;
    for row in rows {
        ledger.holdings.push(row?);
    }
    Ok(ledger)
}

/// A book's figures as served, from its ledger.
pub(super) fn book_snapshot(
    slot: &str,
    strategy: &str,
    symbols: &[String],
    ledger: &Ledger,
    peak: Decimal,
) -> SnapshotBook {
    let equity = ledger.equity();
    SnapshotBook {
        slot: slot.to_owned(),
        strategy: strategy.to_owned(),
        symbols: symbols.to_vec(),
        cash: float(ledger.cash),
        equity: float(equity),
        start_cash: float(ledger.start_cash),
        realized: float(ledger.realized),
        fees: float(ledger.fees),
        drawdown_pct: if peak > Decimal::ZERO {
            float((peak - equity) / peak) * 100.0
        } else {
            0.0
        },
        positions: ledger
            .holdings
            .iter()
            .map(|h| SnapshotPosition {
                symbol: h.symbol.clone(),
                tag: h.tag.clone(),
                side: side_text(h.side).into(),
                quantity: float(h.quantity),
                entry: float(h.entry()),
                mark: float(h.mark),
                unrealized: float(h.unrealized()),
                stop_loss: None,
                take_profit: None,
            })
            .collect(),
        signals: 0,
        rejected: 0,
        calls: 0,
        traps: 0,
    }
}

/// Parameters as a book records them: `fast=5, slow=20`.
fn shown_params(params: &keel_model::Params) -> String {
    let pairs: Vec<String> = params
        .values()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join(", ")
}

pub(super) fn open_slot(
    conn: &Connection,
    sandbox: &Sandbox,
    settings: &RunSettings,
    run_id: i64,
    plan: BookPlan<'_>,
) -> anyhow::Result<Slot> {
    let BookPlan {
        slot,
        symbols,
        strategy,
        params,
        candidate,
    } = plan;
    conn.execute(
        "INSERT OR IGNORE INTO artifacts (hash, name, version, contract, size, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![strategy.hash.to_hex(), strategy.info.name, strategy.info.version, strategy.contract, strategy.size as i64, now_ms()],
    )?;
    let start = dec(settings.cash)?;
    conn.execute(
        "INSERT OR IGNORE INTO books (run_id, slot, artifact_hash, params, start_cash, cash, realized, fees, peak_equity, day_ms, day_start_equity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, '0', '0', ?5, -1, ?5)",
        params![run_id, slot, strategy.hash.to_hex(), shown_params(&params), start.to_string()],
    )?;
    conn.execute(
        "UPDATE books SET artifact_hash = ?3 WHERE run_id = ?1 AND slot = ?2",
        params![run_id, slot, strategy.hash.to_hex()],
    )?;
    type Row = (i64, String, String, String, String, String, i64, String);
    let (id, start_cash, cash, realized, fees, peak, day, day_start): Row = conn.query_row(
        "SELECT id, start_cash, cash, realized, fees, peak_equity, day_ms, day_start_equity FROM books WHERE run_id = ?1 AND slot = ?2",
        params![run_id, slot],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
    )?;
    let ledger = stored_ledger(conn, id, [&start_cash, &cash, &realized, &fees])?;
    ledger
        .check()
        .map_err(|e| anyhow!("book {slot}: the stored ledger does not add up: {e}"))?;
    let sees = settings
        .symbols
        .iter()
        .map(|s| symbols.contains(s))
        .collect();
    let binding = Binding {
        symbols: symbols.clone(),
        params,
        simulated_clock: false,
        seed: id as u64,
    };
    let instance = sandbox
        .instantiate(strategy, binding)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Slot {
        id,
        slot,
        hash: strategy.hash,
        instance,
        symbols,
        sees,
        book: Book::new(float(d(&start_cash))),
        ledger,
        peak: d(&peak),
        day,
        day_start: d(&day_start),
        signals: 0,
        rejected: 0,
        candidate,
        returns: Returns::default(),
        active_returns: Returns::default(),
        equity_peak: float(d(&start_cash)),
        max_drawdown_pct: 0.0,
        last_equity: None,
        trades: 0,
        promoted_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharpe_of_per_bar_returns() {
        struct Case {
            name: &'static str,
            returns: &'static [f64],
            sharpe: Option<f64>,
        }
        let cases = [
            Case {
                name: "no return yet",
                returns: &[],
                sharpe: None,
            },
            Case {
                name: "one return",
                returns: &[0.01],
                sharpe: None,
            },
            Case {
                name: "flat: zero, not unknown",
                returns: &[0.0, 0.0, 0.0],
                sharpe: Some(0.0),
            },
            Case {
                name: "a constant gain has no deviation to divide by",
                returns: &[0.01, 0.01],
                sharpe: None,
            },
            Case {
                name: "mean over sample standard deviation",
                returns: &[0.01, 0.03],
                sharpe: Some(0.02 / 0.0002_f64.sqrt()),
            },
            Case {
                name: "gains and losses that cancel",
                returns: &[0.01, -0.01, 0.03, -0.03],
                sharpe: Some(0.0),
            },
        ];
        for case in cases {
            let mut returns = Returns::default();
            for r in case.returns {
                returns.push(*r);
            }
            match (returns.sharpe(), case.sharpe) {
                (Some(got), Some(want)) => {
                    assert!((got - want).abs() < 1e-12, "{}: {got}", case.name)
                }
                (got, want) => assert_eq!(got, want, "{}", case.name),
            }
        }
    }
}
