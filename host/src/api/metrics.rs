//! `/metrics`: the engine's snapshot in Prometheus' text format (books,
//! positions, the feed, the venue, the trading state), and what the ledger
//! keeps of the candidates and the nightly evolution (`ledger_metrics`).
//! `examples/grafana-dashboard.json` charts them.

use rusqlite::Connection;

use crate::control::{Snapshot, SnapshotBook, SnapshotPosition};

/// The snapshot in Prometheus' text format.
pub fn metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let per_book = |f: &dyn Fn(&SnapshotBook) -> f64| -> Vec<(String, f64)> {
        s.books
            .iter()
            .map(|b| (format!("{{book=\"{}\"}}", label(&b.slot)), f(b)))
            .collect()
    };
    gauge(
        "keel_equity",
        "Book equity, quote currency.",
        "gauge",
        per_book(&|b| b.equity),
    );
    gauge(
        "keel_drawdown_pct",
        "Book drawdown from its peak, percent.",
        "gauge",
        per_book(&|b| b.drawdown_pct),
    );
    gauge(
        "keel_cash",
        "Book cash, quote currency.",
        "gauge",
        per_book(&|b| b.cash),
    );
    gauge(
        "keel_realized_pnl",
        "Book realised profit and loss, quote currency.",
        "gauge",
        per_book(&|b| b.realized),
    );
    gauge(
        "keel_fees_total",
        "Fees the book has paid, quote currency.",
        "counter",
        per_book(&|b| b.fees),
    );
    let per_position = |f: &dyn Fn(&SnapshotPosition) -> f64| -> Vec<(String, f64)> {
        s.books
            .iter()
            .flat_map(|b| {
                b.positions.iter().map(move |p| {
                    let labels = format!(
                        "{{book=\"{}\",symbol=\"{}\",tag=\"{}\",side=\"{}\"}}",
                        label(&b.slot),
                        label(&p.symbol),
                        label(&p.tag),
                        label(&p.side)
                    );
                    (labels, f(p))
                })
            })
            .collect()
    };
    gauge(
        "keel_position_quantity",
        "Open position size, base currency.",
        "gauge",
        per_position(&|p| p.quantity),
    );
    gauge(
        "keel_position_unrealized_pnl",
        "Open position's unrealised profit and loss at its mark, quote currency.",
        "gauge",
        per_position(&|p| p.unrealized),
    );
    gauge(
        "keel_position_mark",
        "Open position's mark price.",
        "gauge",
        per_position(&|p| p.mark),
    );
    gauge(
        "keel_open_positions",
        "Open positions per book.",
        "gauge",
        per_book(&|b| b.positions.len() as f64),
    );
    gauge(
        "keel_strategy_calls_total",
        "Calls into the strategy.",
        "counter",
        per_book(&|b| b.calls as f64),
    );
    gauge(
        "keel_strategy_traps_total",
        "Calls the sandbox stopped.",
        "counter",
        per_book(&|b| b.traps as f64),
    );
    gauge(
        "keel_signals_rejected_total",
        "Signals refused by the sandbox or the risk manager.",
        "counter",
        per_book(&|b| b.rejected as f64),
    );
    gauge(
        "keel_bars_total",
        "Bars booked by this process.",
        "counter",
        vec![(String::new(), s.bars as f64)],
    );
    gauge(
        "keel_feed_last_bar_seconds",
        "Open time of the feed's last bar, Unix seconds (0: none yet).",
        "gauge",
        vec![(
            String::new(),
            s.feed_health
                .last_bar_ms
                .map_or(0.0, |ms| ms as f64 / 1000.0),
        )],
    );
    gauge(
        "keel_feed_consecutive_failures",
        "Feed polls in a row that failed.",
        "gauge",
        vec![(String::new(), f64::from(s.feed_health.consecutive_failures))],
    );
    gauge(
        "keel_trading_state",
        "1 for the account's current trading state.",
        "gauge",
        ["ACTIVE", "REDUCE_ONLY", "HALTED"]
            .iter()
            .map(|st| {
                (
                    format!("{{state=\"{st}\"}}"),
                    f64::from(u8::from(s.state == *st)),
                )
            })
            .collect(),
    );
    if let Some(v) = &s.venue {
        let venue = format!("{{venue=\"{}\"}}", label(&v.venue));
        gauge(
            "keel_venue_reconciled",
            "1 when the last reconciliation found the venue and the ledger in agreement.",
            "gauge",
            vec![(venue.clone(), f64::from(u8::from(v.reconciled)))],
        );
        gauge(
            "keel_venue_unknown_orders",
            "Orders sent whose outcome is not known yet.",
            "gauge",
            vec![(venue.clone(), v.unknown_orders as f64)],
        );
        gauge(
            "keel_venue_rest_headroom",
            "Share of the venue's REST rate limit still free (0 to 1).",
            "gauge",
            vec![(venue, v.rest_headroom)],
        );
    }
    out
}

