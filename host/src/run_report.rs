//! A paper or live run's record, read from its ledger: what `keel report
//! run` writes as one self-contained HTML page (the backtest report's
//! pieces, `keel_backtester::html`), and what `keel run` says when it
//! ends — each book's strategy, return, drawdown and trades, and each
//! candidate in shadow with its verdict.

use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};

use keel_backtester::html::{self, escape};
use keel_model::candles::format_time;
use keel_model::shown::{fixed, text};

/// How many trades, signals refused and risk events a report lists.
const LISTED: i64 = 500;

/// One closed trade of a book.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeRow {
    pub symbol: String,
    pub tag: String,
    pub side: String,
    pub quantity: f64,
    pub entry: f64,
    pub exit: f64,
    pub opened_ms: i64,
    pub closed_ms: i64,
    /// Net of fees.
    pub pnl: f64,
    pub fees: f64,
    pub exit_reason: String,
    /// The stop-loss and take-profit of the order that opened it (or last
    /// added to it), where set.
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
}

/// The stop-loss or take-profit (`level`) of the last order that opened
/// or added to a trade `t` before it closed.
macro_rules! order_level {
    ($level:literal) => {
        concat!(
            "(SELECT o.",
            $level,
            " FROM orders o WHERE o.book_id = t.book_id AND o.symbol = t.symbol AND o.tag = t.tag
               AND o.action LIKE 'open-%' AND o.signal_time_ms <= t.opened_ms
             ORDER BY o.signal_time_ms DESC, o.rowid DESC LIMIT 1)"
        )
    };
}

/// A candidate that traded in shadow, and what its paper gate said.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    pub candidate: i64,
    pub state: String,
    /// `pass` or `fail`; `None` while it has not been judged.
    pub verdict: Option<String>,
    pub detail: Option<String>,
}

/// One book of a run, as its ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BookRecord {
    pub slot: String,
    /// `name version`.
    pub strategy: String,
    pub hash: String,
    pub params: String,
    pub shadow: Option<Shadow>,
    pub start_cash: f64,
    pub cash: f64,
    pub fees: f64,
    /// `[close time, equity]` at every close booked.
    pub curve: Vec<(i64, f64)>,
    /// The newest `LISTED`, oldest first; `trades` counts them all.
    pub trades: Vec<TradeRow>,
    pub trade_count: i64,
    pub wins: i64,
    pub net_pnl: f64,
    pub open_positions: Vec<(String, String, f64, f64)>,
    pub signals: i64,
    /// Refused signals by reason, most frequent first.
    pub refused: Vec<(String, i64)>,
}

impl BookRecord {
    pub fn equity(&self) -> f64 {
        self.curve.last().map_or(self.cash, |&(_, e)| e)
    }

    pub fn return_pct(&self) -> f64 {
        match self.start_cash {
            s if s > 0.0 => (self.equity() - s) / s * 100.0,
            _ => 0.0,
        }
    }

    /// The deepest fall of equity from its running peak, percent.
    pub fn max_drawdown_pct(&self) -> f64 {
        deepest_drawdown_pct(self.curve.iter().map(|&(_, e)| e))
    }
}

/// The deepest fall of an equity series from its running peak, percent:
/// what a run's report and API v1's performance both call its drawdown.
pub fn deepest_drawdown_pct(equities: impl IntoIterator<Item = f64>) -> f64 {
    let mut peak = f64::MIN;
    equities.into_iter().fold(0.0, |deepest: f64, e| {
        peak = peak.max(e);
        match peak {
            p if p > 0.0 => deepest.max((p - e) / p * 100.0),
            _ => deepest,
        }
    })
}

/// A run, as its ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub mode: String,
    pub feed: String,
    pub status: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub last_close_ms: Option<i64>,
    /// The account's trading state now, and why.
    pub state: (String, String),
    pub books: Vec<BookRecord>,
    /// `(time, kind, detail)`, oldest first.
    pub risk_events: Vec<(i64, String, String)>,
    /// Each symbol's closes as the run booked them, `[close time, close]`.
    pub prices: Vec<(String, Vec<(i64, f64)>)>,
}

