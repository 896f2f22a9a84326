//! `keel run --telegram FILE`: the bridge's settings, a `[telegram]` table
//! checked whole before the run trades, and the bot token, which comes from
//! `KEEL_TELEGRAM_TOKEN` or a file only its owner may read, never from the
//! settings file itself (those get copied, pasted and committed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_model::{Bounds, shown};
use serde::{Deserialize, Deserializer};

use crate::evolve::provider::{Key, KeyError};
use crate::store::events::Kind;

/// The environment variable holding the bot token.
pub const TOKEN_ENV: &str = "KEEL_TELEGRAM_TOKEN";
/// The long poll's timeout, seconds (Telegram holds a poll at most 50 s).
pub const POLL_TIMEOUT_SECS: Bounds<u64> = Bounds::new(1, 50);
/// How long a confirmation stays valid, seconds.
pub const CONFIRM_SECS: Bounds<u64> = Bounds::new(5, 600);
/// Most ids the allow-lists name together: enough for a desk, and what a
/// notification round costs stays bounded.
pub const MAX_ALLOWED_IDS: usize = 100;
/// The event kinds notified unless `notify` says otherwise.
pub const DEFAULT_NOTIFY: [Kind; 5] = [
    Kind::Fill,
    Kind::Halt,
    Kind::State,
    Kind::Candidate,
    Kind::Evolution,
];

/// Who may talk to the bot. A message is accepted when its sender is an
/// allowed user (from any chat, a private one included) or when it was
/// written in an allowed chat (by any of its members); anything else is
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    pub users: Vec<i64>,
    pub chats: Vec<i64>,
}

impl AllowList {
    /// Whether a message from `user` (none for a channel post) in `chat` is
    /// accepted.
    pub fn admits(&self, user: Option<i64>, chat: i64) -> bool {
        user.is_some_and(|u| self.users.contains(&u)) || self.chats.contains(&chat)
    }

    /// Where notifications go: every allowed chat, and each allowed user's
    /// private chat with the bot (whose id is the user's), once each.
    pub fn notified_chats(&self) -> Vec<i64> {
        let mut chats = self.chats.clone();
        for user in &self.users {
            if !chats.contains(user) {
                chats.push(*user);
            }
        }
        chats
    }
}

/// The bot token: `Debug` and `Display` print `[redacted]`, and it is only
/// ever put into the path of a Bot API request.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(Key);

impl BotToken {
    /// The token in its one place: `/bot<token>/<method>`.
    pub(super) fn expose(&self) -> &str {
        self.0.expose()
    }

    /// A token of the shape BotFather gives (`123456:ABC-def_…`): it goes
    /// into a URL path, so nothing else may.
    fn checked(key: Key, source: &str) -> Result<BotToken, String> {
        let token = key.expose();
        let well_formed = token.split_once(':').is_some_and(|(bot, secret)| {
            !bot.is_empty()
                && bot.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        match well_formed {
            true => Ok(BotToken(key)),
            false => Err(format!(
                "{source} does not hold a bot token (digits, a colon, then letters, digits, _ or -)"
            )),
        }
    }
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The bridge's settings, checked, with its token.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub allow: AllowList,
    /// The Bot API's base URL, without a trailing `/`.
    pub api_url: String,
    pub poll_timeout: Duration,
    pub confirm_within: Duration,
    /// The event kinds pushed to the notified chats.
    pub notify: Vec<Kind>,
    pub token: BotToken,
}

/// The file: one `[telegram]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    telegram: Section,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Section {
    allow_users: Vec<i64>,
    allow_chats: Vec<i64>,
    api_url: String,
    token_file: Option<PathBuf>,
    #[serde(deserialize_with = "poll_timeout_secs")]
    poll_timeout_secs: u64,
    #[serde(deserialize_with = "confirm_secs")]
    confirm_secs: u64,
    #[serde(deserialize_with = "notify")]
    notify: Vec<Kind>,
}

impl Default for Section {
    fn default() -> Section {
        Section {
            allow_users: Vec::new(),
            allow_chats: Vec::new(),
            api_url: "https://api.telegram.org".into(),
            token_file: None,
            poll_timeout_secs: 30,
            confirm_secs: 60,
            notify: DEFAULT_NOTIFY.to_vec(),
        }
    }
}

fn poll_timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    POLL_TIMEOUT_SECS.deserialize("poll_timeout_secs", d)
}

