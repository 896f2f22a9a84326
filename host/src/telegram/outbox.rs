//! Sending within Telegram's limits: about one message a second to a chat
//! and thirty a second in all (`Pace`), every text cut to the 4096
//! characters a message holds (`fit`), flood control and transient
//! failures retried a few times, a chat that cannot be reached logged once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{ApiError, Backoff, BotApi, Button};

/// The least time between two messages to one chat.
pub const PER_CHAT: Duration = Duration::from_secs(1);
/// The least time between any two messages (30 a second).
pub const OVERALL: Duration = Duration::from_millis(34);
/// The most a message holds, in UTF-16 code units (how Telegram counts).
pub const MAX_MESSAGE: usize = 4096;
/// Tries of one message before it is given up.
const ATTEMPTS: u32 = 3;
/// Chats remembered as unreachable (so each is logged once).
const MAX_FAILING: usize = 256;

/// When each next message may go. Booking a slot moves the limits on, so
/// concurrent senders queue behind each other; a chat not written to for
/// `PER_CHAT` is forgotten, so memory stays bounded.
#[derive(Debug, Default)]
pub struct Pace {
    last_any: Option<Instant>,
    last_to: Vec<(i64, Instant)>,
}

impl Pace {
    /// Books the next slot for a message to `chat` and says when it is.
    pub fn reserve(&mut self, chat: i64, now: Instant) -> Instant {
        self.last_to.retain(|(_, at)| *at + PER_CHAT > now);
        let mut slot = now;
        if let Some(last) = self.last_any {
            slot = slot.max(last + OVERALL);
        }
        if let Some((_, last)) = self.last_to.iter().find(|(c, _)| *c == chat) {
            slot = slot.max(*last + PER_CHAT);
        }
        self.last_any = Some(slot);
        self.last_to.retain(|(c, _)| *c != chat);
        self.last_to.push((chat, slot));
        slot
    }
}

/// `text` cut to fit one message, with `…` where it was cut.
pub fn fit(text: &str) -> String {
    if text.encode_utf16().count() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut units = 0;
    for c in text.chars() {
        if units + c.len_utf16() > MAX_MESSAGE - 1 {
            break;
        }
        units += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// Messages out, paced.
#[derive(Debug)]
pub struct Outbox {
    api: Arc<BotApi>,
    pace: Mutex<Pace>,
    /// Chats whose last message failed, so a failure is logged once.
    failing: Mutex<Vec<i64>>,
}

impl Outbox {
    pub fn new(api: Arc<BotApi>) -> Outbox {
        Outbox {
            api,
            pace: Mutex::new(Pace::default()),
            failing: Mutex::new(Vec::new()),
        }
    }

    /// Sends `text` to `chat` in its turn; whether it was delivered.
    pub async fn send(&self, chat: i64, text: &str, buttons: &[Button]) -> bool {
        let text = fit(text);
        let mut backoff = Backoff::new();
        for attempt in 1..=ATTEMPTS {
            let slot = match self.pace.lock() {
                Ok(mut pace) => pace.reserve(chat, Instant::now()),
                Err(_) => Instant::now() + PER_CHAT,
            };
            tokio::time::sleep_until(slot.into()).await;
            match self.api.send_message(chat, &text, buttons).await {
                Ok(()) => {
                    self.reached(chat);
                    return true;
                }
                // The client itself waits out flood control before the next call.
                Err(ApiError::RetryAfter { .. }) if attempt < ATTEMPTS => {}
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff.wait()).await;
                }
                Err(e) => {
                    self.unreachable(chat, &e);
                    return false;
                }
            }
        }
        false
    }

    fn reached(&self, chat: i64) {
        if let Ok(mut failing) = self.failing.lock()
            && let Some(i) = failing.iter().position(|c| *c == chat)
        {
            failing.swap_remove(i);
            tracing::warn!(target: "keel::telegram", "telegram: chat {chat} is reached again");
        }
    }

    fn unreachable(&self, chat: i64, e: &ApiError) {
        let Ok(mut failing) = self.failing.lock() else {
            return;
        };
        if failing.contains(&chat) {
            return;
        }
        if failing.len() >= MAX_FAILING {
            failing.clear();
        }
        failing.push(chat);
        tracing::warn!(
            target: "keel::telegram",
            "telegram: a message to chat {chat} was not delivered: {e} (logged once until it is)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_gets_a_message_a_second_and_all_chats_thirty() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        assert_eq!(pace.reserve(1, t0), t0);
        assert_eq!(
            pace.reserve(1, t0),
            t0 + PER_CHAT,
            "the same chat waits a second"
        );
        assert_eq!(
            pace.reserve(2, t0),
            t0 + PER_CHAT + OVERALL,
            "after the last booked slot"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.reserve(1, later), later, "a quiet chat goes at once");
        // A burst to many chats is spread at the overall rate.
        let burst = later + Duration::from_secs(10);
        let slots: Vec<Instant> = (100..130).map(|c| pace.reserve(c, burst)).collect();
        assert_eq!(slots[29] - slots[0], OVERALL * 29);
        assert!(pace.last_to.len() <= 31);
        // Chats long quiet are forgotten.
        pace.reserve(1, burst + Duration::from_secs(60));
        assert_eq!(pace.last_to.len(), 1);
    }

    #[test]
    fn text_is_cut_to_what_a_message_holds() {
        assert_eq!(fit("short"), "short");
        let long = "x".repeat(5000);
        let cut = fit(&long);
        assert_eq!(cut.encode_utf16().count(), MAX_MESSAGE);
        assert!(cut.ends_with('…'));
        // A character outside the BMP counts twice, and is never split.
        let emoji = "📈".repeat(3000);
        let cut = fit(&emoji);
        assert!(cut.encode_utf16().count() <= MAX_MESSAGE);
        assert!(cut.trim_end_matches('…').chars().all(|c| c == '📈'));
    }
}
