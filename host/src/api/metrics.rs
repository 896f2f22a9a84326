//! `/metrics`: the engine's snapshot in Prometheus' text format.

use crate::control::{Snapshot, SnapshotBook};

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
    out
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
}
