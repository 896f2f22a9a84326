//! A reply's body, read within a deadline. A blocking client's timeout
//! bounds each read, not the whole body: a server that sends a byte a
//! second keeps a request going for as long as the body's cap allows
//! (weeks, for a few MiB), holding whatever waits on it. Every venue reply
//! is read through here.

use std::io::Read;
use std::time::{Duration, Instant};

/// The longest one request may take, from sending it to its body's last
/// byte (a page of 1,000 trades is about 80 KB).
pub const REPLY_WITHIN: Duration = Duration::from_secs(30);

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the reply was still coming after {:.1} s; cut off", .0.as_secs_f64())]
    Late(Duration),
    #[error("a reply over {} MiB", .0 >> 20)]
    TooLarge(u64),
    #[error("the reply stopped coming (nothing for a while)")]
    Stalled,
    #[error("the reply broke off: {0}")]
    Broke(String),
}

/// The body of `reply`, at most `max` bytes, read by `deadline` (give or
/// take one read, which the client's own timeout bounds).
pub fn read_body(
    mut reply: impl Read,
    max: u64,
    started: Instant,
    within: Duration,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if started.elapsed() > within {
            return Err(BodyError::Late(within));
        }
        match reply.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                if (body.len() + n) as u64 > max {
                    return Err(BodyError::TooLarge(max));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(BodyError::Stalled),
            Err(e) => return Err(BodyError::Broke(keel_model::shown::message(&e.to_string()))),
        }
    }
}

/// Whether a failed read is the client's read timeout (reqwest says it as
/// "error decoding response body", a timeout underneath).
fn timed_out(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that comes a byte at a time, `pause` apart.
    struct Drip {
        left: usize,
        pause: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 || buf.is_empty() {
                return Ok(0);
            }
            std::thread::sleep(self.pause);
            self.left -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }

    #[test]
    fn a_body_that_comes_too_slowly_is_cut_off_at_the_deadline() {
        let drip = Drip {
            left: 1_000_000,
            pause: Duration::from_millis(5),
        };
        let started = Instant::now();
        let within = Duration::from_millis(100);
        let error = read_body(drip, 4 << 20, started, within).expect_err("too slow");
        assert!(matches!(error, BodyError::Late(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let whole = Drip {
            left: 10,
            pause: Duration::from_millis(1),
        };
        let body = read_body(whole, 4 << 20, Instant::now(), within).expect("in time");
        assert_eq!(body, b"xxxxxxxxxx");
    }

    #[test]
    fn a_body_over_the_cap_is_refused_and_a_timeout_is_said_as_one() {
        let big = std::io::repeat(b'y').take(5 << 20);
        let error = read_body(big, 4 << 20, Instant::now(), REPLY_WITHIN).expect_err("big");
        assert_eq!(error.to_string(), "a reply over 4 MiB");
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        assert!(timed_out(&timeout));
        let wrapped = std::io::Error::other(timeout);
        assert!(timed_out(&wrapped));
        assert!(!timed_out(&std::io::Error::other("reset")));
    }
}
