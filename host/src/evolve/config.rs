//! `evolve.toml`: who plays each role of the night (provider and model),
//! what models cost, the nightly budget, the schedule, the data and its
//! locked holdout, and the gates' thresholds. Every key is optional; every
//! number is checked against its range as it is read, so a bad value is one
//! line naming the file, the line, the key and the range. Keys are never
//! written here: a provider names the environment variable or the 0600
//! file that holds its key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_model::Bounds;

/// What each role can be played by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// No model: parameter mutations of the active strategy and of
    /// promising candidates, judged by code.
    #[default]
    Offline,
    /// Anthropic's Messages API.
    Anthropic,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama,
    /// llama.cpp's server, vLLM).
    Openai,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Offline => "offline",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
        }
    }
}

/// One role's provider.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub kind: ProviderKind,
    /// The model's name at the provider (unused offline).
    pub model: String,
    /// The API's base URL; default: the provider's own.
    pub base_url: Option<String>,
    /// The environment variable holding the key.
    pub key_env: Option<String>,
    /// A file holding the key, readable by its owner only (mode 0600).
    pub key_file: Option<PathBuf>,
    /// The longest answer asked for, in tokens.
    #[serde(deserialize_with = "bounded::max_tokens")]
    pub max_tokens: u32,
}

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig {
            kind: ProviderKind::Offline,
            model: String::new(),
            base_url: None,
            key_env: None,
            key_file: None,
            max_tokens: 4096,
        }
    }
}

impl RoleConfig {
    /// How the record names it: `offline`, `anthropic:MODEL`.
    pub fn label(&self) -> String {
        match self.kind {
            ProviderKind::Offline => "offline".into(),
            kind => format!("{}:{}", kind.as_str(), self.model),
        }
    }
}

/// What a model costs, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    #[serde(deserialize_with = "bounded::price")]
    pub input_usd_per_mtok: f64,
    #[serde(deserialize_with = "bounded::price")]
    pub output_usd_per_mtok: f64,
}

/// The most a night may spend; a call that could take it over is not made.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    #[serde(deserialize_with = "bounded::usd")]
    pub usd: f64,
    #[serde(deserialize_with = "bounded::tokens")]
    pub tokens: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            usd: 2.0,
            tokens: 400_000,
        }
    }
}

/// When `keel run --evolve` starts a night.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// `HH:MM` in `time_zone`.
    pub at: String,
    /// `UTC`, a fixed offset from it (`+02:00`, `-05:00`), or a zone of
    /// the IANA database (`Europe/Paris`, daylight saving followed).
    pub time_zone: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            at: "02:00".into(),
            time_zone: "UTC".into(),
        }
    }
}

impl Schedule {
    /// The zone the schedule is read in: `UTC`, a fixed offset (`+02:00`),
    /// or a name of the IANA database (`Europe/Paris`, built into keel),
    /// whose daylight saving the night follows.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        let tz = self.time_zone.as_str();
        if tz == "UTC" || tz == "Z" {
            return Ok(jiff::tz::TimeZone::UTC);
        }
        let sign = match tz.as_bytes().first() {
            Some(b'+') => Some(1),
            Some(b'-') => Some(-1),
            _ => None,
        };
        if let Some(sign) = sign {
            return match parse_hhmm(&tz[1..]) {
                Some(m) if m <= 14 * 60 => jiff::tz::Offset::from_seconds(sign * m as i32 * 60)
                    .map(jiff::tz::TimeZone::fixed)
                    .map_err(|e| {
                        format!("schedule.time_zone {}: {e}", keel_model::shown::quoted(tz))
                    }),
                _ => Err(format!(
                    "schedule.time_zone {}: an offset is +HH:MM or -HH:MM, at most 14 hours",
                    keel_model::shown::quoted(tz)
                )),
            };
        }
        jiff::tz::TimeZone::get(tz).map_err(|_| {
            format!(
                "schedule.time_zone {}: expected UTC, an offset such as +02:00, or a zone such as Europe/Paris",
                keel_model::shown::quoted(tz)
            )
        })
    }

    /// `at` as (hour, minute).
    fn hour_minute(&self) -> Result<(i8, i8), String> {
        let minute = parse_hhmm(&self.at).ok_or_else(|| {
            format!(
                "schedule.at {}: expected HH:MM, e.g. 02:00",
                keel_model::shown::quoted(&self.at)
            )
        })?;
        Ok(((minute / 60) as i8, (minute % 60) as i8))
    }

    /// Both fields, checked.
    pub fn check(&self) -> Result<(), String> {
        self.hour_minute()?;
        self.zone().map(|_| ())
    }

    /// The latest time (ms since the epoch) at or before `now_ms` that the
    /// night was scheduled for: `at` on today's date in the zone, else on
    /// yesterday's. A time a clock change skips is taken as the moment
    /// after the change.
    pub fn latest(&self, now_ms: i64) -> Result<i64, String> {
        let (hour, minute) = self.hour_minute()?;
        let zone = self.zone()?;
        let now = jiff::Timestamp::from_millisecond(now_ms).map_err(|e| e.to_string())?;
        let today = now.to_zoned(zone.clone()).date();
        let at = |date: jiff::civil::Date| -> Result<i64, String> {
            date.at(hour, minute, 0, 0)
                .to_zoned(zone.clone())
                .map(|z| z.timestamp().as_millisecond())
                .map_err(|e| e.to_string())
        };
        let candidate = at(today)?;
        if candidate <= now_ms {
            return Ok(candidate);
        }
        at(today.yesterday().map_err(|e| e.to_string())?)
    }
}

fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let ok = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// What a candidate must show before it is submitted.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolveGates {
    /// The least deflated Sharpe ratio (a probability) in sample.
    #[serde(deserialize_with = "bounded::probability")]
    pub min_dsr: f64,
    /// The most probability of backtest overfitting over the parameter grid.
    #[serde(deserialize_with = "bounded::probability")]
    pub max_pbo: f64,
    /// Blocks the in-sample bars are cut into for the PBO (even).
    #[serde(deserialize_with = "bounded::splits")]
    pub pbo_splits: usize,
    /// The least per-bar Sharpe ratio on the locked holdout.
    #[serde(deserialize_with = "bounded::sharpe")]
    pub min_holdout_sharpe: f64,
    /// The least in-sample return, percent.
    #[serde(deserialize_with = "bounded::min_return_pct")]
    pub min_return_pct: f64,
    /// The least out-of-sample return, percent, of any walk-forward fold.
    #[serde(deserialize_with = "bounded::min_fold_return_pct")]
    pub min_fold_return_pct: f64,
    /// The least return, percent, under stress (2× fees and slippage,
    /// signals one bar late).
    #[serde(deserialize_with = "bounded::return_pct")]
    pub min_stress_return_pct: f64,
    /// Cut points of the look-ahead probe.
    #[serde(deserialize_with = "bounded::probes")]
    pub lookahead_probes: usize,
}

impl Default for EvolveGates {
    fn default() -> Self {
        EvolveGates {
            min_dsr: 0.95,
            max_pbo: 0.5,
            pbo_splits: 8,
            min_holdout_sharpe: 0.0,
            min_return_pct: 0.0,
            min_fold_return_pct: -5.0,
            min_stress_return_pct: -5.0,
            lookahead_probes: 3,
        }
    }
}

/// `evolve.toml`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolveConfig {
    /// Every role's provider, unless its own table says otherwise.
    pub provider: RoleConfig,
    pub analyst: Option<RoleConfig>,
    pub author: Option<RoleConfig>,
    pub reviewer: Option<RoleConfig>,
    /// Prices by model name.
    pub prices: BTreeMap<String, ModelPrice>,
    pub budget: BudgetConfig,
    pub schedule: Schedule,
    /// `[SYMBOL=]FILE` or `SYMBOL@TIMEFRAME`, as `candidates.toml`'s
    /// `backtest.data`; empty: the candidate gates' data.
    pub data: Vec<String>,
    /// The last part of each data set, percent of its bars, that no model
    /// and no parameter choice ever sees: only the holdout gate reads it.
    #[serde(deserialize_with = "bounded::holdout_pct")]
    pub holdout_pct: f64,
    /// Candidates a night may make.
    #[serde(deserialize_with = "bounded::candidates")]
    pub max_candidates: usize,
    /// Fix-ups a night may ask for (compile errors, validation reasons,
    /// a refused answer) per candidate.
    #[serde(deserialize_with = "bounded::retries")]
    pub retries: u32,
    /// Parameter sets the offline author tries per candidate.
    #[serde(deserialize_with = "bounded::mutations")]
    pub mutations: usize,
    /// Grade predictions and revise the strategy document every this many
    /// nights.
    #[serde(deserialize_with = "bounded::nights")]
    pub reflect_every: u32,
    /// May a night promote a candidate whose gates all passed? Otherwise it
    /// recommends it to the operator.
    pub allow_promote: bool,
    /// Where candidate crates are written; relative to the file.
    pub workdir: PathBuf,
    pub gates: EvolveGates,
}

