//! The compile caches, both bounded: a long `keel dev` session saves
//! hundreds of versions and a `keel run` meets a new candidate every night,
//! and neither may grow memory or the disk without end.
//!
//! In memory, the most recently used [`MEMORY_CACHE_ENTRIES`] components
//! (a loaded strategy keeps its own code alive whatever the cache drops).
//! On disk, `<cache>/<engine key>/<sha256>.cwasm` files up to a byte budget;
//! a hit refreshes a file's modification time, and the least recently used
//! files go first.
//!
//! wasmtime trusts serialized code: deserialising a damaged entry can
//! crash the process, hang it or run other code than the artifact's. So
//! each file is [`ENTRY_MAGIC`], then a BLAKE3 keyed hash of the code under
//! a key derived from the engine key and the artifact's hash, then the
//! code; an entry is deserialised only if its hash checks. A flipped bit, a
//! truncated file or another artifact's entry copied over it fails, is
//! dropped with a warning and compiled anew. (The key is not secret: this
//! guards against damage and mix-ups, not against someone who can write
//! the cache directory, and so the `keel` binary too.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::component::Component;

use super::{SandboxConfig, StrategyHash};

/// How many compiled components a sandbox keeps in memory per tier.
pub const MEMORY_CACHE_ENTRIES: usize = 32;

/// The default byte budget of the disk cache: at 1–3 MB a strategy, some
/// hundreds of versions.
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 1 << 30;

/// Where compiled code is cached on disk, and how much of it: what a
/// command sets up each of its sandboxes with.
#[derive(Debug, Clone)]
pub struct CompileCache {
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
}

impl CompileCache {
    /// `config` with this cache.
    pub fn sandbox_config(&self, config: SandboxConfig) -> SandboxConfig {
        SandboxConfig {
            cache_dir: self.dir.clone(),
            cache_max_bytes: self.max_bytes,
            ..config
        }
    }
}

/// Compiled components by artifact hash, the least recently used dropped
/// first once over capacity.
#[derive(Debug)]
pub(super) struct MemoryCache {
    capacity: usize,
    entries: HashMap<StrategyHash, (Component, u64)>,
    /// Ticks on every use; an entry's stamp is the tick of its last use.
    clock: u64,
}

