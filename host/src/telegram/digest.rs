//! Notifications: the activity log's events (`store::events`) of the kinds
//! in `notify`, as one message per round. Many events at once are
//! summarised ("12 fills: the first few, … 7 more, the last") rather than
//! queued, so a burst costs one message and the memory held is a few
//! lines per kind whatever arrives.

use keel_model::shown;
use serde_json::Value;

use super::replies::time;
use crate::store::events::{Event, Kind};

/// Lines kept of a kind's first events; with the last, at most this many
/// plus one are shown.
const FIRST: usize = 4;

/// The kinds in the order a message lists them: what stops trading first.
const ORDER: [Kind; 10] = [
    Kind::Halt,
    Kind::State,
    Kind::Risk,
    Kind::Fill,
    Kind::Order,
    Kind::Signal,
    Kind::Candidate,
    Kind::Evolution,
    Kind::Bar,
    Kind::Audit,
];

#[derive(Debug, Clone)]
struct Section {
    kind: Kind,
    count: usize,
    first: Vec<String>,
    last: Option<String>,
}

/// One round's events of the notified kinds, summarised.
#[derive(Debug, Clone)]
pub struct Digest {
    sections: Vec<Section>,
}

impl Digest {
    pub fn new(notify: &[Kind]) -> Digest {
        let sections = ORDER
            .into_iter()
            .filter(|k| notify.contains(k))
            .map(|kind| Section {
                kind,
                count: 0,
                first: Vec::new(),
                last: None,
            })
            .collect();
        Digest { sections }
    }

    /// Takes `event` in, if its kind is notified.
    pub fn add(&mut self, event: &Event) {
        let Some(kind) = Kind::parse(&event.kind) else {
            return;
        };
        let Some(section) = self.sections.iter_mut().find(|s| s.kind == kind) else {
            return;
        };
        let line = line(kind, &event.data, event.time_ms);
        section.count += 1;
        if section.first.len() < FIRST {
            section.first.push(line);
        } else {
            section.last = Some(line);
        }
    }

