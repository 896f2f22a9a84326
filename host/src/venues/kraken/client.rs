//! Kraken's REST API over `reqwest` (blocking, like the OHLC feed: the
//! venue is driven from the engine's own thread between closes). Private
//! calls are signed (`sign`), carry a nonce that never repeats (`nonce`),
//! and wait on the modelled rate limits (`limits`) instead of running into
//! them. A reply that never came, or a 5xx, is an unknown outcome: the
//! caller reconciles by client order id before sending anything again.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::limits::{RateLimits, Tier};
use super::nonce::Nonces;
use super::reply::{self, Failure};
use super::sign::SigningKey;
use crate::venues::body::{BodyError, read_body};

/// A key pair as Kraken issues it. Shows as `[redacted]`.
#[derive(Clone)]
pub struct Credentials {
    api_key: String,
    signing: SigningKey,
}

impl Credentials {
    pub fn new(api_key: &str, private_key_base64: &str) -> Result<Credentials, Failure> {
        let signing = SigningKey::from_base64(private_key_base64)
            .map_err(|e| Failure::Auth(e.to_string()))?;
        if api_key.trim().is_empty() || api_key.contains(['\r', '\n']) {
            return Err(Failure::Auth(
                "the Kraken API key is empty or not one line".into(),
            ));
        }
        Ok(Credentials {
            api_key: api_key.trim().to_owned(),
            signing,
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

/// An order Kraken holds open, as `OpenOrders` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub txid: String,
    pub status: String,
    /// Ordered and executed volume, as Kraken writes them (decimals).
    pub volume: String,
    pub executed: String,
}

/// A trade of one of Keel's orders, as Kraken reports it (decimals as
/// Kraken writes them).
#[derive(Debug, Clone, PartialEq)]
pub struct VenueFill {
    pub trade_id: String,
    pub client_order_id: String,
    pub price: String,
    pub volume: String,
    pub fee: String,
    /// Seconds since the epoch, as Kraken gives them.
    pub time_s: f64,
}

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a reply body may be.
const MAX_REPLY: usize = 4 << 20;

/// A Kraken REST client for one key.
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    /// How long a reply's body may take once its headers are in (the
    /// client's timeout bounds each read, not the whole).
    body_within: Duration,
    credentials: Credentials,
    nonces: Nonces,
    /// Where the nonce lease is kept.
    conn: Connection,
    limits: RateLimits,
    clock: Box<dyn Fn() -> i64 + Send>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// The HTTP client of the REST calls: requests time out after `timeout`,
    /// and never follow a redirect (it would carry the key elsewhere).
    pub(super) fn http_client(timeout: Duration) -> reqwest::Result<reqwest::blocking::Client> {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// A client of `base` (`https://api.kraken.com`) whose nonce lease is
    /// kept in the database at `db`; `clock` gives the time in ms.
    pub fn new(
        base: &str,
        credentials: Credentials,
        tier: Tier,
        db: &std::path::Path,
        clock: Box<dyn Fn() -> i64 + Send>,
    ) -> anyhow::Result<Client> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(crate::store::LOCK_WAIT)?;
        let nonces = Nonces::open(&conn, "kraken", &credentials.api_key)?;
        let http = Self::http_client(REQUEST_TIMEOUT)?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            body_within: REQUEST_TIMEOUT,
            credentials,
            nonces,
            conn,
            limits: RateLimits::new(tier),
            clock,
        })
    }

