//! An API key: read from an environment variable or from a file only its
//! owner can read, printed as `[redacted]`, and scrubbed from anything a
//! server sends back. There is deliberately no way to make one from a
//! command-line argument: those end up in shell history and `ps`.

use std::io::Read;
use std::path::Path;

/// A secret API key. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(String);

/// Why a key could not be loaded. Names the variable or file, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("API key: environment variable {0} is not set")]
    EnvMissing(String),
    #[error("API key: environment variable {0} is not valid UTF-8")]
    EnvNotText(String),
    #[error("API key: {0} is empty")]
    Empty(String),
    #[error("API key: {0} holds characters an HTTP header cannot carry")]
    BadCharacters(String),
    #[error("API key: cannot read {path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
    #[error(
        "API key: {path} is readable by others (mode {mode:03o}); make it 0600 (chmod 600 {path})"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("API key: {path} is not owned by the user running keel")]
    NotOwned { path: String },
    #[error("API key: {path} is larger than {max} bytes; not a key")]
    TooLarge { path: String, max: u64 },
}

/// The largest key file read: keys are about a hundred bytes.
const MAX_KEY_FILE_BYTES: u64 = 4096;

impl Key {
    /// The key in environment variable `var` (surrounding whitespace dropped).
    pub fn from_env(var: &str) -> Result<Key, KeyError> {
        match std::env::var(var) {
            Ok(value) => Key::checked(value, || format!("environment variable {var}")),
            Err(std::env::VarError::NotPresent) => Err(KeyError::EnvMissing(var.to_owned())),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::EnvNotText(var.to_owned())),
        }
    }

    /// The key in file `path`, which must be owned by the user running keel
    /// and readable by no one else (mode 0600 or stricter). The mode and
    /// owner are checked on the opened file, so a swap between the check
    /// and the read cannot slip another file in.
    pub fn from_file(path: &Path) -> Result<Key, KeyError> {
        let name = path.display().to_string();
        let unreadable = |error| KeyError::Unreadable {
            path: name.clone(),
            error,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        check_private(&meta, &name)?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::TooLarge {
                path: name,
                max: MAX_KEY_FILE_BYTES,
            });
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        Key::checked(text, || name.clone())
    }

    fn checked(value: String, source: impl Fn() -> String) -> Result<Key, KeyError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(KeyError::Empty(source()));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::BadCharacters(source()));
        }
        Ok(Key(trimmed.to_owned()))
    }

    /// The secret itself, for the one header (or Bot API path) that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(secret: &str) -> Key {
        Key(secret.to_owned())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata, name: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: name.to_owned(),
            mode,
        });
    }
    if current_uid().is_some_and(|uid| uid != meta.uid()) {
        return Err(KeyError::NotOwned {
            path: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata, _name: &str) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn current_uid() -> Option<u32> {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    Some(unsafe { libc::geteuid() })
}

#[cfg(all(unix, not(target_os = "linux")))]
fn current_uid() -> Option<u32> {
    None
}

/// Server text made fit for an error message: the key (if the server echoed
/// it) replaced by `[redacted]`, folded onto one line, and cut to `max` characters.
pub(super) fn scrub(text: &str, key: Option<&Key>, max: usize) -> String {
    let mut clean = text.to_owned();
    if let Some(key) = key {
        clean = clean.replace(key.expose(), "[redacted]");
    }
    let one_line: String = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "sk-test-0123456789abcdef";

    fn key_file(mode: u32, content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key");
        std::fs::write(&path, content).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn a_key_never_prints() {
        let key = Key::for_tests(SECRET);
        assert_eq!(format!("{key}"), "[redacted]");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert!(!format!("{:?}", Some(&key)).contains(SECRET));
    }

    #[test]
    fn a_private_file_is_read_and_trimmed() {
        let (_dir, path) = key_file(0o600, &format!("{SECRET}\n"));
        let key = Key::from_file(&path).expect("a 0600 file is accepted");
        assert_eq!(key.expose(), SECRET);
        let (_dir, path) = key_file(0o400, SECRET);
        assert!(Key::from_file(&path).is_ok(), "0400 is stricter than 0600");
    }

    #[test]
    fn a_file_others_can_read_is_refused_without_its_content() {
        for mode in [0o640, 0o604, 0o644, 0o660] {
            let (_dir, path) = key_file(mode, SECRET);
            let error = Key::from_file(&path).expect_err("an open file is refused");
            let message = error.to_string();
            assert!(matches!(error, KeyError::TooOpen { .. }), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(!message.contains(SECRET), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn empty_missing_and_multi_line_keys_are_refused() {
        let (_dir, path) = key_file(0o600, " \n");
        assert!(matches!(Key::from_file(&path), Err(KeyError::Empty(_))));
        let (_dir, path) = key_file(0o600, "sk-a\nsk-b");
        assert!(matches!(
            Key::from_file(&path),
            Err(KeyError::BadCharacters(_))
        ));
        assert!(matches!(
            Key::from_file(Path::new("/nonexistent/keel-key")),
            Err(KeyError::Unreadable { .. })
        ));
        assert!(matches!(
            Key::from_env("KEEL_TEST_SURELY_UNSET_KEY_VAR"),
            Err(KeyError::EnvMissing(_))
        ));
    }

    #[test]
    fn scrub_removes_an_echoed_key_before_cutting() {
        let key = Key::for_tests(SECRET);
        let echoed = format!("Incorrect API key provided: {SECRET}.\nTry again.");
        let clean = scrub(&echoed, Some(&key), 300);
        assert_eq!(clean, "Incorrect API key provided: [redacted]. Try again.");
        // A key straddling the cut must not leave its first half behind.
        let long = format!("{}{SECRET}", "x".repeat(290));
        let clean = scrub(&long, Some(&key), 300);
        assert!(!clean.contains("sk-test"), "{clean}");
        assert_eq!(scrub(&"é".repeat(400), None, 300).chars().count(), 301);
    }
}