impl MemoryCache {
    pub(super) fn new(capacity: usize) -> MemoryCache {
        MemoryCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            clock: 0,
        }
    }

    pub(super) fn get(&mut self, hash: &StrategyHash) -> Option<Component> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(hash).map(|(component, used)| {
            *used = clock;
            component.clone()
        })
    }

    pub(super) fn insert(&mut self, hash: StrategyHash, component: Component) {
        self.clock += 1;
        self.entries.insert(hash, (component, self.clock));
        while self.entries.len() > self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(hash, _)| *hash);
            match oldest {
                Some(hash) => self.entries.remove(&hash),
                None => break,
            };
        }
    }

    pub(super) fn remove(&mut self, hash: &StrategyHash) {
        self.entries.remove(hash);
    }

    #[cfg(test)]
    fn contains(&self, hash: &StrategyHash) -> bool {
        self.entries.contains_key(hash)
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// What a cache file starts with; the entry's keyed hash follows, then the code.
const ENTRY_MAGIC: &[u8] = b"keel-cwasm-v1\n";

/// Bytes before the code in a cache file.
const ENTRY_HEADER: usize = ENTRY_MAGIC.len() + blake3::OUT_LEN;

/// Optimised code on disk: `<root>/<engine key>/<sha256>.cwasm`, the whole
/// of `root` (every engine key's files) held to `max_bytes`.
#[derive(Debug, Clone)]
pub(super) struct DiskCache {
    root: PathBuf,
    dir: PathBuf,
    engine_key: String,
    max_bytes: u64,
}

/// A cache file's contents whose hash checked: the code starts after the header.
#[derive(Debug)]
pub(super) struct CheckedEntry(Vec<u8>);

impl CheckedEntry {
    pub(super) fn code(&self) -> &[u8] {
        &self.0[ENTRY_HEADER..]
    }
}

impl DiskCache {
    pub(super) fn new(root: PathBuf, engine_key: &str, max_bytes: u64) -> DiskCache {
        DiskCache {
            dir: root.join(engine_key),
            root,
            engine_key: engine_key.to_owned(),
            max_bytes,
        }
    }

    pub(super) fn path(&self, hash: &StrategyHash) -> PathBuf {
        self.dir.join(format!("{hash}.cwasm"))
    }

    /// The keyed hash `code` has as `hash`'s entry under this engine key.
    fn entry_hash(&self, hash: &StrategyHash, code: &[u8]) -> blake3::Hash {
        let mut material = Vec::with_capacity(self.engine_key.len() + 33);
        material.extend_from_slice(self.engine_key.as_bytes());
        material.push(0);
        material.extend_from_slice(hash.as_bytes());
        let key = blake3::derive_key("keel compile cache entry v1", &material);
        blake3::keyed_hash(&key, code)
    }

    /// `hash`'s entry, if there is one and its keyed hash checks (the hit
    /// then counts as a use). An entry that fails is removed, with a
    /// warning, so the code is compiled and written anew.
    pub(super) fn read(&self, hash: &StrategyHash) -> Option<CheckedEntry> {
        let path = self.path(hash);
        // Read into memory rather than map the file: a file truncated or
        // rewritten by someone else must never fault a running host.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read compile cache entry: {e}");
                return None;
            }
        };
        let checks = bytes.len() >= ENTRY_HEADER
            && bytes.starts_with(ENTRY_MAGIC)
            && self.entry_hash(hash, &bytes[ENTRY_HEADER..]).as_bytes()[..]
                == bytes[ENTRY_MAGIC.len()..ENTRY_HEADER];
        if !checks {
            tracing::warn!(
                path = %path.display(),
                "compile cache entry damaged or not this artifact's: dropped, compiling anew"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(CheckedEntry(bytes))
    }

    /// Writes `hash`'s code, behind its header, whole or not at all (a
    /// temporary file renamed), then trims the cache to its budget.
    pub(super) fn write(&self, hash: &StrategyHash, code: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(ENTRY_HEADER + code.len());
        bytes.extend_from_slice(ENTRY_MAGIC);
        bytes.extend_from_slice(self.entry_hash(hash, code).as_bytes());
        bytes.extend_from_slice(code);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        trim(&self.root, self.max_bytes, &path)
    }
}

/// Marks a cache file as just used, so trimming keeps it longest.
fn touch(path: &Path) {
    // Only the eviction order suffers if this fails.
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()));
}

