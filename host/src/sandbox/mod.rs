//! The sandbox: loads strategy components and runs them under hard limits.
//!
//! One place configures the wasm engine ([`Sandbox::new`]). Loading an
//! artifact checks its size, compiles it (time-capped, cached on disk by
//! SHA-256 and engine), refuses imports Keel does not provide, type-checks its
//! exports against a `keel:strategy` world (0.4.0, or an older one) before
//! instantiating, and reads `describe()` in a throwaway instance.
//! [`StrategyInstance`] then runs one bound, initialised copy.

mod artifact;
mod background;
mod cache;
mod checks;
mod engine;
mod fault;
mod guard;
mod host_state;
mod instance;
mod limits;
mod optimizer;
mod recent;
mod wit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

pub use artifact::{ArtifactError, StrategyArtifact, StrategyHash};
pub use background::{BACKGROUND_QUIET, lowest_priority};
pub use cache::{CompileCache, DEFAULT_DISK_CACHE_BYTES, MEMORY_CACHE_ENTRIES};
pub use checks::{bindable, check_info, check_signal};
pub use fault::{Fault, StrategyError};
pub use instance::{Binding, ClockMode, InstanceStats, StrategyInstance};
pub use limits::{EPOCH_TICK, SandboxLimits};
pub use optimizer::{OPTIMIZER_COMMAND, serve_optimizer};
pub use wit::CONTRACT_VERSIONS;

use cache::{DiskCache, MemoryCache};
use engine::{Compiler, EpochTicker, engine};
use guard::Guard;
use host_state::HostState;
use keel_model::StrategyInfo;
use wit::GuestPre;

/// How a call's running time is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metering {
    /// Wall-clock epoch deadline only (paper and live).
    WallClock,
    /// Fuel per call only, deterministic across machines (backtests,
    /// validation). No wall-clock deadline: it would make whether a call
    /// fails depend on how busy the machine is, and fuel already bounds every
    /// loop (the engine is built without epoch checks, which also makes its
    /// code ~5% faster).
    Fuel,
}

/// What a sandbox is set up with.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub limits: SandboxLimits,
    pub metering: Metering,
    /// Where compiled components are kept; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The most the files under `cache_dir` may take, all engine versions
    /// together; the least recently used go first.
    pub cache_max_bytes: u64,
    /// Quick first loads: an artifact with no optimised code yet is compiled
    /// by the baseline compiler, several times faster, and runs at once,
    /// while the optimised code is built in the background for every later
    /// load. For paper and live trading and for `keel dev`'s validate and
    /// swap, where a reload must be quick and one bar a minute is no load;
    /// backtests keep optimised code throughout. Winch meters fuel and
    /// epochs as Cranelift does (wasmtime 48's `Config` docs say otherwise,
    /// but its code generator emits both; the tests prove each stops a
    /// runaway loop).
    pub baseline_first: bool,
    /// With `baseline_first`: a `keel` binary to run the background
    /// optimising compiles in (`keel __optimize`), so that they can be
    /// stopped outright while a baseline compile runs (Linux). `None`,
    /// another platform, or a worker that fails: they run on the
    /// background thread instead.
    pub optimizer: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: SandboxLimits::default(),
            metering: Metering::Fuel,
            cache_dir: None,
            cache_max_bytes: DEFAULT_DISK_CACHE_BYTES,
            baseline_first: false,
            optimizer: None,
        }
    }
}

/// Which compiler made a loaded strategy's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift, optimising: what backtests and every cached load run.
    Optimized,
    /// Winch, wasmtime's baseline compiler: compiles several times faster,
    /// runs slower; used for a quick first load (`baseline_first`).
    Baseline,
}

/// Why an artifact was refused at load time. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{origin}: {size} bytes is over the {limit}-byte limit for a strategy")]
    TooLarge {
        origin: String,
        size: usize,
        limit: usize,
    },
    #[error("{origin}: not a valid WebAssembly component: {reason}")]
    NotAComponent { origin: String, reason: String },
    #[error("{origin}: compiling took longer than {limit:?}")]
    CompileTimeout { origin: String, limit: Duration },
    #[error(
        "{origin}: imports {import}, which Keel does not provide (a strategy may import only keel:strategy and WASI)"
    )]
    ForbiddenImport { origin: String, import: String },
    #[error(
        "{origin}: does not implement the keel:strategy@{} world (nor {}): {reason}",
        CONTRACT_VERSIONS[0],
        wit::listed(&CONTRACT_VERSIONS[1..])
    )]
    WrongExports { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Describe { origin: String, reason: String },
}

