//! A strategy artifact: the bytes of a component and their SHA-256, which is
//! the artifact's identity everywhere (ledger, cache, logs).

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// SHA-256 of an artifact's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrategyHash([u8; 32]);

impl StrategyHash {
    pub fn of(bytes: &[u8]) -> StrategyHash {
        StrategyHash(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }
}

impl fmt::Display for StrategyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for StrategyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrategyHash({})", self.short())
    }
}

/// Component bytes with their identity and where they came from.
#[derive(Clone)]
pub struct StrategyArtifact {
    pub hash: StrategyHash,
    pub bytes: Vec<u8>,
    /// File it was read from, or a label such as "<memory>".
    pub origin: PathBuf,
}

impl fmt::Debug for StrategyArtifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyArtifact")
            .field("hash", &self.hash)
            .field("bytes", &self.bytes.len())
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why an artifact could not even be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// (`error` is part of the line, not a source below it: the one-line
    /// report would repeat it.)
    #[error("{path}: cannot read: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {size} bytes is over the {limit}-byte limit for a strategy")]
    TooLarge {
        path: String,
        size: u64,
        limit: usize,
    },
}

impl StrategyArtifact {
    pub fn from_bytes(bytes: Vec<u8>, origin: impl Into<PathBuf>) -> StrategyArtifact {
        StrategyArtifact {
            hash: StrategyHash::of(&bytes),
            bytes,
            origin: origin.into(),
        }
    }

    /// Reads a file, refusing one over `max_bytes` before reading it.
    pub fn read(path: &Path, max_bytes: usize) -> Result<StrategyArtifact, ArtifactError> {
        let name = path.display().to_string();
        let io = |error| ArtifactError::Io {
            path: name.clone(),
            error,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > max_bytes as u64 {
            return Err(ArtifactError::TooLarge {
                path: name,
                size,
                limit: max_bytes,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        if bytes.len() > max_bytes {
            return Err(ArtifactError::TooLarge {
                path: name,
                size: bytes.len() as u64,
                limit: max_bytes,
            });
        }
        Ok(StrategyArtifact::from_bytes(bytes, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_sha256_of_the_bytes() {
        let a = StrategyArtifact::from_bytes(b"abc".to_vec(), "<memory>");
        assert_eq!(
            a.hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(a.hash.short(), "ba7816bf8f01");
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.wasm");
        std::fs::write(&path, vec![0u8; 2048]).expect("write");
        let err = StrategyArtifact::read(&path, 1024).expect_err("too large");
        assert!(
            err.to_string()
                .ends_with("big.wasm: 2048 bytes is over the 1024-byte limit for a strategy"),
            "{err}"
        );
    }
}