impl Default for EvolveConfig {
    fn default() -> Self {
        EvolveConfig {
            provider: RoleConfig::default(),
            analyst: None,
            author: None,
            reviewer: None,
            prices: BTreeMap::new(),
            budget: BudgetConfig::default(),
            schedule: Schedule::default(),
            data: Vec::new(),
            holdout_pct: 20.0,
            max_candidates: 1,
            retries: 2,
            mutations: 50,
            reflect_every: 7,
            allow_promote: false,
            workdir: PathBuf::from("candidates"),
            gates: EvolveGates::default(),
        }
    }
}

/// The roles of a night.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Analyst,
    Author,
    Reviewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Author => "author",
            Role::Reviewer => "reviewer",
        }
    }
}

impl EvolveConfig {
    /// Parses `text`, the contents of `origin`; a bad value is one line:
    /// `origin:line: what`.
    pub fn parse(text: &str, origin: &str) -> Result<EvolveConfig, String> {
        let config: EvolveConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            format!(
                "{origin}:{line}: {}",
                keel_model::shown::message(e.message().trim())
            )
        })?;
        config
            .schedule
            .check()
            .map_err(|e| format!("{origin}: {e}"))?;
        if !config.gates.pbo_splits.is_multiple_of(2) {
            return Err(format!(
                "{origin}: gates.pbo_splits {} is odd; it must be even",
                config.gates.pbo_splits
            ));
        }
        for role in [Role::Analyst, Role::Author, Role::Reviewer] {
            let r = config.role(role);
            if r.kind != ProviderKind::Offline && r.model.trim().is_empty() {
                return Err(format!(
                    "{origin}: the {} is played by {} but names no model",
                    role.as_str(),
                    r.kind.as_str()
                ));
            }
            if r.kind != ProviderKind::Offline && !config.prices.contains_key(&r.model) {
                return Err(format!(
                    "{origin}: no [prices.\"{}\"] for the {}'s model: a night's budget needs every model's price",
                    r.model,
                    role.as_str()
                ));
            }
        }
        Ok(config)
    }

    /// Reads `path`; a file that is not there is the defaults.
    pub fn load(path: &Path) -> anyhow::Result<EvolveConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(EvolveConfig::default());
            }
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        let mut config =
            EvolveConfig::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.workdir.is_relative() {
            config.workdir = base.join(&config.workdir);
        }
        config.data = config
            .data
            .iter()
            .map(|spec| relative_data(spec, base))
            .collect();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let roles = [
            Some(&mut config.provider),
            config.analyst.as_mut(),
            config.author.as_mut(),
            config.reviewer.as_mut(),
        ];
        for rc in roles.into_iter().flatten() {
            if let Some(file) = &rc.key_file {
                rc.key_file = Some(key_path(file, base, home.as_deref())?);
            }
        }
        Ok(config)
    }

    /// The provider of `role`.
    pub fn role(&self, role: Role) -> &RoleConfig {
        let own = match role {
            Role::Analyst => &self.analyst,
            Role::Author => &self.author,
            Role::Reviewer => &self.reviewer,
        };
        own.as_ref().unwrap_or(&self.provider)
    }
}

/// A `key_file` as written: `~/…` is in the home directory `home`, a
/// relative path is beside `evolve.toml` (in `base`), not wherever keel
/// happens to be started.
fn key_path(file: &Path, base: &Path, home: Option<&Path>) -> anyhow::Result<PathBuf> {
    match file.strip_prefix("~") {
        Ok(rest) => match home {
            Some(home) => Ok(home.join(rest)),
            None => anyhow::bail!(
                "key_file {}: ~ stands for the home directory, and HOME is not set",
                keel_model::shown::quoted(&file.display().to_string())
            ),
        },
        Err(_) if file.is_relative() => Ok(base.join(file)),
        Err(_) => Ok(file.to_path_buf()),
    }
}