/// The candidates and the nightly evolution, from the ledger.
pub fn ledger_metrics(conn: &Connection) -> rusqlite::Result<String> {
    let mut out = String::from(
        "# HELP keel_candidate_state 1 for each candidate (the newest 100) in its current state.\n\
         # TYPE keel_candidate_state gauge\n",
    );
    let mut stmt =
        conn.prepare("SELECT id, name, version, state FROM candidates ORDER BY id DESC LIMIT 100")?;
    let candidates = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for candidate in candidates {
        let (id, name, version, state) = candidate?;
        out.push_str(&format!(
            "keel_candidate_state{{id=\"{id}\",name=\"{}\",version=\"{}\",state=\"{}\"}} 1\n",
            label(&name),
            label(&version),
            label(&state)
        ));
    }
    let mut gates = conn.prepare(
        "SELECT candidate_id, gate, verdict FROM gate_results g
         WHERE id = (SELECT MAX(id) FROM gate_results h
                     WHERE h.candidate_id = g.candidate_id AND h.gate = g.gate)
           AND candidate_id IN (SELECT id FROM candidates ORDER BY id DESC LIMIT 100)",
    )?;
    let verdicts = gates
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    out.push_str(
        "# HELP keel_candidate_gate_passed 1 when a candidate's latest result at a gate passed, 0 when it failed.\n\
         # TYPE keel_candidate_gate_passed gauge\n",
    );
    for (id, gate, verdict) in verdicts {
        out.push_str(&format!(
            "keel_candidate_gate_passed{{id=\"{id}\",gate=\"{}\"}} {}\n",
            label(&gate),
            u8::from(verdict == "pass")
        ));
    }
    let night: Option<(i64, Option<i64>, String, f64, i64)> = conn
        .query_row(
            "SELECT started_ms, ended_ms, status, COALESCE(usd, 0), COALESCE(tokens, 0)
             FROM evolve_nights ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let (started, ended, status, usd, tokens) = night.unwrap_or((0, None, String::new(), 0.0, 0));
    for (name, help, value) in [
        (
            "keel_evolution_last_night_start_seconds",
            "When the last night started, Unix seconds (0: none yet).",
            started as f64 / 1000.0,
        ),
        (
            "keel_evolution_last_night_end_seconds",
            "When the last night ended, Unix seconds (0: not ended or none).",
            ended.unwrap_or(0) as f64 / 1000.0,
        ),
        (
            "keel_evolution_last_night_usd",
            "What the last night spent on models, USD.",
            usd,
        ),
        (
            "keel_evolution_last_night_tokens",
            "Tokens the last night used.",
            tokens as f64,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    out.push_str(
        "# HELP keel_evolution_last_night_status 1 for the last night's status.\n\
         # TYPE keel_evolution_last_night_status gauge\n",
    );
    if !status.is_empty() {
        out.push_str(&format!(
            "keel_evolution_last_night_status{{status=\"{}\"}} 1\n",
            label(&status)
        ));
    }
    Ok(out)
}

/// A label value as Prometheus' text format escapes it.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_feed_health_is_exported() {
        let snapshot = Snapshot {
            books: vec![SnapshotBook {
                slot: "a\"b\\c\nd".into(),
                strategy: String::new(),
                symbols: vec![],
                start_cash: 0.0,
                cash: 0.0,
                equity: 1.0,
                realized: 0.0,
                fees: 0.0,
                drawdown_pct: 0.0,
                positions: vec![],
                signals: 0,
                rejected: 0,
                calls: 0,
                traps: 0,
            }],
            feed_health: crate::control::FeedHealth {
                last_bar_ms: Some(60_000),
                consecutive_failures: 3,
                last_error: Some("timeout".into()),
            },
            ..Snapshot::default()
        };
        let text = metrics(&snapshot);
        assert!(
            text.contains("keel_equity{book=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("keel_feed_last_bar_seconds 60\n"), "{text}");
        assert!(
            text.contains("keel_feed_consecutive_failures 3\n"),
            "{text}"
        );
    }

    #[test]
    fn positions_candidates_and_the_last_night_are_exported() {
        let position = SnapshotPosition {
            symbol: "ETH/USD".into(),
            tag: "swing".into(),
            side: "long".into(),
            quantity: 2.5,
            entry: 100.0,
            mark: 110.0,
            unrealized: 25.0,
            stop_loss: Some(90.0),
            take_profit: None,
        };
        let snapshot = Snapshot {
            books: vec![SnapshotBook {
                slot: "main".into(),
                strategy: String::new(),
                symbols: vec![],
                start_cash: 0.0,
                cash: 5.0,
                equity: 1.0,
                realized: -2.0,
                fees: 0.5,
                drawdown_pct: 0.0,
                positions: vec![position],
                signals: 0,
                rejected: 0,
                calls: 0,
                traps: 0,
            }],
            ..Snapshot::default()
        };
        let text = metrics(&snapshot);
        let at = "{book=\"main\",symbol=\"ETH/USD\",tag=\"swing\",side=\"long\"}";
        assert!(
            text.contains(&format!("keel_position_quantity{at} 2.5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("keel_position_unrealized_pnl{at} 25\n")),
            "{text}"
        );
        assert!(
            text.contains("keel_realized_pnl{book=\"main\"} -2\n"),
            "{text}"
        );

        let dir = tempfile::tempdir().expect("dir");
        let mut store = crate::store::Store::open(&dir.path().join("k.db")).expect("store");
        let conn: &Connection = store.conn();
        assert!(
            ledger_metrics(conn)
                .expect("empty ledger")
                .contains("keel_evolution_last_night_usd 0\n")
        );
        conn.execute_batch(
            "INSERT INTO artifact_blobs (hash, bytes, size, stored_ms) VALUES ('h', x'00', 1, 0);
             INSERT INTO candidates (id, hash, name, version, submitted_by, note, source, state, created_ms)
                 VALUES (7, 'h', 'x\"y', '1.0.0', 'evolution', '', 's', 'gated', 0);
             INSERT INTO gate_results (candidate_id, gate, verdict, figures, detail, time_ms)
                 VALUES (7, 'backtest', 'fail', '{}', '', 0), (7, 'backtest', 'pass', '{}', '', 1);
             INSERT INTO evolve_nights (started_ms, ended_ms, status, providers, usd, tokens, settings)
                 VALUES (1000, 61000, 'finished', 'offline', 0.25, 1200, '{}');",
        )
        .expect("rows");
        let text = ledger_metrics(conn).expect("ledger");
        assert!(
            text.contains(
                "keel_candidate_state{id=\"7\",name=\"x\\\"y\",version=\"1.0.0\",state=\"gated\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("keel_candidate_gate_passed{id=\"7\",gate=\"backtest\"} 1\n"),
            "the latest verdict counts: {text}"
        );
        assert!(
            text.contains("keel_evolution_last_night_usd 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("keel_evolution_last_night_end_seconds 61\n"),
            "{text}"
        );
        assert!(
            text.contains("keel_evolution_last_night_status{status=\"finished\"} 1\n"),
            "{text}"
        );
    }

    /// Every series the sample Grafana dashboard charts is one this
    /// server exports.
    #[test]
    fn the_grafana_example_charts_only_exported_series() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../examples/grafana-dashboard.json"))
                .expect("examples/grafana-dashboard.json is JSON");
        let mut charted = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(at) = rest.find("keel_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    charted.insert(name);
                }
            }
        }
        assert!(charted.len() > 15, "{charted:?}");
        let snapshot = Snapshot {
            venue: Some(crate::venues::kraken::VenueHealth::default()),
            ..Snapshot::default()
        };
        let dir = tempfile::tempdir().expect("dir");
        let mut store = crate::store::Store::open(&dir.path().join("k.db")).expect("store");
        let exported = metrics(&snapshot) + &ledger_metrics(store.conn()).expect("ledger");
        for name in charted {
            assert!(
                exported.contains(&format!("# TYPE {name} ")),
                "the dashboard charts {name}, which /metrics does not export"
            );
        }
    }
}