/// Deletes the least recently used `.cwasm` files under `root` (every
/// engine key's directory: a stale key's files are never read again, so
/// they age out first) until the rest fit in `max_bytes`; `keep`, the file
/// just written, stays even alone over budget. Another process may share
/// the directory: a file it reads is whole or gone (then recompiled), and
/// its files in progress are not `.cwasm` yet.
fn trim(root: &Path, max_bytes: u64, keep: &Path) -> anyhow::Result<()> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for dir in std::fs::read_dir(root)?.flatten() {
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "cwasm") {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((used, meta.len(), path));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    files.sort();
    for (_, size, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => total -= size,
            // Someone else trimmed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= size,
            Err(e) => tracing::warn!(path = %path.display(), "cannot trim compile cache: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(dir: &Path, name: &str, size: usize, age_secs: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).expect("write");
        let when = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .expect("mtime");
        path
    }

    #[test]
    fn trimming_drops_the_least_recently_used_files_first_across_engine_keys() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = DiskCache::new(root.path().to_owned(), "key", 1000);
        let old_key = root.path().join("old-key");
        std::fs::create_dir_all(&old_key).expect("dir");
        std::fs::create_dir_all(&cache.dir).expect("dir");
        let stale = file(&old_key, "a.cwasm", 400, 500);
        let old = file(&cache.dir, "b.cwasm", 400, 300);
        let used = file(&cache.dir, "c.cwasm", 400, 200);
        let partial = file(&cache.dir, "d.tmp123", 400, 900);
        // A hit makes the oldest file the newest.
        touch(&old);
        let hash = StrategyHash::of(b"new");
        cache.write(&hash, &[1u8; 400]).expect("write");
        assert!(!stale.exists(), "the stale engine key's file goes first");
        assert!(!used.exists(), "then the least recently used");
        assert!(old.exists(), "a touched file counts as just used");
        assert_eq!(cache.read(&hash).expect("written").code(), [1u8; 400]);
        assert!(
            partial.exists(),
            "another writer's file in progress is left alone"
        );
    }

    #[test]
    fn an_entry_is_read_back_only_if_its_keyed_hash_checks() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = DiskCache::new(root.path().to_owned(), "key", 1 << 20);
        let (a, b) = (StrategyHash::of(b"a"), StrategyHash::of(b"b"));
        let code: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        cache.write(&a, &code).expect("write");
        assert_eq!(cache.read(&a).expect("intact").code(), code);
        let written = std::fs::read(cache.path(&a)).expect("file");
        let other_key = DiskCache::new(root.path().to_owned(), "other-key", 1 << 20);
        std::fs::create_dir_all(&other_key.dir).expect("dir");
        let mut flipped = written.clone();
        flipped[ENTRY_HEADER + 500] ^= 0x10;
        let mut bad_magic = written.clone();
        bad_magic[0] ^= 1;
        struct Case<'a> {
            name: &'a str,
            cache: &'a DiskCache,
            hash: StrategyHash,
            bytes: Vec<u8>,
        }
        let cases = [
            Case {
                name: "one bit flipped",
                cache: &cache,
                hash: a,
                bytes: flipped,
            },
            Case {
                name: "another header",
                cache: &cache,
                hash: a,
                bytes: bad_magic,
            },
            Case {
                name: "truncated",
                cache: &cache,
                hash: a,
                bytes: written[..700].to_vec(),
            },
            Case {
                name: "shorter than a header",
                cache: &cache,
                hash: a,
                bytes: written[..20].to_vec(),
            },
            Case {
                name: "empty",
                cache: &cache,
                hash: a,
                bytes: Vec::new(),
            },
            Case {
                name: "another artifact's entry",
                cache: &cache,
                hash: b,
                bytes: written.clone(),
            },
            Case {
                name: "another engine key's entry",
                cache: &other_key,
                hash: a,
                bytes: written.clone(),
            },
        ];
        for case in cases {
            let path = case.cache.path(&case.hash);
            std::fs::write(&path, &case.bytes).expect("damage");
            assert!(case.cache.read(&case.hash).is_none(), "{}", case.name);
            assert!(!path.exists(), "{}: the entry is dropped", case.name);
        }
        assert!(cache.read(&b).is_none(), "nothing there");
    }

    #[test]
    fn the_file_just_written_stays_even_alone_over_budget() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = DiskCache::new(root.path().to_owned(), "key", 200);
        std::fs::create_dir_all(&cache.dir).expect("dir");
        let other = file(&cache.dir, "a.cwasm", 100, 10);
        let hash = StrategyHash::of(b"big");
        cache.write(&hash, &[1u8; 500]).expect("write");
        assert!(cache.path(&hash).exists());
        assert!(!other.exists());
    }

    #[test]
    fn the_memory_cache_keeps_the_most_recently_used_components() {
        let engine = wasmtime::Engine::default();
        // The empty component: a header alone.
        let empty = Component::from_binary(&engine, b"\0asm\x0d\0\x01\0").expect("component");
        let hashes: Vec<StrategyHash> = (0u8..4).map(|i| StrategyHash::of(&[i])).collect();
        let mut cache = MemoryCache::new(3);
        for hash in &hashes[..3] {
            cache.insert(*hash, empty.clone());
        }
        // A hit on the oldest makes the second the least recently used.
        assert!(cache.get(&hashes[0]).is_some());
        cache.insert(hashes[3], empty.clone());
        assert!(cache.contains(&hashes[0]));
        assert!(!cache.contains(&hashes[1]));
        assert!(cache.contains(&hashes[2]) && cache.contains(&hashes[3]));
        cache.remove(&hashes[0]);
        assert!(cache.get(&hashes[0]).is_none());
    }
}
