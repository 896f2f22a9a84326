//! The Telegram bridge as an operator's phone meets it: a real `keel run
//! --paper --telegram FILE` against the fake Bot API (`fakes::telegram`):
//! reads answered to the allow-list only, a stranger ignored and logged,
//! `/kill` at once, `/resume` only on a fresh confirmation, fills
//! notified, flood control waited out, the token never printed, and bad
//! settings refused before the run starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fakes::telegram::FakeTelegram;
use crate::paper::{Setup, snapshots, text, until, wait_for_control};
use crate::support::example;

/// Distinctive, so its absence from every output means something.
const TOKEN: &str = "4242424242:AAF-keel_test_SECRET_token-0xDEADBEEF";
/// The allowed user (and so their private chat).
const OPERATOR: i64 = 1001;
/// The allowed group chat: anyone in it is heard.
const DESK: i64 = -100_777;
/// Neither allowed nor in an allowed chat.
const STRANGER: i64 = 666;
const ELSEWHERE: i64 = -100_999;
const WITHIN: Duration = Duration::from_secs(60);

/// A settings file for the fake, with `extra` keys in the table.
fn settings(dir: &Path, fake: &FakeTelegram, extra: &str) -> PathBuf {
    let path = dir.join("telegram.toml");
    let text = format!(
        "[telegram]\nallow_users = [{OPERATOR}]\nallow_chats = [{DESK}]\napi_url = \"{}\"\npoll_timeout_secs = 2\nconfirm_secs = 5\n{extra}",
        fake.url()
    );
    std::fs::write(&path, text).expect("write settings");
    path
}

/// `keel run --paper --telegram FILE` with sma-cross trading the sample,
/// the token in the environment.
fn spawn(s: &Setup, db: &Path, settings: &Path, token: &str) -> Child {
    spawn_logging(s, db, settings, token, None)
}

/// `spawn`, with `KEEL_LOG` set to `log`.
fn spawn_logging(s: &Setup, db: &Path, settings: &Path, token: &str, log: Option<&str>) -> Child {
    let strategy = format!("{},fast=5,slow=20", example("sma-cross").display());
    let settings = settings.display().to_string();
    let args = [
        "run",
        "--paper",
        "--feed",
        "sample:3000",
        "--speed",
        "300x",
        "--strategy",
        &strategy,
        "--telegram",
        &settings,
    ];
    let mut command = s.command(db, &args);
    if let Some(log) = log {
        command.env("KEEL_LOG", log);
    }
    command
        .env("KEEL_TELEGRAM_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel run")
}

