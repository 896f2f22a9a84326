//! The dashboard in a real headless browser (Chromium from Debian's
//! packages; `.ci/run` installs it), driven over the DevTools protocol:
//! the page asks for the token, shows the books, updates from the event
//! stream when a bar is booked, and its kill button (after its
//! confirmation) halts the engine. `KEEL_DASHBOARD_SCREENSHOT=FILE` also
//! saves what it showed (how `docs/dashboard.png` is made).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::events::endpoint;
use crate::paper::{Setup, wait_for_control};

/// A headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Errors the page logged (script exceptions, refused loads).
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

/// The browser to drive: `KEEL_CHROMIUM`, else the first of Debian's and
/// others' names on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("KEEL_CHROMIUM") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium on the PATH: `apt-get install -y chromium` (as .ci/run does) or set KEEL_CHROMIUM"
    );
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1440,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start Chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("Chromium did not open its DevTools port");
        let (socket, _) = tungstenite::connect(url.as_str()).expect("DevTools socket");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("session").to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1440, "height": 1100, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Sends one command (to the page's session once attached) and waits
    /// for its answer, keeping the errors the page reports meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to DevTools");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer");
            let Message::Text(text) = self.socket.read().expect("DevTools") else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(error) = v.get("error") {
                    panic!("{method}: {error}");
                }
                return v["result"].clone();
            }
            self.keep_errors(&v);
        }
    }

    fn keep_errors(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(v["params"]["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.errors.push(v["params"]["args"].to_string())
            }
            // A refused load (a 401 is expected once, for the wrong token)
            // is the network's; anything else logged as an error is not.
            Some("Log.entryAdded")
                if v["params"]["entry"]["level"] == "error"
                    && v["params"]["entry"]["source"] != "network" =>
            {
                self.errors.push(v["params"]["entry"]["text"].to_string())
            }
            _ => {}
        }
    }

    /// The value of `expression` in the page (awaited if a promise).
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait(&mut self, what: &str, expression: &str, within: Duration) {
        let started = Instant::now();
        while self.eval(expression) != Value::Bool(true) {
            assert!(started.elapsed() < within, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn number(&mut self, expression: &str) -> f64 {
        let v = self.eval(expression);
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.replace(',', "").parse().ok()))
            .unwrap_or_else(|| panic!("{expression}: {v}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_the_books_follows_the_bars_and_its_kill_button_halts_the_engine() {
    let s = Setup::new();
    let db = s.db("dashboard.db");
    let mut run = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    let (port, token) = endpoint(&db);
    let mut page = Browser::start();
    page.call(
        "Page.navigate",
        json!({ "url": format!("http://127.0.0.1:{port}/") }),
    );
    let within = Duration::from_secs(30);
    page.wait(
        "the page asks for the token",
        "document.readyState === 'complete' && !document.getElementById('sign-in').hidden",
        within,
    );

    // A wrong token is refused, and the page says so.
    page.eval(
        "document.getElementById('token').value = 'not-the-token';
         document.getElementById('sign-in-form').requestSubmit(); true",
    );
    page.wait(
        "a wrong token is refused",
        "document.getElementById('sign-in-error').textContent.includes('refused')",
        within,
    );

    // The token, entered once: the books, and the live stream.
    page.eval(&format!(
        "document.getElementById('token').value = '{token}';
         document.getElementById('sign-in-form').requestSubmit(); true"
    ));
    page.wait(
        "the dashboard loads",
        "document.body.dataset.ready === 'true'",
        within,
    );
    page.wait(
        "the book is shown",
        "[...document.querySelectorAll('#books .book h3')].some(h => h.textContent === 'sma-cross#1')",
        within,
    );
    page.wait(
        "the stream is live",
        "document.getElementById('stream').textContent === 'stream: live'",
        within,
    );
    assert_eq!(
        page.eval("document.getElementById('mode').textContent"),
        "PAPER"
    );
    assert_eq!(
        page.eval("localStorage.getItem('keel-control-token') !== null"),
        true,
        "the token is kept for the next visit"
    );

    // A bar booked shows without a reload: the bar count rises and the
    // activity list gains the bar's event.
    let bars = page.number("document.getElementById('bars').textContent");
    page.wait(
        "the bar count follows the engine",
        &format!(
            "Number(document.getElementById('bars').textContent.replace(/,/g, '')) > {bars} + 2"
        ),
        within,
    );
    page.wait(
        "bars appear in the activity stream",
        "document.querySelectorAll('#activity li[data-kind=bar]').length > 2",
        within,
    );
    page.wait(
        "the equity chart is drawn",
        "document.querySelector('#books .book svg path.equity') !== null",
        within,
    );
    page.wait(
        "a fill arrives, and a trade closes",
        "document.querySelectorAll('#activity li[data-kind=fill]').length > 0
         && document.querySelector('#trades tbody td.empty') === null",
        Duration::from_secs(90),
    );
    let first_trade = page.eval("document.querySelector('#trades tbody tr').cells[1].textContent");
    assert_eq!(first_trade, "sma-cross#1");
    if let Some(file) = std::env::var_os("KEEL_DASHBOARD_SCREENSHOT") {
        std::thread::sleep(Duration::from_secs(2));
        let shot = page.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png"))
            .expect("base64");
        std::fs::write(file, png).expect("write the screenshot");
    }

    // The kill button asks first; cancelling does nothing.
    page.eval("document.getElementById('kill').click(); true");
    page.wait(
        "the kill asks for confirmation",
        "document.getElementById('kill-dialog').open",
        within,
    );
    page.eval("document.getElementById('kill-cancel').click(); true");
    std::thread::sleep(Duration::from_millis(500));
    let system = |db| {
        let (status, body) =
            keel_host::control::request(db, "GET", "/v1/system", "").expect("system");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("JSON")["data"].clone()
    };
    assert_eq!(
        system(&db)["state"],
        "ACTIVE",
        "a cancelled kill does nothing"
    );

    // Confirmed, it halts the engine, and the page shows it.
    page.eval("document.getElementById('kill').click(); true");
    page.wait(
        "the dialog opens again",
        "document.getElementById('kill-dialog').open",
        within,
    );
    page.eval("document.getElementById('kill-confirm').click(); true");
    page.wait(
        "the page shows the halt",
        "document.body.dataset.state === 'HALTED' && document.body.dataset.killed === 'true'",
        within,
    );
    let after = system(&db);
    assert_eq!(
        (after["state"].clone(), after["killed"].clone()),
        ("HALTED".into(), true.into())
    );
    assert!(
        page.eval("document.getElementById('notice').textContent")
            .as_str()
            .is_some_and(|n| n.starts_with("Killed in")),
        "the page says what the kill did"
    );
    let conn = crate::paper::open(&db);
    let reason: String = conn
        .query_row("SELECT reason FROM trading_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("state");
    assert_eq!(reason, "kill switch: operator kill from the dashboard");
    assert!(
        page.errors.is_empty(),
        "the page logged errors: {:?}",
        page.errors
    );
    drop(page);
    let _ = run.kill();
    let _ = run.wait();
}
