//! The models that play a night's roles: one guarded provider per role
//! (retries outside, the budget inside), all under one `Budget` for the
//! night, and the one way the night asks a model (`Night::ask`), which
//! records every call as a step — the prompt, the answer, the tokens, the
//! cost and the time. A call the budget refuses, or a spend-limit error,
//! stops the night (`Stopped`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};

use crate::store::now_ms;

use super::config::{EvolveConfig, ModelPrice, ProviderKind, Role, RoleConfig};
use super::night::Night;
use super::provider::{
    self, Anthropic, Budget, Key, OpenAiCompatible, Price, Provider, ProviderError, Request,
    RetryPolicy, Speaker, Turn,
};
use super::record::{self, Step};

/// How long one call may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The night was stopped: its budget would be passed, or a provider said
/// the money ran out. The message says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stopped(pub String);

/// The providers of a night's roles and the budget they share.
pub struct Models {
    budget: Arc<Budget>,
    roles: [Option<(Box<dyn Provider>, u32)>; 3],
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("budget", &self.budget)
            .field(
                "roles",
                &self
                    .roles
                    .iter()
                    .map(|r| r.as_ref().map(|(p, _)| p.label()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn index(role: Role) -> usize {
    match role {
        Role::Analyst => 0,
        Role::Author => 1,
        Role::Reviewer => 2,
    }
}

impl Models {
    /// The providers `config` names, each behind the night's budget and
    /// the retry policy; an offline role has none. A key that cannot be
    /// read is an error naming where it was looked for, never the key.
    pub fn new(config: &EvolveConfig) -> anyhow::Result<Models> {
        let budget = Arc::new(Budget::new(
            decimal(config.budget.usd),
            config.budget.tokens,
        ));
        let mut roles: [Option<(Box<dyn Provider>, u32)>; 3] = [None, None, None];
        for role in [Role::Analyst, Role::Author, Role::Reviewer] {
            let rc = config.role(role);
            if rc.kind == ProviderKind::Offline {
                continue;
            }
            let price = config.prices.get(&rc.model).map_or(Price::FREE, price);
            let client = client(rc).map_err(|e| anyhow::anyhow!("the {}: {e}", role.as_str()))?;
            let guarded = provider::guarded(client, budget.clone(), price, RetryPolicy::default());
            roles[index(role)] = Some((Box::new(guarded), rc.max_tokens));
        }
        Ok(Models { budget, roles })
    }

    /// Whether a model plays `role`.
    pub fn plays(&self, role: Role) -> bool {
        self.roles[index(role)].is_some()
    }

    /// What the night's calls cost: (US dollars, tokens).
    pub fn spent(&self) -> (f64, u64) {
        let (usd, tokens) = self.budget.spent();
        (usd.to_f64().unwrap_or(f64::MAX), tokens)
    }
}

/// A config's f64 dollars as the budget's exact decimal (to the
/// millionth of a cent).
fn decimal(x: f64) -> Decimal {
    Decimal::from_f64(x).map_or(Decimal::ZERO, |d| d.round_dp(8).normalize())
}

fn price(p: &ModelPrice) -> Price {
    Price {
        input_usd_per_mtok: decimal(p.input_usd_per_mtok),
        output_usd_per_mtok: decimal(p.output_usd_per_mtok),
    }
}

/// The key of `rc`: its file, else its environment variable, else none.
fn key(rc: &RoleConfig) -> anyhow::Result<Option<Key>> {
    Ok(match (&rc.key_file, &rc.key_env) {
        (Some(file), _) => Some(Key::from_file(Path::new(file))?),
        (None, Some(var)) => Some(Key::from_env(var)?),
        (None, None) => None,
    })
}

fn client(rc: &RoleConfig) -> anyhow::Result<Box<dyn Provider>> {
    let key = key(rc)?;
    Ok(match rc.kind {
        ProviderKind::Anthropic => {
            let key = key
                .ok_or_else(|| anyhow::anyhow!("anthropic needs a key: set key_env or key_file"))?;
            let base = rc
                .base_url
                .as_deref()
                .unwrap_or(Anthropic::DEFAULT_BASE_URL);
            Box::new(Anthropic::new(base, &rc.model, key, CALL_TIMEOUT)?)
        }
        ProviderKind::Openai => {
            let base = rc
                .base_url
                .as_deref()
                .unwrap_or(OpenAiCompatible::OPENAI_BASE_URL);
            Box::new(OpenAiCompatible::new(
                "openai",
                base,
                &rc.model,
                key,
                CALL_TIMEOUT,
            )?)
        }
        ProviderKind::Offline => anyhow::bail!("offline is played by code"),
    })
}

/// The conversation as the record shows it.
fn rendered(system: &str, turns: &[Turn]) -> String {
    let mut out = format!("[system]\n{system}\n");
    for t in turns {
        let who = match t.speaker {
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        };
        out.push_str(&format!("\n[{who}]\n{}\n", t.text));
    }
    out
}

impl Night<'_> {
    /// Asks `role`'s model, recording the call as step `kind`: the prompt,
    /// the answer (with why `judge` refused it, if it did), tokens, cost
    /// and time. Returns the answer's text and its judgement. A budget
    /// refusal or a spend limit stops the night; any other failure of the
    /// call is an error.
    pub(super) fn ask<T>(
        &mut self,
        role: Role,
        kind: &str,
        attempt: Option<i64>,
        system: &str,
        turns: &[Turn],
        judge: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<(String, Result<T, String>)> {
        let (provider, max_tokens) = self.models.roles[index(role)]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the {} is played offline", role.as_str()))?;
        let request = Request {
            system: system.to_owned(),
            turns: turns.to_vec(),
            max_tokens: *max_tokens,
            temperature: None,
        };
        let (started_ms, clock) = (now_ms(), Instant::now());
        let before = self.models.budget.spent().0;
        let reply = provider.complete(&request);
        let usd = (self.models.budget.spent().0 - before)
            .to_f64()
            .unwrap_or(0.0);
        let mut step = Step {
            seq: 0,
            kind: kind.into(),
            actor: role.as_str().into(),
            ok: false,
            input: rendered(system, turns),
            output: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            usd,
            started_ms,
            duration_ms: 0,
            attempt,
        };
        let outcome = match reply {
            Ok(reply) => {
                let judged = judge(&reply.text);
                step.ok = judged.is_ok();
                step.input_tokens = reply.usage.input_tokens;
                step.output_tokens = reply.usage.output_tokens;
                step.output = match &judged {
                    Ok(_) => reply.text.clone(),
                    Err(why) => format!("{}\n\n[refused] {why}", reply.text),
                };
                Ok((reply.text, judged))
            }
            Err(error) => {
                step.output = format!("error: {error}");
                let stops = matches!(
                    error,
                    ProviderError::Budget(_) | ProviderError::SpendLimit { .. }
                );
                Err(if stops {
                    anyhow::Error::new(Stopped(error.to_string()))
                } else {
                    anyhow::Error::new(error)
                })
            }
        };
        step.duration_ms = clock.elapsed().as_millis() as i64;
        record::add_step(self.conn, self.id, &step)?;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_prices_become_exact_decimals() {
        let p = price(&ModelPrice {
            input_usd_per_mtok: 0.1,
            output_usd_per_mtok: 15.0,
        });
        assert_eq!(p.input_usd_per_mtok.to_string(), "0.1");
        assert_eq!(p.output_usd_per_mtok.to_string(), "15");
        assert_eq!(decimal(2.0), Decimal::from(2));
    }

    #[test]
    fn offline_roles_have_no_model_and_a_missing_key_names_only_its_variable() {
        let offline = Models::new(&EvolveConfig::default()).expect("offline");
        assert!(!offline.plays(Role::Analyst) && !offline.plays(Role::Author));
        assert_eq!(offline.spent(), (0.0, 0));

        let text = r#"
[author]
kind = "anthropic"
model = "m"
key_env = "KEEL_ROLES_TEST_UNSET_KEY"
[prices.m]
input_usd_per_mtok = 3
output_usd_per_mtok = 15
"#;
        let config = EvolveConfig::parse(text, "evolve.toml").expect("config");
        let e = Models::new(&config).expect_err("no key").to_string();
        assert_eq!(
            e,
            "the author: API key: environment variable KEEL_ROLES_TEST_UNSET_KEY is not set"
        );

        let local = EvolveConfig::parse(
            &text
                .replace("anthropic", "openai")
                .replace("key_env = \"KEEL_ROLES_TEST_UNSET_KEY\"\n", ""),
            "evolve.toml",
        )
        .expect("config");
        let models = Models::new(&local).expect("a local model needs no key");
        assert!(models.plays(Role::Author) && !models.plays(Role::Reviewer));
    }
}