/// The run's trading state, as API v1 serves it.
fn state(db: &Path) -> String {
    let (status, body) =
        keel_host::control::request(db, "GET", "/v1/system", "").expect("GET /v1/system");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    answer["data"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Stops the run and returns what it printed, which must not hold the
/// token nor any part of its secret.
fn stop(mut child: Child) -> Output {
    child.kill().expect("SIGKILL");
    let out = child.wait_with_output().expect("reap");
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let secret = TOKEN.split_once(':').map_or(TOKEN, |(_, s)| s);
    assert!(
        !printed.contains(secret),
        "the token was printed: {printed}"
    );
    assert!(!printed.contains("panicked"), "{printed}");
    out
}

/// `who` says `command` in their private chat; the answer containing `needle`.
fn ask(fake: &FakeTelegram, who: i64, command: &str, needle: &str) -> String {
    let before = fake.sent_to(who).len();
    fake.say(who, who, command);
    fake.wait_for(who, before, needle, WITHIN).text
}

#[test]
fn telegram_answers_the_allow_list_ignores_a_stranger_and_notifies_fills() {
    let s = Setup::new();
    let db = s.db("telegram.db");
    let fake = FakeTelegram::start(TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let child = spawn(&s, &db, &settings(dir.path(), &fake, ""), TOKEN);
    wait_for_control(&db);
    until("bars booked", WITHIN, || snapshots(&db) >= 5);

    let status = ask(&fake, OPERATOR, "/status", "sma-cross#1");
    assert!(status.starts_with("run 1 · paper · ACTIVE"), "{status}");
    let positions = ask(&fake, OPERATOR, "/positions", "sma-cross#1");
    assert!(positions.starts_with("sma-cross#1: "), "{positions}");
    let reads = [
        ("/health", "feed sample:3000: healthy"),
        ("/risk", "trading state ACTIVE"),
        ("/performance", "sma-cross#1: "),
        ("/strategy", "first strategy run"),
        ("/candidates", "no candidates"),
        ("/tokens", "no evolution nights yet"),
        ("/trades", "trades"),
        ("/help", "/kill: halt at once"),
        ("/launch", "unknown command /launch"),
    ];
    for (command, needle) in reads {
        ask(&fake, OPERATOR, command, needle);
    }
    // Anyone in the allowed group is heard there.
    let before = fake.sent_to(DESK).len();
    fake.say(STRANGER, DESK, "/status");
    fake.wait_for(DESK, before, "sma-cross#1", WITHIN);

    // A stranger, in their own chat or another group, is not.
    fake.say(STRANGER, STRANGER, "/kill");
    fake.say(STRANGER, ELSEWHERE, "/pause");
    fake.press(STRANGER, STRANGER, "confirm:000000");
    // A stranger's flood does not flood the log.
    for _ in 0..50 {
        fake.say(STRANGER, STRANGER, "hello");
    }
    // Updates are taken in order: once this is answered, those were taken.
    ask(&fake, OPERATOR, "/status", "ACTIVE");
    assert!(
        fake.sent_to(STRANGER).is_empty(),
        "{:?}",
        fake.sent_to(STRANGER)
    );
    assert!(fake.sent_to(ELSEWHERE).is_empty());
    let answered = fake
        .calls()
        .iter()
        .filter(|c| c.method == "answerCallbackQuery")
        .count();
    assert_eq!(answered, 0, "a stranger's press is not answered");
    assert_eq!(state(&db), "ACTIVE", "a stranger's /kill does nothing");

    // Fills are notified to the group and to the operator's private chat.
    let fill = fake.wait_for(DESK, 0, "fill", WITHIN);
    assert!(
        fill.text.contains("sma-cross#1") && fill.text.contains("SAMPLE/USD"),
        "{fill:?}"
    );
    fake.wait_for(OPERATOR, 0, " SAMPLE/USD @ ", WITHIN);

    let out = stop(child);
    let log = text(&out.stderr);
    assert!(
        log.contains(&format!(
            "ignored an update from user {STRANGER} in chat {STRANGER}"
        )) && log.contains(&format!("from user {STRANGER} in chat {ELSEWHERE}")),
        "{log}"
    );
    assert!(
        !log.contains("/pause"),
        "a stranger's text is not logged: {log}"
    );
    let logged = format!("from user {STRANGER} in chat {STRANGER}:");
    assert_eq!(
        log.matches(&logged).count(),
        1,
        "logged once a minute: {log}"
    );
}

#[test]
fn telegram_kill_acts_at_once_and_resume_waits_for_a_fresh_confirmation() {
    let s = Setup::new();
    let db = s.db("telegram.db");
    let fake = FakeTelegram::start(TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let child = spawn(&s, &db, &settings(dir.path(), &fake, ""), TOKEN);
    wait_for_control(&db);

    let paused = ask(&fake, OPERATOR, "/pause", "paused");
    assert!(paused.contains("REDUCE_ONLY"), "{paused}");
    assert_eq!(state(&db), "REDUCE_ONLY");
    // The change is notified, naming who made it.
    fake.wait_for(
        DESK,
        0,
        "trading state REDUCE_ONLY (by operator): telegram user 1001 (/pause)",
        WITHIN,
    );

    // /resume asks; without an answer nothing happens.
    let before = fake.sent_to(OPERATOR).len();
    fake.say(OPERATOR, OPERATOR, "/resume");
    let asked = fake.wait_for(OPERATOR, before, "/confirm ", WITHIN);
    let code = confirmation_code(&asked.text);
    assert_eq!(asked.buttons(), [format!("confirm:{code}")]);
    ask(
        &fake,
        OPERATOR,
        "/confirm 000000",
        "wrong confirmation code: nothing was done",
    );
    assert_eq!(state(&db), "REDUCE_ONLY");
    // Too late, the right code does nothing either.
    std::thread::sleep(Duration::from_millis(5_500));
    ask(
        &fake,
        OPERATOR,
        &format!("/confirm {code}"),
        "expired: nothing was done",
    );
    assert_eq!(
        state(&db),
        "REDUCE_ONLY",
        "an expired confirmation does nothing"
    );

    // A fresh one, pressed in time, resumes.
    let before = fake.sent_to(OPERATOR).len();
    fake.say(OPERATOR, OPERATOR, "/resume");
    let code = confirmation_code(&fake.wait_for(OPERATOR, before, "/confirm ", WITHIN).text);
    let before = fake.sent_to(OPERATOR).len();
    fake.press(OPERATOR, OPERATOR, &format!("confirm:{code}"));
    fake.wait_for(OPERATOR, before, "resumed: trading state ACTIVE", WITHIN);
    assert_eq!(state(&db), "ACTIVE");
    assert!(fake.calls().iter().any(|c| {
        c.method == "answerCallbackQuery"
            && c.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("resumed"))
    }));
    ask(
        &fake,
        OPERATOR,
        &format!("/confirm {code}"),
        "nothing to confirm",
    );

    // /kill asks nothing.
    let killed = ask(&fake, OPERATOR, "/kill", "killed");
    assert!(killed.starts_with("killed: trading HALTED in "), "{killed}");
    assert_eq!(state(&db), "HALTED");
    fake.wait_for(
        DESK,
        0,
        "trading state HALTED (by operator): kill switch: telegram user 1001 (/kill)",
        WITHIN,
    );
    ask(&fake, OPERATOR, "/risk", "trading state HALTED");
    stop(child);
}

/// The code in "… Send /confirm CODE …".
fn confirmation_code(said: &str) -> String {
    said.split("/confirm ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {said:?}"))
        .to_owned()
}

#[test]
fn telegram_waits_out_a_429_and_keeps_working() {
    let s = Setup::new();
    let db = s.db("telegram.db");
    let fake = FakeTelegram::start(TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let child = spawn(
        &s,
        &db,
        &settings(dir.path(), &fake, "notify = []\n"),
        TOKEN,
    );
    wait_for_control(&db);
    until("a first poll", WITHIN, || {
        fake.calls().iter().any(|c| c.method == "getUpdates")
    });

    // The next poll is refused with retry_after = 2: nothing is asked
    // again before 2 s have passed.
    fake.answer_next(None, 429, FakeTelegram::too_many_requests(2));
    until("the 429 and a call after it", WITHIN, || {
        let calls = fake.calls();
        calls
            .iter()
            .position(|c| c.status == 429)
            .is_some_and(|i| i + 1 < calls.len())
    });
    let calls = fake.calls();
    let i = calls.iter().position(|c| c.status == 429).expect("the 429");
    let waited = calls[i + 1].at - calls[i].at;
    assert!(
        waited >= Duration::from_secs(2),
        "asked again after {waited:?}"
    );

    // A reply refused the same way is sent again once the wait is over.
    fake.answer_next(Some("sendMessage"), 429, FakeTelegram::too_many_requests(2));
    let asked = Instant::now();
    let status = ask(&fake, OPERATOR, "/status", "sma-cross#1");
    assert!(status.contains("ACTIVE"), "{status}");
    assert!(asked.elapsed() >= Duration::from_secs(2));
    let sends: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "sendMessage")
        .collect();
    assert_eq!(
        sends.iter().map(|c| c.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert!(sends[1].at - sends[0].at >= Duration::from_secs(2));
    // And the bridge keeps working.
    ask(&fake, OPERATOR, "/positions", "sma-cross#1");
    assert!(fake.sent_to(DESK).is_empty(), "notify = [] sends nothing");
    stop(child);
}

#[test]
fn telegram_settings_are_refused_before_the_run_starts_and_a_bad_token_is_never_shown() {
    let s = Setup::new();
    let fake = FakeTelegram::start(TOKEN);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("bot.token");
    std::fs::write(&token_file, TOKEN).expect("write token");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let cases = [
        (
            "allow_users = []\nallow_chats = []\n",
            "allow_users and allow_chats are both empty",
            true,
        ),
        (
            "allow_users = [1]\nallow_user = [2]\n",
            ":3: unknown field `allow_user`",
            true,
        ),
        (
            "allow_users = [1]\npoll_timeout_secs = 1000\n",
            ":3: poll_timeout_secs 1000 is outside [1, 50]",
            true,
        ),
        (
            "allow_users = [1]\ntoken_file = \"bot.token\"\n",
            "token_file: TOKEN_FILE is readable by others (mode 644); make it 0600",
            true,
        ),
        (
            "allow_users = [1]\n",
            "no bot token: set KEEL_TELEGRAM_TOKEN",
            false,
        ),
    ];
    let strategy = example("sma-cross").display().to_string();
    for (i, (table, expected, with_token)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("[telegram]\n{table}")).expect("write");
        let expected = expected.replace("TOKEN_FILE", &token_file.display().to_string());
        let db = s.db(&format!("bad{i}.db"));
        let file = path.display().to_string();
        let mut run = s.command(
            &db,
            &[
                "run",
                "--paper",
                "--strategy",
                &strategy,
                "--telegram",
                &file,
            ],
        );
        match with_token {
            true => run.env("KEEL_TELEGRAM_TOKEN", TOKEN),
            false => run.env_remove("KEEL_TELEGRAM_TOKEN"),
        };
        let out = run.output().expect("keel run");
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{table}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&file) && stderr.contains(&expected),
            "{table}: {stderr}"
        );
        assert!(!stderr.contains(TOKEN), "{stderr}");
        assert!(
            !db.exists(),
            "{table}: refused before the database is opened"
        );
    }

    // A token the Bot API refuses: the run trades on, says why, and never
    // shows the token, not even in a debug log of the HTTP client.
    let db = s.db("wrong-token.db");
    let wrong = "4242424242:AAF-keel_test_WRONG_token";
    let debug = Some("warn,keel=debug,keel_host=debug,reqwest=trace,hyper=debug,hyper_util=debug");
    let child = spawn_logging(&s, &db, &settings(dir.path(), &fake, ""), wrong, debug);
    wait_for_control(&db);
    until("a refused poll", WITHIN, || {
        fake.calls().iter().any(|c| c.status == 401)
    });
    assert_eq!(state(&db), "ACTIVE");
    let out = stop(child);
    let log = text(&out.stderr);
    assert!(
        log.contains("getUpdates: the Bot API refused the token (401 Unauthorized)"),
        "{log}"
    );
    assert!(!log.contains("WRONG_token"), "{log}");
}
