//! The reads as short text for a phone: each takes what API v1 serves
//! (`api::v1::from_snapshot` or `from_ledger`), so the bot, the API and the
//! dashboard say the same thing. Every string that came from a strategy,
//! a model or a user goes through `shown::text` (escaped, cut); messages
//! are plain text, so nothing in them is read as markup.

use keel_model::shown;
use serde_json::Value;

/// Most rows a list shows.
const ROWS: usize = 10;

/// `v[key]` as text fit to show (`?` when absent).
fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => shown::text(s).to_string(),
        Value::Null => "?".into(),
        other => shown::text(&other.to_string()).to_string(),
    }
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

/// An amount, `?` when absent.
fn amount(v: &Value, key: &str) -> String {
    number(v, key).map_or("?".into(), |x| shown::amount(x).to_string())
}

/// A profit or loss with its sign.
fn signed(x: f64) -> String {
    match x >= 0.0 {
        true => format!("+{}", shown::amount(x)),
        false => shown::amount(x).to_string(),
    }
}

fn percent(x: f64) -> String {
    format!("{}%", shown::fixed(x, 2))
}

/// A time in milliseconds since the epoch, to the minute, in UTC.
pub fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn time_of(v: &Value, key: &str) -> String {
    v[key].as_i64().map_or("never".into(), time)
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `/status`: from `system` and `portfolio`.
pub fn status(system: &Value, portfolio: &Value) -> String {
    let mut out = format!(
        "run {} · {} · {} · {} bars · last bar {}",
        text(system, "run_id"),
        text(system, "mode"),
        text(system, "state"),
        text(system, "bars"),
        time_of(system, "last_bar_ms"),
    );
    for book in rows(&portfolio["books"]) {
        let positions = book["positions"].as_u64().unwrap_or(0) as usize;
        out.push_str(&format!(
            "\n{} ({}): equity {}, cash {}, realized {}, {}, drawdown {}",
            text(book, "slot"),
            text(book, "strategy"),
            amount(book, "equity"),
            amount(book, "cash"),
            number(book, "realized").map_or("?".into(), signed),
            shown::counted(positions, "position"),
            number(book, "drawdown_pct").map_or("?".into(), percent),
        ));
    }
    let total = &portfolio["total"];
    if let (Some(equity), Some(start)) = (number(total, "equity"), number(total, "start_cash")) {
        let change = match start > 0.0 {
            true => format!(", {}", percent((equity - start) / start * 100.0)),
            false => String::new(),
        };
        out.push_str(&format!(
            "\ntotal equity {} (start {}{change})",
            shown::amount(equity),
            shown::amount(start)
        ));
    }
    out
}

/// `/health`: the feed, the trading state and (live) the venue.
pub fn health(system: &Value) -> String {
    let feed = &system["feed_health"];
    let failures = feed["consecutive_failures"].as_u64().unwrap_or(0);
    let feed_state = match failures {
        0 => "healthy".to_owned(),
        n => format!(
            "{} failed in a row, last error: {}",
            shown::counted(n as usize, "poll"),
            text(feed, "last_error")
        ),
    };
    let mut out = format!(
        "feed {}: {feed_state}; last bar delivered {}\nstate {}{}; {} bars booked, last close {}",
        text(system, "feed"),
        time_of(feed, "last_bar_ms"),
        text(system, "state"),
        if system["killed"] == true {
            " (killed)"
        } else {
            ""
        },
        text(system, "bars"),
        time_of(system, "last_bar_ms"),
    );
    let venue = &system["venue"];
    if venue.is_object() {
        let agreed = match venue["reconciled"] == true {
            true => "reconciled".to_owned(),
            false => format!("NOT reconciled ({})", text(venue, "problem")),
        };
        out.push_str(&format!(
            "\nvenue {}: {agreed}, REST headroom {}, {} unknown",
            text(venue, "venue"),
            number(venue, "rest_headroom").map_or("?".into(), |h| percent(h * 100.0)),
            shown::counted(
                venue["unknown_orders"].as_u64().unwrap_or(0) as usize,
                "order"
            ),
        ));
        if let Some(problem) = venue["problem"]
            .as_str()
            .filter(|_| venue["reconciled"] == true)
        {
            out.push_str(&format!("; {}", shown::text(problem)));
        }
    }
    out
}

/// `/positions`: every book's open positions.
pub fn positions(books: &Value) -> String {
    let mut out = Vec::new();
    for book in rows(books) {
        let slot = text(book, "slot");
        let held = rows(&book["positions"]);
        if held.is_empty() {
            out.push(format!("{slot}: no open positions"));
        }
        for p in held {
            let tag = match p["tag"].as_str() {
                Some("") | None => String::new(),
                Some(tag) => format!(" [{}]", shown::text(tag)),
            };
            out.push(format!(
                "{slot}: {} {} {} @ {}, mark {}, P&L {}{tag}",
                text(p, "symbol"),
                text(p, "side"),
                amount(p, "quantity"),
                amount(p, "entry"),
                amount(p, "mark"),
                number(p, "unrealized").map_or("?".into(), signed),
            ));
        }
    }
    match out.is_empty() {
        true => "no books".into(),
        false => out.join("\n"),
    }
}

/// `/trades`: the newest closed trades (served newest first).
pub fn trades(trades: &Value) -> String {
    let all = rows(trades);
    if all.is_empty() {
        return "no closed trades yet".into();
    }
    let mut out = vec![format!("the {} newest closed trades:", all.len().min(ROWS))];
    for t in all.iter().take(ROWS) {
        out.push(format!(
            "{} {} {} {}: {} → {}, P&L {} ({}) {}",
            text(t, "slot"),
            text(t, "symbol"),
            text(t, "side"),
            amount(t, "quantity"),
            amount(t, "entry"),
            amount(t, "exit"),
            number(t, "pnl").map_or("?".into(), signed),
            text(t, "exit_reason"),
            time_of(t, "closed_ms"),
        ));
    }
    out.join("\n")
}

/// `/risk`: the trading state and the newest risk events.
pub fn risk(risk: &Value) -> String {
    let trading = &risk["trading"];
    let mut out = vec![format!(
        "trading state {} since {}: {}",
        text(trading, "state"),
        time_of(trading, "changed_ms"),
        text(trading, "reason"),
    )];
    let events = rows(&risk["events"]);
    if events.is_empty() {
        out.push("no risk events".into());
    } else {
        out.push("recent risk events:".into());
    }
    for e in events.iter().take(ROWS) {
        let latency = e["latency_us"]
            .as_i64()
            .map_or(String::new(), |us| format!(" ({us} µs)"));
        out.push(format!(
            "{} {}: {}{latency}",
            time_of(e, "time_ms"),
            text(e, "kind"),
            text(e, "detail"),
        ));
    }
    out.join("\n")
}

/// `/performance`: each book's record.
pub fn performance(performance: &Value) -> String {
    let books = rows(&performance["books"]);
    if books.is_empty() {
        return "no books".into();
    }
    let lines: Vec<String> = books
        .iter()
        .map(|b| {
            let won = number(b, "win_rate").map_or("no".into(), |w| percent(w * 100.0));
            format!(
                "{}: {}, {won} won, net P&L {}, fees {}, return {}, max drawdown {}",
                text(b, "slot"),
                shown::counted(b["trades"].as_u64().unwrap_or(0) as usize, "trade"),
                number(b, "pnl").map_or("?".into(), signed),
                amount(b, "fees"),
                number(b, "return_pct").map_or("?".into(), percent),
                number(b, "max_drawdown_pct").map_or("?".into(), percent),
            )
        })
        .collect();
    lines.join("\n")
}

/// A component's name, version and short hash.
fn component(v: &Value) -> String {
    let hash: String = v["hash"].as_str().unwrap_or("?").chars().take(12).collect();
    format!(
        "{} {} ({})",
        text(v, "name"),
        text(v, "version"),
        shown::text(&hash)
    )
}

/// `/strategy`: the active strategy and what each book runs.
pub fn strategy(strategy: &Value) -> String {
    let active = &strategy["active"];
    let mut out = vec![match active.is_object() {
        true => format!(
            "active: {}, {} by {} at {}: {}",
            component(active),
            text(active, "action"),
            text(active, "actor"),
            time_of(active, "time_ms"),
            text(active, "reason"),
        ),
        false => "no active strategy recorded".into(),
    }];
    for b in rows(&strategy["books"]) {
        out.push(format!(
            "{}: {} params {}",
            text(b, "slot"),
            component(b),
            text(b, "params")
        ));
    }
    out.join("\n")
}

/// `/candidates`: the newest candidates and their gates.
pub fn candidates(candidates: &Value) -> String {
    let all = rows(candidates);
    if all.is_empty() {
        return "no candidates".into();
    }
    let mut out = vec![format!("the {} newest candidates:", all.len().min(ROWS))];
    for c in all.iter().take(ROWS) {
        let gates: Vec<String> = rows(&c["gates"])
            .iter()
            .map(|g| format!("{} {}", text(g, "gate"), text(g, "verdict")))
            .collect();
        let gates = match gates.is_empty() {
            true => "no gates run".to_owned(),
            false => format!("gates: {}", gates.join(", ")),
        };
        out.push(format!(
            "#{} {} {}: {} (by {}); {gates}",
            text(c, "id"),
            text(c, "name"),
            text(c, "version"),
            text(c, "state"),
            text(c, "submitted_by"),
        ));
    }
    out.join("\n")
}

/// `/tokens`: what the nightly evolution spent, night by night.
pub fn tokens(nights: &Value) -> String {
    let all = rows(nights);
    if all.is_empty() {
        return "no evolution nights yet: nothing spent".into();
    }
    let tokens: u64 = all.iter().filter_map(|n| n["tokens"].as_u64()).sum();
    let usd: f64 = all.iter().filter_map(|n| n["usd"].as_f64()).sum();
    let mut out = vec![format!(
        "the evolution's last {}: {tokens} tokens, ${}",
        shown::counted(all.len(), "night"),
        shown::fixed(usd, 2)
    )];
    for n in all.iter().take(ROWS) {
        let decision = match n["decision"].as_str() {
            Some(d) => format!(", decision {}", shown::text(d)),
            None => String::new(),
        };
        out.push(format!(
            "night {} {}: {}{decision}, {} tokens, ${}",
            text(n, "id"),
            time_of(n, "started_ms"),
            text(n, "status"),
            n["tokens"].as_u64().unwrap_or(0),
            shown::fixed(number(n, "usd").unwrap_or(0.0), 2),
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_names_each_book_and_the_total() {
        let system = json!({"run_id": 1, "mode": "paper", "state": "ACTIVE", "bars": 42,
            "last_bar_ms": 1_700_000_000_000i64});
        let portfolio = json!({"books": [{"slot": "sma-cross#1", "strategy": "sma-cross",
            "equity": 10_100.0, "cash": 9_000.0, "realized": -5.5, "drawdown_pct": 1.25,
            "positions": 1}], "total": {"equity": 10_100.0, "start_cash": 10_000.0}});
        let said = status(&system, &portfolio);
        assert_eq!(
            said,
            "run 1 · paper · ACTIVE · 42 bars · last bar 2023-11-14 22:13 UTC\n\
             sma-cross#1 (sma-cross): equity 10100.00, cash 9000.00, realized -5.50, 1 position, drawdown 1.25%\n\
             total equity 10100.00 (start 10000.00, 1.00%)"
        );
    }

    #[test]
    fn positions_and_trades_read_as_lines() {
        let books = json!([
            {"slot": "sma-cross#1", "positions": [{"symbol": "BTC/USD", "tag": "core",
                "side": "long", "quantity": 0.5, "entry": 100.0, "mark": 102.0, "unrealized": 1.0}]},
            {"slot": "rsi#2", "positions": []},
        ]);
        assert_eq!(
            positions(&books),
            "sma-cross#1: BTC/USD long 0.500 @ 100.00, mark 102.00, P&L +1.00 [core]\nrsi#2: no open positions"
        );
        assert_eq!(trades(&json!([])), "no closed trades yet");
        let one = json!([{"slot": "s#1", "symbol": "BTC/USD", "side": "long", "quantity": 1.0,
            "entry": 10.0, "exit": 11.0, "pnl": 0.9, "exit_reason": "signal", "closed_ms": 0}]);
        assert_eq!(
            trades(&one),
            "the 1 newest closed trades:\ns#1 BTC/USD long 1.00: 10.00 → 11.00, P&L +0.900 (signal) 1970-01-01 00:00 UTC"
        );
    }

    #[test]
    fn untrusted_text_is_escaped_and_cut() {
        let books = json!([{"slot": "evil\u{202e}#1\nkill", "positions": []}]);
        let said = positions(&books);
        assert!(
            !said.contains('\u{202e}') && said.lines().count() == 1,
            "{said}"
        );
        let long = json!([{"id": 1, "name": "x".repeat(500), "gates": []}]);
        assert!(candidates(&long).len() < 300);
    }

    #[test]
    fn the_ledger_reads_say_something_when_empty_and_when_not() {
        assert_eq!(tokens(&json!([])), "no evolution nights yet: nothing spent");
        let nights = json!([
            {"id": 2, "started_ms": 0, "status": "finished", "decision": "create", "tokens": 1200, "usd": 0.25},
            {"id": 1, "started_ms": 0, "status": "stopped", "decision": null, "tokens": 300, "usd": 0.05},
        ]);
        let said = tokens(&nights);
        assert!(
            said.starts_with("the evolution's last 2 nights: 1500 tokens, $0.30"),
            "{said}"
        );
        assert!(said.contains(
            "night 2 1970-01-01 00:00 UTC: finished, decision create, 1200 tokens, $0.25"
        ));
        let perf = json!({"books": [{"slot": "s#1", "trades": 4, "win_rate": 0.5, "pnl": 12.0,
            "fees": 1.0, "return_pct": 0.12, "max_drawdown_pct": 2.0}]});
        assert_eq!(
            performance(&perf),
            "s#1: 4 trades, 50.00% won, net P&L +12.00, fees 1.00, return 0.12%, max drawdown 2.00%"
        );
        let r = json!({"trading": {"state": "HALTED", "reason": "kill switch: x", "changed_ms": 0},
            "events": [{"time_ms": 0, "kind": "kill", "detail": "kill switch: x", "latency_us": 120}]});
        assert!(
            risk(&r).contains("kill: kill switch: x (120 µs)"),
            "{}",
            risk(&r)
        );
        let c = json!([{"id": 3, "name": "sma", "version": "0.2.0", "state": "gated",
            "submitted_by": "evolution", "gates": [{"gate": "backtest", "verdict": "pass"}]}]);
        assert!(
            candidates(&c).contains("#3 sma 0.2.0: gated (by evolution); gates: backtest pass")
        );
        let s = json!({"active": null, "books": [{"slot": "s#1", "name": "sma", "version": "1",
            "hash": "0123456789abcdef", "params": "{}"}]});
        assert_eq!(
            strategy(&s),
            "no active strategy recorded\ns#1: sma 1 (0123456789ab) params {}"
        );
        let h = json!({"feed": "sample:10", "state": "ACTIVE", "killed": false, "bars": 3,
            "last_bar_ms": 0, "feed_health": {"consecutive_failures": 2, "last_error": "timeout",
            "last_bar_ms": 0}, "venue": null});
        assert!(
            health(&h).starts_with("feed sample:10: 2 polls failed in a row, last error: timeout"),
            "{}",
            health(&h)
        );
    }
}