/// A compiled, checked artifact, ready to instantiate many times.
#[derive(Clone)]
pub struct LoadedStrategy {
    pub hash: StrategyHash,
    pub origin: PathBuf,
    pub size: usize,
    pub info: StrategyInfo,
    /// Every import the component declares, by name.
    pub imports: Vec<String>,
    /// Whether the compiled code came from the cache (memory or disk).
    pub from_cache: bool,
    /// The `keel:strategy` version it implements, e.g. "0.2.0".
    pub contract: &'static str,
    /// Which compiler made its code.
    pub tier: Tier,
    /// The engine `pre` belongs to (the sandbox's optimising or baseline one).
    engine: Engine,
    pre: GuestPre,
    in_use: Arc<InUse>,
}

impl std::fmt::Debug for LoadedStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedStrategy")
            .field("hash", &self.hash)
            .field("name", &self.info.name)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Compiled components by artifact hash, bounded.
type Compiled = Arc<Mutex<MemoryCache>>;

/// Shared by every [`LoadedStrategy`] of one artifact and every instance
/// started from one. Once none is left, a background compile of that
/// artifact is dropped (its worker killed, if one runs it):
/// `keel dev`'s superseded saves and strategies that failed their checks
/// cost no optimising compile and no disk.
#[derive(Debug)]
struct InUse;

/// Each artifact's [`InUse`] token, while one lives.
type InUseMap = Arc<Mutex<HashMap<StrategyHash, Weak<InUse>>>>;

/// Whether something holds `hash` loaded (a later load may have made a new
/// token since a job was queued: it counts).
fn held(in_use: &InUseMap, hash: &StrategyHash) -> bool {
    lock(in_use)
        .get(hash)
        .is_some_and(|token| token.strong_count() > 0)
}

/// The baseline tier of a `baseline_first` sandbox: Winch for quick loads,
/// and the queue that builds their optimised code.
struct Baseline {
    compiler: Compiler,
    /// Runs those compiles one at a time, on one idle-priority thread, once
    /// no baseline compile has run for a while.
    background: background::Background,
    /// The `keel` binary those compiles run in, if any.
    optimizer: Option<PathBuf>,
    /// How many of them a worker process did.
    in_worker: Arc<std::sync::atomic::AtomicUsize>,
}

/// The wasm engines, their linkers, the compile caches and the epoch ticker.
pub struct Sandbox {
    /// Cranelift: the code every cached load and every backtest runs.
    optimizing: Compiler,
    /// Winch, when `baseline_first`: quick first loads.
    baseline: Option<Baseline>,
    limits: SandboxLimits,
    metering: Metering,
    engine_key: String,
    /// Optimised code on disk, if a cache directory was given.
    disk: Option<DiskCache>,
    /// Optimised code (also on disk).
    compiled: Compiled,
    /// Baseline code, in memory only, until the optimised code replaces it
    /// or nothing holds the artifact loaded any more:
    /// `keel dev` validates a version, then loads it to run, and neither
    /// load compiles it twice.
    baseline_compiled: Compiled,
    /// Artifacts whose optimised code is being built in the background.
    optimizing_now: Arc<Mutex<std::collections::HashSet<StrategyHash>>>,
    /// Which artifacts something still holds.
    in_use: InUseMap,
    /// Only under `Metering::WallClock`: fuel-metered code has no epoch checks.
    _ticker: Option<EpochTicker>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("metering", &self.metering)
            .field("engine_key", &self.engine_key)
            .field("baseline_first", &self.baseline.is_some())
            .finish()
    }
}

