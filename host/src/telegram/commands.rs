//! What an operator may send the bot: the commands, read from a message's
//! text (`/status`, `/status@keel_bot`, `/confirm a1b2c3`), and `/help`.

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Help,
    Status,
    Health,
    Positions,
    Trades,
    Risk,
    Performance,
    Strategy,
    Candidates,
    Tokens,
    Pause,
    Resume,
    Kill,
    /// `/confirm CODE`: the answer to a confirmation.
    Confirm(String),
    /// A command the bot does not know (its name as sent).
    Unknown(String),
}

impl Request {
    /// The command in `text`, if it is one (a message not starting with
    /// `/` is conversation, not for the bot).
    pub fn parse(text: &str) -> Option<Request> {
        let mut words = text.split_whitespace();
        let first = words.next()?.strip_prefix('/')?;
        // In a group a command may name its bot: /status@keel_bot.
        let name = first
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        Some(match name.as_str() {
            "help" | "start" => Request::Help,
            "status" => Request::Status,
            "health" => Request::Health,
            "positions" => Request::Positions,
            "trades" => Request::Trades,
            "risk" => Request::Risk,
            "performance" => Request::Performance,
            "strategy" => Request::Strategy,
            "candidates" => Request::Candidates,
            "tokens" => Request::Tokens,
            "pause" => Request::Pause,
            "resume" => Request::Resume,
            "kill" => Request::Kill,
            "confirm" => Request::Confirm(words.next().unwrap_or_default().to_owned()),
            _ => Request::Unknown(first.to_owned()),
        })
    }
}

/// `/help`'s answer.
pub const HELP: &str = "Keel: the run's operator commands
/status: run, trading state and books
/health: feed, venue and last bar
/positions: open positions
/trades: recent closed trades
/risk: trading state and recent risk events
/performance: each book's record
/strategy: the active strategy and each book's
/candidates: candidates and their gates
/tokens: the nightly evolution's spend
/pause: reduce-only at once (nothing new opens)
/resume: back to active trading; asks for a confirmation
/kill: halt at once: orders cancelled, positions closed
/confirm CODE: confirm a /resume";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_from_their_first_word() {
        let cases = [
            ("/status", Some(Request::Status)),
            ("  /STATUS  ", Some(Request::Status)),
            ("/positions@keel_bot", Some(Request::Positions)),
            ("/start", Some(Request::Help)),
            ("/kill now please", Some(Request::Kill)),
            ("/confirm a1b2c3", Some(Request::Confirm("a1b2c3".into()))),
            ("/confirm", Some(Request::Confirm(String::new()))),
            ("/tokens", Some(Request::Tokens)),
            ("/launch", Some(Request::Unknown("launch".into()))),
            ("status", None),
            ("", None),
            ("hello /kill", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Request::parse(text), expected, "{text:?}");
        }
    }

    #[test]
    fn help_names_every_command() {
        for command in [
            "/status",
            "/health",
            "/positions",
            "/trades",
            "/risk",
            "/performance",
            "/strategy",
            "/candidates",
            "/tokens",
            "/pause",
            "/resume",
            "/kill",
            "/confirm",
        ] {
            assert!(
                HELP.contains(&format!("{command}:")) || HELP.contains(&format!("{command} ")),
                "{command}"
            );
        }
    }
}