    /// The same client, its requests' outcome unknown after `timeout`
    /// (default [`REQUEST_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Client> {
        self.http = Self::http_client(timeout)?;
        self.body_within = timeout;
        Ok(self)
    }

    /// The rate-limit model, for waits on order placement and status.
    pub fn limits(&mut self) -> &mut RateLimits {
        &mut self.limits
    }

    /// A public method's `result`.
    pub fn public(
        &self,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, Failure> {
        let url = format!("{}/0/public/{method}", self.base);
        let reply = self.http.get(url).query(query).send();
        self.read(reply, Instant::now())
    }

    /// A private method's `result`: waits on the call counter, signs,
    /// sends. An `EAPI:Invalid nonce` (nothing happened) is tried once more
    /// with a nonce above it.
    pub fn private(
        &mut self,
        method: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, Failure> {
        let wait = self.limits.rest_wait(method, (self.clock)());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(Duration::from_secs(60)));
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let now = (self.clock)();
            self.limits.called(method, now);
            let nonce = self
                .nonces
                .next(&self.conn, (now.max(0) as u64).saturating_mul(1000))
                .map_err(|e| Failure::Unknown(format!("the nonce store: {e}")))?;
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("nonce", &nonce.to_string());
            for (k, v) in params {
                form.append_pair(k, v);
            }
            let body = form.finish();
            let path = format!("/0/private/{method}");
            let sign = self.credentials.signing.sign(&path, nonce, &body);
            let reply = self
                .http
                .post(format!("{}{path}", self.base))
                .header("API-Key", &self.credentials.api_key)
                .header("API-Sign", sign)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send();
            match self.read(reply, Instant::now()) {
                Err(Failure::Nonce(_)) if tries < 2 => continue,
                Err(Failure::RestRateLimit(e)) => {
                    self.limits.rest_refused((self.clock)());
                    return Err(Failure::RestRateLimit(e));
                }
                other => return other,
            }
        }
    }

    /// Arms (or refreshes) Kraken's dead man's switch: every open order is
    /// cancelled `seconds` from now unless this is called again first;
    /// `0` disarms it. Refreshed while the engine is healthy, it keeps no
    /// order working after keel has gone quiet.
    pub fn dead_man(&mut self, seconds: u32) -> Result<(), Failure> {
        self.private("CancelAllOrdersAfter", &[("timeout", seconds.to_string())])
            .map(|_| ())
    }

    /// The open orders, by client order id (orders without one are
    /// someone else's and left out): what reconciliation compares with the
    /// ledger's orders in flight.
    pub fn open_by_client_id(
        &mut self,
    ) -> Result<std::collections::BTreeMap<String, OpenOrder>, Failure> {
        let result = self.private("OpenOrders", &[])?;
        let open = result["open"]
            .as_object()
            .ok_or_else(|| Failure::Malformed("OpenOrders: no \"open\" object".into()))?;
        Ok(open
            .iter()
            .filter_map(|(txid, o)| {
                let id = o["cl_ord_id"].as_str()?;
                Some((
                    id.to_owned(),
                    OpenOrder {
                        txid: txid.clone(),
                        status: o["status"].as_str().unwrap_or_default().to_owned(),
                        volume: o["vol"].as_str().unwrap_or_default().to_owned(),
                        executed: o["vol_exec"].as_str().unwrap_or_default().to_owned(),
                    },
                ))
            })
            .collect())
    }

    /// Every trade after trade `after` (all when none), oldest first, each
    /// named by its order's client order id (trades of orders without one
    /// are someone else's and left out): what the ledger books, and what
    /// reconciliation compares with it.
    pub fn fills_after(&mut self, after: Option<&str>) -> Result<Vec<VenueFill>, Failure> {
        let mut params = Vec::new();
        if let Some(id) = after {
            params.push(("start", id.to_owned()));
        }
        let result = self.private("TradesHistory", &params)?;
        let trades = result["trades"]
            .as_object()
            .ok_or_else(|| Failure::Malformed("TradesHistory: no \"trades\" object".into()))?;
        let closed = self.private("ClosedOrders", &[])?;
        let open = self.private("OpenOrders", &[])?;
        let client_id = |txid: &str| {
            [&closed["closed"][txid], &open["open"][txid]]
                .into_iter()
                .find_map(|o| o["cl_ord_id"].as_str().map(str::to_owned))
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let mut fills: Vec<VenueFill> = trades
            .iter()
            .filter_map(|(id, t)| {
                Some(VenueFill {
                    trade_id: id.clone(),
                    client_order_id: client_id(t["ordertxid"].as_str()?)?,
                    price: text(&t["price"]),
                    volume: text(&t["vol"]),
                    fee: text(&t["fee"]),
                    time_s: t["time"].as_f64().unwrap_or(0.0),
                })
            })
            .collect();
        fills.sort_by(|a, b| {
            a.time_s
                .total_cmp(&b.time_s)
                .then(a.trade_id.cmp(&b.trade_id))
        });
        Ok(fills)
    }

    /// A reply's `result`, its body read within `body_within` of
    /// `headers_in`, when its headers came.
    fn read(
        &self,
        reply: reqwest::Result<reqwest::blocking::Response>,
        headers_in: Instant,
    ) -> Result<serde_json::Value, Failure> {
        let reply = reply.map_err(|e| {
            Failure::Unknown(if e.is_timeout() {
                "no reply in time".into()
            } else {
                format!(
                    "no reply: {}",
                    keel_model::shown::message(&e.without_url().to_string())
                )
            })
        })?;
        let status = reply.status().as_u16();
        let body = read_body(reply, MAX_REPLY as u64, headers_in, self.body_within).map_err(
            |e| match e {
                BodyError::TooLarge(_) => Failure::Malformed(format!("HTTP {status}: {e}")),
                // What the call did is unknown: the caller finds out.
                e => Failure::Unknown(e.to_string()),
            },
        )?;
        // The key never comes back in an error, even if a server echoes it.
        let text = String::from_utf8_lossy(&body).replace(&self.credentials.api_key, "[redacted]");
        reply::parse(status, &text)
    }
}
