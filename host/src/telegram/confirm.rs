//! Confirmations: a command that raises risk is not acted on when it
//! arrives; it gives a code that the operator who sent it must send back
//! (`/confirm CODE`, or the inline button) within `confirm_secs`. A wrong,
//! late or foreign code does nothing, and the answer says which.

use std::time::{Duration, Instant};

/// The commands that wait for a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risky {
    /// Back to active trading from reduce-only.
    Resume,
}

impl Risky {
    pub fn command(self) -> &'static str {
        match self {
            Risky::Resume => "/resume",
        }
    }
}

/// What a confirmation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The code was right and in time: act.
    Go(Risky),
    /// The code was right but late: nothing is done.
    Expired(Risky),
    /// Another code than the one asked for: nothing is done, the request
    /// stays open.
    WrongCode,
    /// Nothing of this operator's is waiting in this chat.
    Nothing,
}

#[derive(Debug, Clone)]
struct Pending {
    chat: i64,
    /// Who asked (none for a channel post): only they may confirm.
    asked_by: Option<i64>,
    action: Risky,
    code: String,
    expires: Instant,
}

/// The confirmations waiting: one per chat and operator, at most
/// `MAX_PENDING`, each kept until it is used or a further `within` past
/// its expiry (so a late answer is told it was late).
#[derive(Debug)]
pub struct Confirmations {
    within: Duration,
    pending: Vec<Pending>,
}

/// Most confirmations waiting at once; the oldest goes first.
const MAX_PENDING: usize = 64;

impl Confirmations {
    pub fn new(within: Duration) -> Confirmations {
        Confirmations {
            within,
            pending: Vec::new(),
        }
    }

    /// Opens a confirmation of `action` with `code`, replacing any the
    /// same operator had open in `chat`.
    pub fn ask(&mut self, action: Risky, chat: i64, user: Option<i64>, code: &str, now: Instant) {
        let within = self.within;
        self.pending
            .retain(|p| !(p.chat == chat && p.asked_by == user) && now < p.expires + within);
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending {
            chat,
            asked_by: user,
            action,
            code: code.to_owned(),
            expires: now + within,
        });
    }

    /// Takes `code` from `user` in `chat`.
    pub fn confirm(&mut self, chat: i64, user: Option<i64>, code: &str, now: Instant) -> Confirmed {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.chat == chat && p.asked_by == user)
        else {
            return Confirmed::Nothing;
        };
        let pending = &self.pending[i];
        if !same_code(pending.code.as_bytes(), code.trim().as_bytes()) {
            return Confirmed::WrongCode;
        }
        let action = pending.action;
        let late = now >= pending.expires;
        self.pending.remove(i);
        match late {
            true => Confirmed::Expired(action),
            false => Confirmed::Go(action),
        }
    }
}

/// Compares in time independent of where the codes differ.
fn same_code(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_confirmation_acts_once_in_time_and_never_late() {
        let t0 = Instant::now();
        let mut c = Confirmations::new(MINUTE);
        c.ask(Risky::Resume, 5, Some(7), "abc123", t0);
        assert_eq!(c.confirm(5, Some(7), "zzz999", t0), Confirmed::WrongCode);
        assert_eq!(
            c.confirm(5, Some(8), "abc123", t0),
            Confirmed::Nothing,
            "another operator"
        );
        assert_eq!(
            c.confirm(6, Some(7), "abc123", t0),
            Confirmed::Nothing,
            "another chat"
        );
        let in_time = t0 + Duration::from_secs(59);
        assert_eq!(
            c.confirm(5, Some(7), " abc123 ", in_time),
            Confirmed::Go(Risky::Resume)
        );
        assert_eq!(
            c.confirm(5, Some(7), "abc123", in_time),
            Confirmed::Nothing,
            "used once"
        );

        c.ask(Risky::Resume, 5, Some(7), "def456", t0);
        assert_eq!(
            c.confirm(5, Some(7), "def456", t0 + MINUTE),
            Confirmed::Expired(Risky::Resume)
        );
        assert_eq!(
            c.confirm(5, Some(7), "def456", t0 + MINUTE),
            Confirmed::Nothing
        );
    }

    #[test]
    fn asking_again_replaces_the_code_and_old_ones_are_dropped() {
        let t0 = Instant::now();
        let mut c = Confirmations::new(MINUTE);
        c.ask(Risky::Resume, 5, Some(7), "first1", t0);
        c.ask(Risky::Resume, 5, Some(7), "second", t0);
        assert_eq!(c.confirm(5, Some(7), "first1", t0), Confirmed::WrongCode);
        assert_eq!(
            c.confirm(5, Some(7), "second", t0),
            Confirmed::Go(Risky::Resume)
        );
        // Long past expiry, a confirmation is forgotten when another is asked.
        c.ask(Risky::Resume, 1, Some(1), "old111", t0);
        c.ask(Risky::Resume, 2, Some(2), "new222", t0 + MINUTE * 3);
        assert_eq!(
            c.confirm(1, Some(1), "old111", t0 + MINUTE * 3),
            Confirmed::Nothing
        );
        for i in 0..100 {
            c.ask(Risky::Resume, i, None, "x", t0 + MINUTE * 3);
        }
        assert_eq!(c.pending.len(), MAX_PENDING);
    }
}