fn confirm_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    CONFIRM_SECS.deserialize("confirm_secs", d)
}

/// Event kind names, each known, each once.
fn notify<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Kind>, D::Error> {
    let mut kinds = Vec::new();
    for name in Vec::<String>::deserialize(d)? {
        let kind = Kind::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!(
                "notify: unknown event kind {}, expected one of {}",
                shown::quoted(&name),
                known.join(", ")
            ))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// Where the token comes from: `token_file` (relative to the settings
/// file) when given, else the environment.
#[derive(Debug, Clone, PartialEq)]
enum TokenSource {
    File(PathBuf),
    Env,
}

impl TelegramConfig {
    /// Reads and checks `path` and loads the token; every refusal is one
    /// line naming the file (and the key at fault).
    pub fn load(path: &Path) -> anyhow::Result<TelegramConfig> {
        let origin = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if meta.len() > 64 * 1024 {
            anyhow::bail!("{origin}: over 64 KiB, not a Telegram settings file");
        }
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let (settings, source) = Settings::parse(&text, &origin).map_err(anyhow::Error::msg)?;
        let token = match source {
            TokenSource::File(file) => {
                let file = path.parent().unwrap_or(Path::new(".")).join(file);
                let key = Key::from_file(&file)
                    .map_err(|e| anyhow::anyhow!("{origin}: token_file: {}", unprefixed(&e)))?;
                BotToken::checked(key, &format!("token_file {}", file.display()))
            }
            TokenSource::Env => match Key::from_env(TOKEN_ENV) {
                Ok(key) => BotToken::checked(key, TOKEN_ENV),
                Err(KeyError::EnvMissing(_)) => Err(format!(
                    "no bot token: set {TOKEN_ENV}, or token_file in [telegram]"
                )),
                Err(e) => Err(unprefixed(&e)),
            },
        }
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(settings.with_token(token))
    }
}

/// A key's error in words about a bot token (it says "API key: " first).
fn unprefixed(e: &KeyError) -> String {
    let words = e.to_string();
    words.strip_prefix("API key: ").unwrap_or(&words).to_owned()
}

/// The settings without the token, as parsed.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    allow: AllowList,
    api_url: String,
    poll_timeout: Duration,
    confirm_within: Duration,
    notify: Vec<Kind>,
}

impl Settings {
    /// Parses `text`, the contents of `origin`; a bad value is one line,
    /// `origin:line: what`, or `origin: key: what`.
    fn parse(text: &str, origin: &str) -> Result<(Settings, TokenSource), String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            format!("{origin}:{line}: {}", shown::message(e.message().trim()))
        })?;
        let s = file.telegram;
        let ids = s.allow_users.len() + s.allow_chats.len();
        if ids == 0 {
            return Err(format!(
                "{origin}: allow_users and allow_chats are both empty: name at least one user or chat id, or no one could use the bot"
            ));
        }
        if ids > MAX_ALLOWED_IDS {
            return Err(format!(
                "{origin}: allow_users and allow_chats name {ids} ids; at most {MAX_ALLOWED_IDS}"
            ));
        }
        let api_url = api_url(&s.api_url).map_err(|e| {
            format!(
                "{origin}: api_url {}: {e}",
                shown::quoted(s.api_url.trim_end_matches('/'))
            )
        })?;
        let source = match s.token_file {
            Some(file) if file.as_os_str().is_empty() => {
                return Err(format!("{origin}: token_file is empty"));
            }
            Some(file) => TokenSource::File(file),
            None => TokenSource::Env,
        };
        let settings = Settings {
            allow: AllowList {
                users: s.allow_users,
                chats: s.allow_chats,
            },
            api_url,
            poll_timeout: Duration::from_secs(s.poll_timeout_secs),
            confirm_within: Duration::from_secs(s.confirm_secs),
            notify: s.notify,
        };
        Ok((settings, source))
    }

    fn with_token(self, token: BotToken) -> TelegramConfig {
        TelegramConfig {
            allow: self.allow,
            api_url: self.api_url,
            poll_timeout: self.poll_timeout,
            confirm_within: self.confirm_within,
            notify: self.notify,
            token,
        }
    }
}