/// Run `run` (the last one when `None`) of the database at `db`, read
/// without writing.
pub fn load(db: &Path, run: Option<i64>) -> anyhow::Result<RunRecord> {
    let conn = crate::store::open_record(db)?;
    let mut record = read(&conn, run).with_context(|| format!("{}", db.display()))?;
    // `running` with no process serving it: it ended without a word.
    if record.status == "running" && crate::control::serving_pid(db).is_none() {
        record.status =
            "ended without a word: killed or crashed; `keel run` with the same settings resumes it"
                .into();
    }
    Ok(record)
}

/// Run `run` (the last one when `None`) from `conn`.
pub fn read(conn: &Connection, run: Option<i64>) -> anyhow::Result<RunRecord> {
    let id: i64 = match run {
        Some(id) => id,
        None => conn
            .query_row("SELECT MAX(id) FROM runs", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .context("no run has been booked in this database yet")?,
    };
    type Run = (String, String, String, i64, Option<i64>, Option<i64>);
    let row: Option<Run> = conn
        .query_row(
            "SELECT mode, feed, status, started_ms, ended_ms, cursor_ms FROM runs WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()?;
    let Some((mode, feed, status, started_ms, ended_ms, last_close_ms)) = row else {
        let last: Option<i64> = conn.query_row("SELECT MAX(id) FROM runs", [], |r| r.get(0))?;
        match last {
            Some(last) => bail!("run {id}: no such run (the runs here are 1 to {last})"),
            None => bail!("run {id}: no run has been booked in this database yet"),
        }
    };
    let (state, reason) = crate::engine::load_state(conn)?;
    let state = (state.as_str().to_owned(), reason);
    let mut books = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT b.id, b.slot, b.artifact_hash, COALESCE(a.name || ' ' || a.version, '?'), b.params,
             CAST(b.start_cash AS REAL), CAST(b.cash AS REAL), CAST(b.fees AS REAL)
         FROM books b LEFT JOIN artifacts a ON a.hash = b.artifact_hash
         WHERE b.run_id = ?1 ORDER BY b.id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            BookRecord {
                slot: r.get(1)?,
                hash: r.get(2)?,
                strategy: r.get(3)?,
                params: r.get(4)?,
                shadow: None,
                start_cash: r.get(5)?,
                cash: r.get(6)?,
                fees: r.get(7)?,
                curve: Vec::new(),
                trades: Vec::new(),
                trade_count: 0,
                wins: 0,
                net_pnl: 0.0,
                open_positions: Vec::new(),
                signals: 0,
                refused: Vec::new(),
            },
        ))
    })?;
    for row in rows {
        let (book_id, mut book) = row?;
        fill_book(conn, book_id, &mut book)?;
        books.push(book);
    }
    let (first, last) = (started_ms, ended_ms.unwrap_or(i64::MAX));
    let risk_events = conn
        .prepare(
            "SELECT time_ms, kind, detail FROM risk_events WHERE time_ms BETWEEN ?1 AND ?2
             ORDER BY id DESC LIMIT ?3",
        )?
        .query_map(params![first, last, LISTED], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .rev()
        .collect();
    let mut prices: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT symbol, close_ms, close FROM run_bars WHERE run_id = ?1 ORDER BY symbol, close_ms",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, f64>(2)?,
        ))
    })?;
    for row in rows {
        let (symbol, t, close) = row?;
        match prices.last_mut() {
            Some((s, closes)) if *s == symbol => closes.push((t, close)),
            _ => prices.push((symbol, vec![(t, close)])),
        }
    }
    Ok(RunRecord {
        id,
        mode,
        feed,
        status,
        started_ms,
        ended_ms,
        last_close_ms,
        state,
        books,
        risk_events,
        prices,
    })
}