/// A data spec with its file made relative to `base` (store specs kept).
fn relative_data(spec: &str, base: &Path) -> String {
    if spec.contains('@') && !spec.contains('=') && !base.join(spec).exists() {
        return spec.to_owned();
    }
    match spec.split_once('=') {
        Some((symbol, file)) if Path::new(file).is_relative() => {
            format!("{symbol}={}", base.join(file).display())
        }
        None if Path::new(spec).is_relative() => base.join(spec).display().to_string(),
        _ => spec.to_owned(),
    }
}

/// Output tokens asked for in one call.
pub const MAX_TOKENS: Bounds<u32> = Bounds::new(1, 200_000);
/// A model's price per million tokens.
pub const PRICE: Bounds<f64> = Bounds::new(0.0, 10_000.0);
/// A night's budget in US dollars.
pub const USD: Bounds<f64> = Bounds::new(0.0, 10_000.0);
/// A night's budget in tokens.
pub const TOKENS: Bounds<u64> = Bounds::new(0, 1_000_000_000);

mod bounded {
    use super::{MAX_TOKENS, PRICE, TOKENS, USD};
    use keel_model::Bounds;
    use serde::Deserializer;

    pub(super) fn max_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        MAX_TOKENS.deserialize("max_tokens", d)
    }
    pub(super) fn price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        PRICE.deserialize("price", d)
    }
    pub(super) fn usd<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        USD.deserialize("usd", d)
    }
    pub(super) fn tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        TOKENS.deserialize("tokens", d)
    }
    pub(super) fn probability<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(0.0, 1.0).deserialize("probability", d)
    }
    pub(super) fn splits<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Bounds::new(2, 16).deserialize("pbo_splits", d)
    }
    pub(super) fn sharpe<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(-1e6, 1e6).deserialize("min_holdout_sharpe", d)
    }
    pub(super) fn return_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(-100.0, 10_000.0).deserialize("min_stress_return_pct", d)
    }
    pub(super) fn min_return_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(-100.0, 10_000.0).deserialize("min_return_pct", d)
    }
    pub(super) fn min_fold_return_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(-100.0, 10_000.0).deserialize("min_fold_return_pct", d)
    }
    pub(super) fn probes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        // At least one: no probe would let a strategy that peeks through.
        Bounds::new(1, 50).deserialize("lookahead_probes", d)
    }
    pub(super) fn holdout_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Bounds::new(5.0, 50.0).deserialize("holdout_pct", d)
    }
    pub(super) fn candidates<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Bounds::new(0, 20).deserialize("max_candidates", d)
    }
    pub(super) fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Bounds::new(0, 10).deserialize("retries", d)
    }
    pub(super) fn mutations<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Bounds::new(1, 1000).deserialize("mutations", d)
    }
    pub(super) fn nights<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Bounds::new(1, 365).deserialize("reflect_every", d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_found_from_home_or_beside_the_config() {
        let (base, home) = (Path::new("/etc/keel"), Some(Path::new("/home/me")));
        let at = |file: &str| key_path(Path::new(file), base, home).expect(file);
        assert_eq!(at("~/.keel/a.key"), Path::new("/home/me/.keel/a.key"));
        assert_eq!(at("keys/a.key"), Path::new("/etc/keel/keys/a.key"));
        assert_eq!(at("/srv/a.key"), Path::new("/srv/a.key"));
        // `~user` is not expanded: a file of that name beside the config.
        assert_eq!(at("~bob/a.key"), Path::new("/etc/keel/~bob/a.key"));
        let err = key_path(Path::new("~/a.key"), base, None).expect_err("no HOME");
        assert!(err.to_string().contains("HOME is not set"), "{err}");
    }

    #[test]
    fn an_empty_file_is_the_safe_defaults() {
        let c = EvolveConfig::parse("", "e.toml").expect("parses");
        assert_eq!(c, EvolveConfig::default());
        assert_eq!(c.role(Role::Author).kind, ProviderKind::Offline);
        assert!(!c.allow_promote);
        // 2026-12-01T12:00Z: today's 02:00 UTC has passed.
        let noon = 1_796_126_400_000;
        assert_eq!(c.schedule.latest(noon), Ok(noon - 10 * 3_600_000));
    }

    #[test]
    fn roles_override_the_default_provider() {
        let text = r#"
[provider]
kind = "anthropic"
model = "claude-x"
key_env = "ANTHROPIC_API_KEY"

[author]
kind = "openai"
model = "qwen"
base_url = "http://127.0.0.1:11434/v1"

[prices.claude-x]
input_usd_per_mtok = 3
output_usd_per_mtok = 15

[prices.qwen]
input_usd_per_mtok = 0
output_usd_per_mtok = 0

[schedule]
at = "01:30"
time_zone = "+02:00"
"#;
        let c = EvolveConfig::parse(text, "e.toml").expect("parses");
        assert_eq!(c.role(Role::Analyst).label(), "anthropic:claude-x");
        assert_eq!(c.role(Role::Author).label(), "openai:qwen");
        assert_eq!(c.role(Role::Reviewer).label(), "anthropic:claude-x");
        // 01:30 at +02:00 is 23:30 UTC the day before.
        let noon = 1_796_126_400_000;
        assert_eq!(
            c.schedule.latest(noon),
            Ok(noon - 12 * 3_600_000 - 30 * 60_000)
        );
    }

    #[test]
    fn a_named_zone_follows_its_daylight_saving() {
        let paris = Schedule {
            at: "02:00".into(),
            time_zone: "Europe/Paris".into(),
        };
        // 2026-07-01T12:00Z (summer, UTC+2) and 2026-01-15T12:00Z (UTC+1).
        assert_eq!(paris.latest(1_782_907_200_000), Ok(1_782_864_000_000));
        assert_eq!(paris.latest(1_768_478_400_000), Ok(1_768_438_800_000));
        // Before 02:00 in Paris: yesterday's.
        assert_eq!(
            paris.latest(1_782_864_000_000 - 1),
            Ok(1_782_864_000_000 - 86_400_000)
        );
    }

    #[test]
    fn a_bad_value_is_one_line_naming_file_line_and_key() {
        let cases = [
            (
                "holdout_pct = 80\n",
                "e.toml:1: holdout_pct 80 is outside [5, 50]",
            ),
            (
                "[budget]\nusd = -1\n",
                "e.toml:2: usd -1 is outside [0, 10000]",
            ),
            (
                "[gates]\nmin_dsr = 1.5\n",
                "e.toml:2: probability 1.5 is outside [0, 1]",
            ),
            (
                "[gates]\nlookahead_probes = 0\n",
                "e.toml:2: lookahead_probes 0 is outside [1, 50]",
            ),
            (
                "[gates]\npbo_splits = 7\n",
                "e.toml: gates.pbo_splits 7 is odd",
            ),
            (
                "[schedule]\nat = \"25:00\"\n",
                "e.toml: schedule.at \"25:00\": expected HH:MM",
            ),
            (
                "[schedule]\ntime_zone = \"Mars/Olympus\"\n",
                "expected UTC, an offset such as +02:00, or a zone such as Europe/Paris",
            ),
            (
                "[schedule]\ntime_zone = \"+15:00\"\n",
                "an offset is +HH:MM or -HH:MM, at most 14 hours",
            ),
            (
                "[provider]\nkind = \"anthropic\"\n",
                "the analyst is played by anthropic but names no model",
            ),
            (
                "[provider]\nkind = \"openai\"\nmodel = \"m\"\n",
                "no [prices.\"m\"] for the analyst's model",
            ),
            (
                "[provider]\napi_key = \"sk-123\"\n",
                "e.toml:2: unknown field `api_key`",
            ),
            (
                "mutations = 0\n",
                "e.toml:1: mutations 0 is outside [1, 1000]",
            ),
        ];
        for (text, expected) in cases {
            let e = EvolveConfig::parse(text, "e.toml").expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(!e.contains("sk-123"), "a key is never echoed: {e}");
        }
    }

    #[test]
    fn the_readmes_sample_evolve_toml_is_accepted() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n# evolve.toml")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has a sample evolve.toml");
        let config = EvolveConfig::parse(&format!("#{block}"), "README.md").expect("accepted");
        assert_eq!(config.role(Role::Analyst).kind, ProviderKind::Anthropic);
        assert_eq!(config.role(Role::Author).kind, ProviderKind::Openai);
        assert_eq!(config.budget.usd, 2.0);
    }
}