/// The Bot API's base URL, checked: the token travels in its path, so it
/// goes over HTTPS, or plain HTTP to this machine only (a local Bot API
/// server, a test's fake).
fn api_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    let Some(host) = url.host_str() else {
        return Err("expected an http(s) URL with a host".into());
    };
    let loopback = loopback_host(host);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("plain http carries the token in clear; use https".into()),
        _ => return Err("expected an http(s) URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a user or password in the URL is not supported".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected no query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether `url` (a checked `api_url`) names this machine: no proxy then.
pub(super) fn is_loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(loopback_host))
        .unwrap_or(false)
}

/// `localhost`, `127.x.x.x` or `[::1]`.
fn loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_minimal_table_takes_the_defaults() {
        let (s, source) =
            Settings::parse("[telegram]\nallow_users = [42]\n", "t.toml").expect("parses");
        assert_eq!(s.allow.users, [42]);
        assert!(s.allow.chats.is_empty());
        assert_eq!(s.api_url, "https://api.telegram.org");
        assert_eq!(s.poll_timeout, Duration::from_secs(30));
        assert_eq!(s.confirm_within, Duration::from_secs(60));
        assert_eq!(s.notify, DEFAULT_NOTIFY);
        assert_eq!(source, TokenSource::Env);
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
[telegram]
allow_users = [1, 2]
allow_chats = [-100123]
api_url = "http://127.0.0.1:8081/"
token_file = "bot.token"
poll_timeout_secs = 5
confirm_secs = 30
notify = ["fill", "halt", "fill"]
"#;
        let (s, source) = Settings::parse(text, "t.toml").expect("parses");
        assert_eq!(s.api_url, "http://127.0.0.1:8081");
        assert_eq!(s.poll_timeout, Duration::from_secs(5));
        assert_eq!(s.confirm_within, Duration::from_secs(30));
        assert_eq!(s.notify, [Kind::Fill, Kind::Halt]);
        assert_eq!(source, TokenSource::File("bot.token".into()));
        assert_eq!(s.allow.notified_chats(), [-100123, 1, 2]);
    }

    #[test]
    fn the_allow_list_admits_a_user_anywhere_and_anyone_in_a_chat() {
        let allow = AllowList {
            users: vec![7],
            chats: vec![-100],
        };
        let cases = [
            (Some(7), 7, true, "an allowed user in their private chat"),
            (Some(7), -555, true, "an allowed user in another group"),
            (Some(8), -100, true, "anyone in an allowed chat"),
            (None, -100, true, "a channel post in an allowed chat"),
            (Some(8), 8, false, "a stranger in their private chat"),
            (Some(8), -555, false, "a stranger in another group"),
            (None, -555, false, "a channel post elsewhere"),
        ];
        for (user, chat, admitted, name) in cases {
            assert_eq!(allow.admits(user, chat), admitted, "{name}");
        }
        let both = AllowList {
            users: vec![7],
            chats: vec![7],
        };
        assert_eq!(both.notified_chats(), [7], "a chat is notified once");
    }

    #[test]
    fn bad_settings_are_one_line_naming_the_file_and_key() {
        let cases = [
            (
                "[telegram]\n",
                "t.toml: allow_users and allow_chats are both empty",
            ),
            (
                "[telegram]\nallow_users = []\nallow_chats = []\n",
                "both empty",
            ),
            (
                "[telegram]\nallow_users = [1]\nallow_user = [2]\n",
                "t.toml:3: unknown field `allow_user`",
            ),
            (
                "[telegram]\nallow_users = [1]\npoll_timeout_secs = 1000\n",
                "t.toml:3: poll_timeout_secs 1000 is outside [1, 50]",
            ),
            (
                "[telegram]\nallow_users = [1]\nconfirm_secs = 1\n",
                "t.toml:3: confirm_secs 1 is outside [5, 600]",
            ),
            (
                "[telegram]\nallow_users = [1]\nnotify = [\"fils\"]\n",
                "t.toml:3: notify: unknown event kind \"fils\", expected one of bar, signal",
            ),
            (
                "[telegram]\nallow_users = [1]\napi_url = \"http://api.telegram.org\"\n",
                "t.toml: api_url \"http://api.telegram.org\": plain http carries the token",
            ),
            (
                "[telegram]\nallow_users = [1]\napi_url = \"ftp://127.0.0.1\"\n",
                "expected an http(s) URL",
            ),
            (
                "[telegram]\nallow_users = [1]\ntoken = \"1:abc\"\n",
                "t.toml:3: unknown field `token`",
            ),
            ("allow_users = [1]\n", "unknown field `allow_users`"),
            (
                "[telegram]\nallow_users = [\"me\"]\n",
                "t.toml:2: invalid type",
            ),
        ];
        for (text, expected) in cases {
            let e = Settings::parse(text, "t.toml").expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(!e.contains("1:abc"), "a token is never echoed: {e}");
        }
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let text = format!("[telegram]\nallow_users = [{}]\n", many.join(", "));
        let e = Settings::parse(&text, "t.toml").expect_err("too many");
        assert!(e.contains("name 101 ids; at most 100"), "{e}");
    }

    fn settings_with_token_file(mode: u32, token: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bot.token");
        std::fs::write(&file, token).expect("write token");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let settings = dir.path().join("telegram.toml");
        std::fs::write(
            &settings,
            "[telegram]\nallow_users = [1]\ntoken_file = \"bot.token\"\n",
        )
        .expect("write settings");
        (dir, settings)
    }

    #[test]
    fn a_token_file_must_be_private_and_hold_a_token() {
        let secret = "123456:AAH-secret_Token";
        let (_dir, path) = settings_with_token_file(0o600, &format!("{secret}\n"));
        let config = TelegramConfig::load(&path).expect("a 0600 file is read");
        assert_eq!(config.token.expose(), secret);
        assert!(!format!("{config:?}").contains(secret), "{config:?}");

        let (_dir, path) = settings_with_token_file(0o644, secret);
        let e = format!("{:#}", TelegramConfig::load(&path).expect_err("0644"));
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        let expected = format!(
            "token_file: {} is readable by others (mode 644)",
            path.with_file_name("bot.token").display()
        );
        assert!(e.contains(&expected), "{e}");
        assert!(!e.contains(secret) && e.lines().count() == 1, "{e}");

        let (_dir, path) = settings_with_token_file(0o600, "123456:bad/token?x=1");
        let e = format!("{:#}", TelegramConfig::load(&path).expect_err("shape"));
        assert!(e.contains("does not hold a bot token"), "{e}");
        assert!(!e.contains("bad/token"), "{e}");
    }

    #[test]
    fn a_token_is_shaped_as_botfather_gives_it() {
        let cases = [
            ("123:abc_DEF-9", true),
            ("123:", false),
            (":abc", false),
            ("12a:abc", false),
            ("123:abc/def", false),
            ("123abc", false),
        ];
        for (token, ok) in cases {
            let checked = BotToken::checked(Key::for_tests(token), "T");
            assert_eq!(checked.is_ok(), ok, "{token}");
        }
    }

    #[test]
    fn the_example_and_the_readmes_sample_are_accepted() {
        let example = include_str!("../../../examples/telegram.toml");
        let (s, _) = Settings::parse(example, "examples/telegram.toml").expect("accepted");
        assert_eq!(s.allow.users, [123456789]);
        assert_eq!(s.notify, DEFAULT_NOTIFY);
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n[telegram]")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has a sample [telegram] table");
        let (s, _) = Settings::parse(&format!("[telegram]{block}"), "README.md").expect("accepted");
        assert_eq!(s.allow.chats, [-1001234567890]);
    }

    #[test]
    fn loopback_is_told_from_elsewhere() {
        assert!(is_loopback("http://127.0.0.1:9"));
        assert!(is_loopback("http://localhost"));
        assert!(is_loopback("http://[::1]:80"));
        assert!(!is_loopback("https://api.telegram.org"));
    }
}