fn fill_book(conn: &Connection, book_id: i64, book: &mut BookRecord) -> rusqlite::Result<()> {
    book.curve = conn
        .prepare_cached(
            "SELECT time_ms, CAST(equity AS REAL) FROM equity_snapshots WHERE book_id = ?1 ORDER BY time_ms",
        )?
        .query_map([book_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    (book.trade_count, book.wins, book.net_pnl) = conn.query_row(
        "SELECT COUNT(*),
             COALESCE(SUM(CAST(pnl_gross AS REAL) - CAST(fees AS REAL) > 0), 0),
             COALESCE(SUM(CAST(pnl_gross AS REAL) - CAST(fees AS REAL)), 0)
         FROM trades WHERE book_id = ?1",
        [book_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut trades: Vec<TradeRow> = conn
        .prepare_cached(
            concat!(
                "SELECT symbol, tag, side, CAST(quantity AS REAL), CAST(price_entry AS REAL),
                     CAST(price_exit AS REAL), opened_ms, closed_ms,
                     CAST(pnl_gross AS REAL) - CAST(fees AS REAL), CAST(fees AS REAL), exit_reason, ",
                order_level!("stop_loss"),
                ", ",
                order_level!("take_profit"),
                " FROM trades t WHERE book_id = ?1 ORDER BY id DESC LIMIT ?2"
            ),
        )?
        .query_map(params![book_id, LISTED], |r| {
            Ok(TradeRow {
                symbol: r.get(0)?,
                tag: r.get(1)?,
                side: r.get(2)?,
                quantity: r.get(3)?,
                entry: r.get(4)?,
                exit: r.get(5)?,
                opened_ms: r.get(6)?,
                closed_ms: r.get(7)?,
                pnl: r.get(8)?,
                fees: r.get(9)?,
                exit_reason: r.get(10)?,
                stop_loss: r.get(11)?,
                take_profit: r.get(12)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    trades.reverse();
    book.trades = trades;
    book.open_positions = conn
        .prepare_cached(
            "SELECT symbol, side, CAST(quantity AS REAL), CAST(mark AS REAL) FROM positions WHERE book_id = ?1",
        )?
        .query_map([book_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    book.signals = conn.query_row(
        "SELECT COUNT(*) FROM signals WHERE book_id = ?1",
        [book_id],
        |r| r.get(0),
    )?;
    book.refused = conn
        .prepare_cached(
            "SELECT COALESCE(reject_reason, '?'), COUNT(*) AS n FROM signals
             WHERE book_id = ?1 AND decision = 'rejected'
             GROUP BY 1 ORDER BY n DESC, 1 LIMIT 50",
        )?
        .query_map([book_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(candidate) = book
        .slot
        .strip_prefix("candidate-")
        .and_then(|id| id.parse::<i64>().ok())
    {
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM candidates WHERE id = ?1",
                [candidate],
                |r| r.get(0),
            )
            .optional()?;
        let verdict: Option<(String, String)> = conn
            .query_row(
                "SELECT verdict, detail FROM gate_results WHERE candidate_id = ?1 AND gate = 'paper'
                 ORDER BY id DESC LIMIT 1",
                [candidate],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        book.shadow = Some(Shadow {
            candidate,
            state: state.unwrap_or_else(|| "?".into()),
            verdict: verdict.as_ref().map(|v| v.0.clone()),
            detail: verdict.map(|v| v.1),
        });
    }
    Ok(())
}

fn signed_class(x: f64) -> &'static str {
    if x >= 0.0 { "pos" } else { "neg" }
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_owned(), format_time)
}

impl RunRecord {
    /// What a run says when it ends: one line per book, its strategy,
    /// return, drawdown and trades, and a candidate's verdict.
    pub fn summary(&self) -> String {
        self.books
            .iter()
            .map(|b| format!("{}\n", Self::book_line(b)))
            .collect()
    }

    /// One book's line of the summary.
    pub fn book_line(b: &BookRecord) -> String {
        let shadow = match &b.shadow {
            Some(s) => format!(
                "; candidate {} in shadow, {}, paper gate {}",
                s.candidate,
                s.state,
                s.verdict.as_deref().unwrap_or("not judged yet")
            ),
            None => String::new(),
        };
        format!(
            "{} ({}): return {:+.2}%, max drawdown {:.2}%, {} trade(s) ({} won), net P&L {:+.2}, fees {:.2}, {} position(s) open{shadow}",
            text(&b.slot),
            text(&b.strategy),
            b.return_pct(),
            b.max_drawdown_pct(),
            b.trade_count,
            b.wins,
            b.net_pnl,
            b.fees,
            b.open_positions.len(),
        )
    }

    /// The whole report as one HTML page.
    pub fn html(&self) -> String {
        let title = format!("Keel {} run {}", self.mode, self.id);
        let mut page = html::page_start(&title);
        page.push_str(&format!(
            "<p>feed <code>{}</code><br>started {}, last bar booked {}, ended {} ({})<br>\
             trading state now {} — {}</p>\n",
            escape(&self.feed),
            escape(&format_time(self.started_ms)),
            escape(&when(self.last_close_ms)),
            escape(&when(self.ended_ms)),
            escape(&self.status),
            escape(&self.state.0),
            escape(&text(&self.state.1).to_string()),
        ));
        page.push_str(
            "<h2>Books</h2>\n<table><tr><th>book</th><th>strategy</th><th>start</th><th>equity</th>\
             <th>return</th><th>max drawdown</th><th>trades</th><th>win rate</th><th>net P&amp;L</th>\
             <th>fees</th><th>signals</th><th>refused</th><th>shadow verdict</th></tr>\n",
        );
        for b in &self.books {
            let win_rate = match b.trade_count {
                0 => "—".to_owned(),
                n => format!("{:.1}%", b.wins as f64 / n as f64 * 100.0),
            };
            let refused: i64 = b.refused.iter().map(|r| r.1).sum();
            let verdict = b.shadow.as_ref().map_or("—".to_owned(), |s| {
                format!(
                    "candidate {}: {}",
                    s.candidate,
                    s.verdict.as_deref().unwrap_or("not judged yet")
                )
            });
            page.push_str(&format!(
                "<tr><th>{}</th><th>{}</th><td>{}</td><td>{}</td><td class=\"{}\">{:+.2}%</td>\
                 <td>{:.2}%</td><td>{}</td><td>{win_rate}</td><td class=\"{}\">{}</td><td>{}</td>\
                 <td>{}</td><td>{refused}</td><td>{}</td></tr>\n",
                escape(&text(&b.slot).to_string()),
                escape(&text(&b.strategy).to_string()),
                fixed(b.start_cash, 2),
                fixed(b.equity(), 2),
                signed_class(b.return_pct()),
                b.return_pct(),
                b.max_drawdown_pct(),
                b.trade_count,
                signed_class(b.net_pnl),
                fixed(b.net_pnl, 2),
                fixed(b.fees, 2),
                b.signals,
                escape(&verdict),
            ));
        }
        page.push_str("</table>\n");
        for b in &self.books {
            self.book_section(&mut page, b);
        }
        if !self.risk_events.is_empty() {
            page.push_str(&format!(
                "<h2>Risk events ({})</h2>\n<table>\n",
                self.risk_events.len()
            ));
            for (time, kind, detail) in &self.risk_events {
                page.push_str(&format!(
                    "<tr><th>{}</th><th>{}</th><td style=\"text-align:left\">{}</td></tr>\n",
                    escape(&format_time(*time)),
                    escape(kind),
                    escape(&text(detail).to_string())
                ));
            }
            page.push_str("</table>\n");
        }
        page.push_str(html::PAGE_END);
        page
    }

    fn book_section(&self, page: &mut String, b: &BookRecord) {
        page.push_str(&format!(
            "<h2>{} — {}</h2>\n<p class=\"muted\">artifact <code>{}</code>, parameters <code>{}</code></p>\n",
            escape(&text(&b.slot).to_string()),
            escape(&text(&b.strategy).to_string()),
            escape(&b.hash),
            escape(&text(&b.params).to_string()),
        ));
        if let Some(s) = &b.shadow
            && let Some(detail) = &s.detail
        {
            page.push_str(&format!(
                "<p>paper gate: {}</p>\n",
                escape(&text(detail).to_string())
            ));
        }
        page.push_str(&html::equity_chart(&b.curve, &[]));
        page.push_str("<h3>Monthly returns</h3>\n");
        page.push_str(&html::monthly_returns(&b.curve));
        for (symbol, closes) in &self.prices {
            let markers: Vec<html::Marker> = (b.trades.iter())
                .filter(|t| t.symbol == *symbol)
                .flat_map(|t| {
                    let long = t.side == "long";
                    [
                        html::Marker {
                            time_ms: t.opened_ms,
                            price: t.entry,
                            entry: true,
                            long,
                        },
                        html::Marker {
                            time_ms: t.closed_ms,
                            price: t.exit,
                            entry: false,
                            long,
                        },
                    ]
                })
                .collect();
            let levels: Vec<html::Level> = (b.trades.iter())
                .filter(|t| t.symbol == *symbol)
                .flat_map(|t| html::Level::of(t.opened_ms, t.closed_ms, t.stop_loss, t.take_profit))
                .collect();
            if !markers.is_empty() {
                page.push_str(&html::price_chart(symbol, closes, &markers, &levels));
            }
        }
        let returns: Vec<f64> = (b.trades.iter())
            .map(|t| match t.entry * t.quantity {
                cost if cost > 0.0 => t.pnl / cost * 100.0,
                _ => 0.0,
            })
            .collect();
        page.push_str("<h3>Distribution of trade returns</h3>\n");
        page.push_str(&html::histogram(&returns));
        if !b.open_positions.is_empty() {
            page.push_str("<h3>Open at the end</h3>\n<table><tr><th>symbol</th><th>side</th><th>quantity</th><th>mark</th></tr>\n");
            for (symbol, side, quantity, mark) in &b.open_positions {
                page.push_str(&format!(
                    "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    escape(&text(symbol).to_string()),
                    escape(side),
                    fixed(*quantity, 8),
                    fixed(*mark, 8)
                ));
            }
            page.push_str("</table>\n");
        }
        let shown = match b.trade_count > b.trades.len() as i64 {
            true => format!(", the last {}", b.trades.len()),
            false => String::new(),
        };
        page.push_str(&format!(
            "<h3>Trades ({}{shown})</h3>\n<table><tr><th>symbol</th><th>tag</th><th>side</th><th>opened</th>\
             <th>closed</th><th>quantity</th><th>entry</th><th>exit</th><th>return</th><th>net P&amp;L</th>\
             <th>fees</th><th>exit by</th></tr>\n",
            b.trade_count
        ));
        for t in &b.trades {
            let cost = t.entry * t.quantity;
            let ret = if cost > 0.0 {
                t.pnl / cost * 100.0
            } else {
                0.0
            };
            page.push_str(&format!(
                "<tr><th>{}</th><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"{}\">{:+.2}%</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&text(&t.symbol).to_string()),
                escape(&text(&t.tag).to_string()),
                escape(&t.side),
                escape(&format_time(t.opened_ms)),
                escape(&format_time(t.closed_ms)),
                fixed(t.quantity, 8),
                fixed(t.entry, 8),
                fixed(t.exit, 8),
                signed_class(ret),
                ret,
                signed_class(t.pnl),
                fixed(t.pnl, 2),
                fixed(t.fees, 2),
                escape(&t.exit_reason),
            ));
        }
        page.push_str("</table>\n");
        if !b.refused.is_empty() {
            page.push_str("<h3>Signals refused, by reason</h3>\n<table>\n");
            for (reason, n) in &b.refused {
                page.push_str(&format!(
                    "<tr><td>{n}</td><td style=\"text-align:left\">{}</td></tr>\n",
                    escape(&text(reason).to_string())
                ));
            }
            page.push_str("</table>\n");
        }
    }
}