    /// The message, if anything was taken in.
    pub fn text(&self) -> Option<String> {
        let mut parts = Vec::new();
        for s in self.sections.iter().filter(|s| s.count > 0) {
            let mut part = match s.count {
                1 => format!("{}: {}", s.kind.as_str(), s.first.concat()),
                n => format!("{n} {}:\n{}", plural(s.kind), s.first.join("\n")),
            };
            let shown = s.first.len() + usize::from(s.last.is_some());
            if s.count > shown {
                part.push_str(&format!("\n… {} more", s.count - shown));
            }
            if let Some(last) = &s.last {
                part.push('\n');
                part.push_str(last);
            }
            parts.push(part);
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Bar => "bars",
        Kind::Signal => "signals",
        Kind::Order => "orders",
        Kind::Fill => "fills",
        Kind::Risk => "risk events",
        Kind::Halt => "halts",
        Kind::State => "state changes",
        Kind::Candidate => "candidate changes",
        Kind::Evolution => "evolution steps",
        Kind::Audit => "audit lines",
    }
}

/// `data[key]` as text fit to show, empty when absent.
fn field(data: &Value, key: &str) -> String {
    match &data[key] {
        Value::Null => String::new(),
        Value::String(s) => shown::text(s).to_string(),
        other => shown::text(&other.to_string()).to_string(),
    }
}

/// `: why` when there is a why.
fn because(data: &Value, key: &str) -> String {
    match field(data, key) {
        why if why.is_empty() => String::new(),
        why => format!(": {why}"),
    }
}

/// One event as one line, from the data its writer gives it.
fn line(kind: Kind, d: &Value, time_ms: i64) -> String {
    match kind {
        Kind::Fill => format!(
            "{} {} {} {} @ {} (fee {})",
            field(d, "book"),
            field(d, "action"),
            field(d, "quantity"),
            field(d, "symbol"),
            field(d, "price"),
            field(d, "fee"),
        ),
        Kind::Halt => format!("trading HALTED{}", because(d, "reason")),
        Kind::State => format!(
            "trading state {} (by {}){}",
            field(d, "state"),
            field(d, "actor"),
            because(d, "reason")
        ),
        Kind::Risk => format!("{}{}", field(d, "kind"), because(d, "detail")),
        Kind::Order => format!(
            "order {} {} {} {}{}",
            field(d, "id"),
            field(d, "state"),
            field(d, "action"),
            field(d, "symbol"),
            because(d, "reason"),
        ),
        Kind::Signal => format!(
            "{} {} {} size {}: {}{}",
            field(d, "book"),
            field(d, "action"),
            field(d, "symbol"),
            field(d, "size"),
            field(d, "decision"),
            because(d, "reject_reason"),
        ),
        Kind::Candidate => {
            let named = match field(d, "name") {
                name if name.is_empty() => String::new(),
                name => format!(" {name} {}", field(d, "version")),
            };
            format!(
                "candidate #{}{named} {} (by {}){}",
                field(d, "id"),
                field(d, "state"),
                field(d, "actor"),
                because(d, "reason"),
            )
        }
        Kind::Evolution => evolution(d),
        Kind::Bar => {
            let closes: Vec<String> = d["bars"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .take(4)
                .map(|b| format!("{} {}", field(b, "symbol"), field(b, "close")))
                .collect();
            let at = d["close_ms"].as_i64().unwrap_or(time_ms);
            format!("close {}: {}", time(at), closes.join(", "))
        }
        Kind::Audit => format!(
            "{}: {}{}",
            field(d, "actor"),
            field(d, "action"),
            because(d, "detail")
        ),
    }
}

/// A night started or ended (with its decision and spend), or one step.
fn evolution(d: &Value) -> String {
    let night = field(d, "night");
    if d.get("step").is_some() {
        let ok = if d["ok"] == true { "ok" } else { "failed" };
        return format!(
            "night {night} step {} {} ({}): {ok}, {} tokens, ${}",
            field(d, "step"),
            field(d, "kind"),
            field(d, "actor"),
            field(d, "tokens"),
            shown::fixed(d["usd"].as_f64().unwrap_or(0.0), 4),
        );
    }
    match d["status"].as_str() {
        Some("running") => format!("night {night} started ({})", field(d, "providers")),
        _ => format!(
            "night {night} {}: decision {}{}; {} tokens, ${}",
            field(d, "status"),
            match field(d, "decision") {
                decision if decision.is_empty() => "none".into(),
                decision => decision,
            },
            because(d, "note"),
            field(d, "tokens"),
            shown::fixed(d["usd"].as_f64().unwrap_or(0.0), 2),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: Kind, data: Value) -> Event {
        Event {
            id: 1,
            time_ms: 0,
            kind: kind.as_str().into(),
            data,
        }
    }

    fn fill(n: usize) -> Event {
        event(
            Kind::Fill,
            json!({"book": "sma-cross#1", "action": "open-long", "quantity": format!("0.{n}"),
                "symbol": "BTC/USD", "price": "101.5", "fee": "0.01"}),
        )
    }

    #[test]
    fn one_event_is_one_line_and_unnotified_kinds_are_dropped() {
        let mut digest = Digest::new(&[Kind::Fill, Kind::Halt]);
        digest.add(&event(Kind::Bar, json!({"bars": []})));
        assert_eq!(digest.text(), None);
        digest.add(&fill(1));
        assert_eq!(
            digest.text().as_deref(),
            Some("fill: sma-cross#1 open-long 0.1 BTC/USD @ 101.5 (fee 0.01)")
        );
    }

    #[test]
    fn a_burst_is_summarised_and_halts_come_first() {
        let mut digest = Digest::new(&[Kind::Fill, Kind::Halt]);
        for n in 1..=12 {
            digest.add(&fill(n));
        }
        digest.add(&event(
            Kind::Halt,
            json!({"book_id": null, "reason": "drawdown 12%"}),
        ));
        let text = digest.text().expect("text");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "halt: trading HALTED: drawdown 12%");
        assert_eq!(lines[2], "12 fills:");
        assert_eq!(lines.len(), 2 + 1 + FIRST + 2, "{text}");
        assert!(lines[3].contains("0.1 BTC/USD"));
        assert_eq!(lines[7], "… 7 more");
        assert!(
            lines[8].contains("0.12 BTC/USD"),
            "the last is shown: {text}"
        );
        // Memory stays a few lines per kind whatever arrives.
        for n in 0..10_000 {
            digest.add(&fill(n));
        }
        assert!(digest.sections.iter().all(|s| s.first.len() <= FIRST));
    }

    #[test]
    fn every_kind_reads_as_a_line_from_its_writers_data() {
        let cases = [
            (
                Kind::State,
                json!({"state": "REDUCE_ONLY", "actor": "operator", "reason": "telegram user 7"}),
                "trading state REDUCE_ONLY (by operator): telegram user 7",
            ),
            (
                Kind::Candidate,
                json!({"id": 3, "state": "submitted", "name": "sma", "version": "0.2.0", "actor": "evolution"}),
                "candidate #3 sma 0.2.0 submitted (by evolution)",
            ),
            (
                Kind::Candidate,
                json!({"id": 3, "state": "rejected", "actor": "gate", "reason": "backtest failed"}),
                "candidate #3 rejected (by gate): backtest failed",
            ),
            (
                Kind::Evolution,
                json!({"night": 5, "status": "running", "providers": "offline"}),
                "night 5 started (offline)",
            ),
            (
                Kind::Evolution,
                json!({"night": 5, "status": "finished", "decision": "create", "note": "", "usd": 0.5, "tokens": 900}),
                "night 5 finished: decision create; 900 tokens, $0.50",
            ),
            (
                Kind::Evolution,
                json!({"night": 5, "step": 2, "kind": "author", "actor": "openai", "ok": true, "tokens": 10, "usd": 0.001}),
                "night 5 step 2 author (openai): ok, 10 tokens, $0.0010",
            ),
            (
                Kind::Risk,
                json!({"kind": "kill", "detail": "kill switch: x"}),
                "kill: kill switch: x",
            ),
            (
                Kind::Bar,
                json!({"close_ms": 60_000, "bars": [{"symbol": "BTC/USD", "close": 101.5}]}),
                "close 1970-01-01 00:01 UTC: BTC/USD 101.5",
            ),
            (
                Kind::Audit,
                json!({"actor": "operator", "action": "pause", "detail": "x\u{1b}[31m"}),
                "operator: pause: x\\x1b[31m",
            ),
        ];
        for (kind, data, expected) in cases {
            assert_eq!(line(kind, &data, 0), expected);
        }
    }
}