/// Import names a strategy may use: our host interface and WASI (linked deny-all).
fn import_allowed(name: &str) -> bool {
    name.starts_with("wasi:")
        || CONTRACT_VERSIONS.iter().any(|v| {
            name.strip_prefix("keel:strategy/")
                .and_then(|rest| rest.split_once('@'))
                .is_some_and(|(iface, version)| {
                    version == *v && (iface == "host" || iface == "types")
                })
        })
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        config.limits.check().map_err(anyhow::Error::msg)?;
        let optimizing = Compiler::new(&config, Tier::Optimized)?;
        // A platform without Winch keeps the optimising compiler alone.
        let baseline = match config.baseline_first {
            false => None,
            true => match Compiler::new(&config, Tier::Baseline) {
                Ok(compiler) => Some(Baseline {
                    compiler,
                    background: background::Background::new(BACKGROUND_QUIET)?,
                    optimizer: config.optimizer.clone(),
                    in_worker: Arc::default(),
                }),
                Err(e) => {
                    tracing::warn!("no baseline compiler, every load optimises: {e:#}");
                    None
                }
            },
        };
        let engine_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            optimizing
                .engine
                .precompile_compatibility_hash()
                .hash(&mut h);
            config.metering.hash(&mut h);
            format!("wasmtime-{}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish())
        };
        let mut engines = vec![optimizing.engine.clone()];
        engines.extend(baseline.as_ref().map(|b| b.compiler.engine.clone()));
        let ticker = (config.metering == Metering::WallClock).then(|| EpochTicker::start(engines));
        Ok(Sandbox {
            optimizing,
            baseline,
            limits: config.limits,
            metering: config.metering,
            disk: (config.cache_dir)
                .map(|dir| DiskCache::new(dir, &engine_key, config.cache_max_bytes)),
            engine_key,
            compiled: Arc::new(Mutex::new(MemoryCache::new(MEMORY_CACHE_ENTRIES))),
            baseline_compiled: Arc::new(Mutex::new(MemoryCache::new(MEMORY_CACHE_ENTRIES))),
            optimizing_now: Arc::default(),
            in_use: Arc::default(),
            _ticker: ticker,
        })
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    pub fn metering(&self) -> Metering {
        self.metering
    }

    /// Reads a `.wasm` file (size-capped) and loads it.
    pub fn load_file(&self, path: &Path) -> Result<LoadedStrategy, LoadError> {
        let artifact = StrategyArtifact::read(path, self.limits.max_wasm_bytes)?;
        self.load(&artifact)
    }

    /// Every load-time check, then `describe()` in a throwaway instance.
    pub fn load(&self, artifact: &StrategyArtifact) -> Result<LoadedStrategy, LoadError> {
        let origin = artifact.origin.display().to_string();
        if artifact.bytes.len() > self.limits.max_wasm_bytes {
            return Err(LoadError::TooLarge {
                origin,
                size: artifact.bytes.len(),
                limit: self.limits.max_wasm_bytes,
            });
        }
        let in_use = self.in_use(artifact.hash);
        let (component, from_cache, tier) = self.compile(artifact)?;
        let compiler = match (tier, &self.baseline) {
            (Tier::Baseline, Some(baseline)) => &baseline.compiler,
            _ => &self.optimizing,
        };
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&compiler.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if let Some(bad) = imports.iter().find(|name| !import_allowed(name)) {
            return Err(LoadError::ForbiddenImport {
                origin,
                import: bad.clone(),
            });
        }
        let instance_pre =
            compiler
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WrongExports {
                    origin: origin.clone(),
                    reason: one_line(&e),
                })?;
        let pre = GuestPre::new(instance_pre).map_err(|newest| LoadError::WrongExports {
            origin: origin.clone(),
            reason: one_line(&newest),
        })?;
        let info = guard::describe(self, &compiler.engine, &pre, artifact.hash).map_err(|e| {
            LoadError::Describe {
                origin: origin.clone(),
                reason: e.to_string(),
            }
        })?;
        check_info(&info, &self.limits).map_err(|reason| LoadError::Describe {
            origin: origin.clone(),
            reason: format!("describe(): {reason}"),
        })?;
        Ok(LoadedStrategy {
            hash: artifact.hash,
            origin: artifact.origin.clone(),
            size: artifact.bytes.len(),
            info,
            imports,
            from_cache,
            contract: pre.contract(),
            tier,
            engine: compiler.engine.clone(),
            pre,
            in_use,
        })
    }

    /// The token every [`LoadedStrategy`] of `hash` shares. A new one
    /// also forgets the other artifacts nothing holds any more, and their
    /// baseline code with them.
    fn in_use(&self, hash: StrategyHash) -> Arc<InUse> {
        let mut in_use = lock(&self.in_use);
        if let Some(token) = in_use.get(&hash).and_then(Weak::upgrade) {
            return token;
        }
        let mut baseline = lock(&self.baseline_compiled);
        in_use.retain(|other, token| {
            let held = token.strong_count() > 0;
            if !held && *other != hash {
                baseline.remove(other);
            }
            held
        });
        drop(baseline);
        let token = Arc::new(InUse);
        in_use.insert(hash, Arc::downgrade(&token));
        token
    }

    /// Starts one instance of `loaded`, bound to symbols and parameters, and
    /// calls its `init`.
    pub fn instantiate(
        &self,
        loaded: &LoadedStrategy,
        binding: Binding,
    ) -> Result<StrategyInstance, StrategyError> {
        StrategyInstance::start(self, loaded, binding)
    }

    /// Compiled code for `artifact`: optimised code from memory or the disk
    /// cache; else, with `baseline_first`, baseline code (from memory, or
    /// compiled now) and optimised code in the background; else optimised
    /// code now (time-capped), written to the cache.
    fn compile(&self, artifact: &StrategyArtifact) -> Result<(Component, bool, Tier), LoadError> {
        let origin = artifact.origin.display().to_string();
        if let Some(c) = lock(&self.compiled).get(&artifact.hash) {
            return Ok((c.clone(), true, Tier::Optimized));
        }
        if let Some(disk) = &self.disk
            && let Some(entry) = disk.read(&artifact.hash)
            && let Some(component) = self.deserialize_cached(&disk.path(&artifact.hash), &entry)
        {
            lock(&self.compiled).insert(artifact.hash, component.clone());
            return Ok((component, true, Tier::Optimized));
        }
        if !is_component(&artifact.bytes) {
            let reason = if artifact.bytes.starts_with(b"\0asm") {
                "it is a core wasm module; build for wasm32-wasip2 to get a component".to_owned()
            } else {
                "missing the \\0asm header".to_owned()
            };
            return Err(LoadError::NotAComponent { origin, reason });
        }
        let limit = self.limits.max_compile_time;
        if let Some(baseline) = &self.baseline {
            if let Some(c) = lock(&self.baseline_compiled).get(&artifact.hash) {
                return Ok((c.clone(), true, Tier::Baseline));
            }
            let component = {
                let _waited_for = baseline.background.foreground();
                baseline.compiler.compile(&origin, &artifact.bytes, limit)?
            };
            lock(&self.baseline_compiled).insert(artifact.hash, component.clone());
            self.optimize_in_background(baseline, artifact);
            return Ok((component, false, Tier::Baseline));
        }
        let component = self.optimizing.compile(&origin, &artifact.bytes, limit)?;
        store_compiled(
            &self.compiled,
            self.disk.as_ref(),
            artifact.hash,
            &component,
            None,
        );
        Ok((component, false, Tier::Optimized))
    }

    /// Queues the optimised compile of `artifact` on `baseline`'s
    /// background queue, for the memory and disk caches; once per artifact
    /// at a time, and dropped if nothing holds the artifact loaded by then
    /// (a worker running it is killed once that happens).
    fn optimize_in_background(&self, baseline: &Baseline, artifact: &StrategyArtifact) {
        if !lock(&self.optimizing_now).insert(artifact.hash) {
            return;
        }
        let engine = self.optimizing.engine.clone();
        let (compiled, baseline_compiled, busy) = (
            self.compiled.clone(),
            self.baseline_compiled.clone(),
            self.optimizing_now.clone(),
        );
        let (hash, bytes) = (artifact.hash, artifact.bytes.clone());
        let (disk, in_use) = (self.disk.clone(), self.in_use.clone());
        // Linux only: elsewhere a worker stopped when its host died would
        // stay stopped (no PR_SET_PDEATHSIG).
        let worker = (baseline.optimizer.clone()).filter(|_| cfg!(target_os = "linux"));
        let in_worker = baseline.in_worker.clone();
        let config = (self.metering, self.limits.max_stack_bytes);
        baseline.background.spawn(move |workers| {
            let wanted = || held(&in_use, &hash);
            let dropped = || {
                tracing::debug!(%hash, "no longer loaded: optimising compile dropped");
                lock(&baseline_compiled).remove(&hash);
                lock(&busy).remove(&hash);
            };
            if !wanted() {
                return dropped();
            }
            let from_worker = worker.and_then(|worker| {
                optimizer::compile_in_worker(&worker, config, &bytes, workers, &engine, &wanted)
                    .inspect_err(|e| {
                        if wanted() {
                            tracing::warn!(%hash, "optimising worker failed, compiling here: {e:#}")
                        }
                    })
                    .ok()
            });
            let done = match from_worker {
                Some((component, serialized)) => {
                    in_worker.fetch_add(1, Ordering::Relaxed);
                    Ok((component, Some(serialized)))
                }
                // The worker was stopped for good: nothing runs the artifact.
                None if !wanted() => return dropped(),
                None => Component::new(&engine, &bytes).map(|component| (component, None)),
            };
            match done {
                Ok((component, serialized)) => {
                    let serialized = serialized.as_deref();
                    store_compiled(&compiled, disk.as_ref(), hash, &component, serialized);
                    lock(&baseline_compiled).remove(&hash);
                }
                Err(e) => tracing::warn!(%hash, "optimising compile failed: {}", one_line(&e)),
            }
            lock(&busy).remove(&hash);
        });
    }

    /// How many background optimising compiles ran in a worker process.
    pub fn optimized_in_worker(&self) -> usize {
        self.baseline
            .as_ref()
            .map_or(0, |b| b.in_worker.load(Ordering::Relaxed))
    }

    /// Whether optimised code for `hash` is being built in the background.
    pub fn is_optimizing(&self, hash: &StrategyHash) -> bool {
        lock(&self.optimizing_now).contains(hash)
    }

    #[allow(unsafe_code)]
    fn deserialize_cached(&self, path: &Path, entry: &cache::CheckedEntry) -> Option<Component> {
        // SAFETY: the entry's keyed hash checked, so these are the bytes
        // `DiskCache::write` wrote for this artifact under this engine key:
        // `Component::serialize` output of this engine's own compilation or
        // of a `keel __optimize` worker's engine (built by the same
        // `engine()`), unchanged since; wasmtime re-checks version and
        // settings on load. The cache directory is trusted like the keel
        // binary itself.
        match unsafe { Component::deserialize(&self.optimizing.engine, entry.code()) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e:#}");
                None
            }
        }
    }

    /// Clears the in-memory compile cache (the disk cache stays).
    pub fn forget_compiled(&self) {
        lock(&self.compiled).clear();
    }
}

/// A lock that a panicked holder does not poison for everyone else.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps optimised code in memory and, given a disk cache, on disk.
/// `serialized` is `component`'s serialized form when the caller has it
/// already (a worker's output), so it is not serialized again.
fn store_compiled(
    compiled: &Compiled,
    disk: Option<&DiskCache>,
    hash: StrategyHash,
    component: &Component,
    serialized: Option<&[u8]>,
) {
    if let Some(disk) = disk {
        let written = match serialized {
            Some(bytes) => disk.write(&hash, bytes),
            None => component
                .serialize()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .and_then(|bytes| disk.write(&hash, &bytes)),
        };
        // A cache that cannot be written only costs a recompile next time.
        if let Err(e) = written {
            tracing::warn!(path = %disk.path(&hash).display(), "cannot write compile cache: {e:#}");
        }
    }
    lock(compiled).insert(hash, component.clone());
}

/// A component starts with `\0asm`, then version 0x0d and layer 1.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[6..8] == [1, 0]
}

/// An error chain on one line.
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Time a closure; used by the CLI and benches to report load costs.
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}
