//! The language models the nightly evolution asks: one `Provider` trait, an
//! Anthropic Messages client, an OpenAI-compatible chat-completions client
//! (OpenAI itself, Ollama, llama.cpp's server, vLLM), and the guards every
//! call goes through: `Metered` (a budget reserved before sending, settled
//! after) and `Retrying` (rate limits and outages waited out, money and auth
//! problems never retried).
//!
//! The clients are blocking (`reqwest::blocking`): the night runs its steps
//! one after another in its own process, so an async runtime would buy
//! nothing but a second way to call the same endpoint. The budget is still a
//! `Mutex`, so calls made from several threads are counted correctly.
//!
//! Stack them as `Retrying<Metered<P>>` (`guarded` does): each attempt
//! reserves its own worst case, so an attempt that timed out after the
//! server may have worked stays counted, and a refusal releases its
//! reservation.

mod anthropic;
mod budget;
mod http;
mod key;
mod openai;
mod retry;

#[cfg(test)]
mod test_server;

use std::sync::Arc;
use std::time::Duration;

pub use anthropic::Anthropic;
pub use budget::{Budget, BudgetExceeded, Metered, Price, Reservation};
pub use key::{Key, KeyError};
pub use openai::OpenAiCompatible;
pub use retry::{RetryPolicy, Retrying};

/// Who said a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    User,
    Assistant,
}

/// One turn of the conversation sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

impl Turn {
    pub fn user(text: impl Into<String>) -> Turn {
        Turn {
            speaker: Speaker::User,
            text: text.into(),
        }
    }

    pub fn assistant(text: impl Into<String>) -> Turn {
        Turn {
            speaker: Speaker::Assistant,
            text: text.into(),
        }
    }
}

/// What is asked of a model: a system prompt, the turns so far, and the
/// most it may answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub system: String,
    pub turns: Vec<Turn>,
    /// The most output tokens the model may produce; the budget reserves
    /// all of them.
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

impl Request {
    /// A conservative count of the input tokens: a third of the bytes,
    /// rounded up, plus a few tokens a turn for the roles and framing.
    /// Tokenizers average three to four bytes a token on English and code.
    pub fn estimated_input_tokens(&self) -> u64 {
        const FRAMING: u64 = 8;
        let turns = self
            .turns
            .iter()
            .map(|t| estimate_tokens(&t.text) + FRAMING)
            .sum::<u64>();
        estimate_tokens(&self.system) + FRAMING + turns
    }
}

/// A third of the bytes, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3)
}

/// The tokens a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `false` when the server sent no usage: the counts are then estimated
    /// from the text, and the budget keeps the call's worst case.
    pub reported: bool,
}

impl Usage {
    /// The estimate used when a server reports nothing.
    pub fn estimated(request: &Request, reply_text: &str) -> Usage {
        Usage {
            input_tokens: request.estimated_input_tokens(),
            output_tokens: estimate_tokens(reply_text),
            reported: false,
        }
    }

    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    /// The model that answered, as the server named it.
    pub model: String,
    pub usage: Usage,
    /// Why the model stopped (`end_turn`, `max_tokens`, `stop`, `length`, …),
    /// as the server said it.
    pub stop_reason: Option<String>,
}

/// A language model the night can ask.
pub trait Provider: Send + Sync {
    /// Which provider and model, e.g. `anthropic:claude-x`; names it in
    /// errors and records.
    fn label(&self) -> String;

    /// Asks the model once (wrappers may retry).
    fn complete(&self, request: &Request) -> Result<Reply, ProviderError>;
}

impl<P: Provider + ?Sized> Provider for Box<P> {
    fn label(&self) -> String {
        (**self).label()
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        (**self).complete(request)
    }
}

impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn label(&self) -> String {
        (**self).label()
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        (**self).complete(request)
    }
}

/// Why a call gave no reply. Every message is one line naming the provider;
/// server text in it is truncated and never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests or tokens for now (HTTP 429): worth waiting.
    #[error("{provider}: rate limited (HTTP {status}): {message}")]
    RateLimited {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server is overloaded or failing (HTTP 5xx, Anthropic's 529): worth waiting.
    #[error("{provider}: unavailable (HTTP {status}): {message}")]
    Unavailable {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: the connection failed or the call timed out. The server
    /// may have done (and billed) the work.
    #[error("{provider}: no answer: {message}")]
    Transport { provider: String, message: String },
    /// Out of credit, or a spend limit reached: waiting will not help
    /// tonight; never retried.
    #[error("{provider}: spend limit or billing problem (HTTP {status}): {message}")]
    SpendLimit {
        provider: String,
        status: u16,
        message: String,
    },
    /// The key was refused or lacks permission; never retried.
    #[error("{provider}: key refused (HTTP {status}): {message}")]
    Auth {
        provider: String,
        status: u16,
        message: String,
    },
    /// The request itself was refused (bad model name, too long, …); never retried.
    #[error("{provider}: request refused (HTTP {status}): {message}")]
    Rejected {
        provider: String,
        status: u16,
        message: String,
    },
    /// The server answered success with a body that is not the documented
    /// reply. Not retried here; the caller decides.
    #[error("{provider}: malformed reply: {message}")]
    Malformed { provider: String, message: String },
    /// The night's budget cannot cover the call's worst case: nothing was sent.
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
    /// The client could not be set up (TLS, a bad base URL, a bad key).
    #[error("{provider}: cannot set up the client: {message}")]
    Setup { provider: String, message: String },
}

impl ProviderError {
    /// Whether waiting and asking again may work: rate limits, overload,
    /// server errors, timeouts and failed connections.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Transport { .. }
        )
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the server refused the call with an error status, so it did
    /// no billable work; `Metered` releases such a call's reservation.
    pub fn refused_by_server(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::SpendLimit { .. }
                | ProviderError::Auth { .. }
                | ProviderError::Rejected { .. }
        )
    }
}

/// A provider behind the guards, in the order that counts every attempt:
/// retries outside, the budget inside.
pub fn guarded<P: Provider>(
    provider: P,
    budget: Arc<Budget>,
    price: Price,
    policy: RetryPolicy,
) -> Retrying<Metered<P>> {
    Retrying::new(Metered::new(provider, budget, price), policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_estimate_rounds_up_and_counts_framing() {
        let request = Request {
            system: "abcd".into(),                             // 2 tokens
            turns: vec![Turn::user("a"), Turn::assistant("")], // 1 + 0
            max_tokens: 10,
            temperature: None,
        };
        assert_eq!(request.estimated_input_tokens(), 2 + 1 + 3 * 8);
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
    }

    #[test]
    fn only_waiting_problems_are_retryable() {
        let p = || "p:m".to_owned();
        let retryable = [
            ProviderError::RateLimited {
                provider: p(),
                status: 429,
                message: String::new(),
                retry_after: None,
            },
            ProviderError::Unavailable {
                provider: p(),
                status: 529,
                message: String::new(),
                retry_after: None,
            },
            ProviderError::Transport {
                provider: p(),
                message: String::new(),
            },
        ];
        let final_ = [
            ProviderError::SpendLimit {
                provider: p(),
                status: 429,
                message: String::new(),
            },
            ProviderError::Auth {
                provider: p(),
                status: 401,
                message: String::new(),
            },
            ProviderError::Rejected {
                provider: p(),
                status: 400,
                message: String::new(),
            },
            ProviderError::Malformed {
                provider: p(),
                message: String::new(),
            },
        ];
        assert!(retryable.iter().all(ProviderError::is_retryable));
        assert!(!final_.iter().any(ProviderError::is_retryable));
    }
}
