/// mimalloc, not glibc's malloc: wasmtime compiles a component's functions
/// on several threads, and under glibc their allocations and frees contend
/// for the arena locks (a fifth of a cold compile's time went there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    keep_the_c_heap();
    quiet_on_closed_stdout();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        // Feed, venue and Telegram trouble is the operator's business from the start.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "error,keel::feed=warn,keel::venue=warn,keel::telegram=warn,keel_host::sandbox::cache=warn",
            )
        });
    // A Bot API token travels in its URL's path, and reqwest's debug lines
    // name URLs: never below warn, whatever is asked.
    if let Ok(quiet) = "reqwest=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour for a terminal; a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = keel_host::cli::parse();
    match keel_host::cli::run(cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            let message = keel_host::cli::error_text(&e).replace('\n', " ");
            // Made whole first: one write, not one a character (the
            // standard error is not buffered), never broken into by
            // another writer's line.
            let line = format!("error: {}\n", keel_model::shown::line(&message));
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            std::process::exit(1);
        }
    }
}

/// SQLite allocates with the C library's malloc (Rust's own allocations go
/// to mimalloc), and each span an import writes is a few megabytes it
/// copies twice (binding the blob, making the record). Under glibc's
/// defaults a block that large is mapped fresh and unmapped when freed, or
/// the heap's top is given back, so every span's copies fault their pages
/// in again: a fifth of a 10M-bar Parquet import's time. Blocks up to
/// 64 MiB come from the heap and up to 128 MiB of free heap is kept for
/// the next; a backtest's peak memory does not move (BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_the_c_heap() {
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets the allocator's tunables; called first
    // thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_the_c_heap() {}

/// `keel candidate list | head -3`: once the reader is gone, `println!`
/// panics on the broken pipe. That ends the output, not in error: leave
/// quietly, as a tool killed by SIGPIPE would, without a panic message.
/// (SIGPIPE itself stays ignored, as Rust sets it: `keel run` writes to
/// sockets whose peers may leave, and must not die of it.) Output that
/// cannot be written otherwise (`> /dev/full`) is an error said in one
/// line; when it is stderr that cannot be written, there is nowhere to
/// say it. Either way what the command committed stays committed, and
/// what it had not is not: as if it were killed there.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = (payload.downcast_ref::<String>().map(String::as_str))
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(why) = message.strip_prefix("failed printing to stdout: ") {
            if why.contains("Broken pipe") {
                std::process::exit(0);
            }
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: cannot write to stdout: {why}\n").as_bytes(),
            );
            std::process::exit(1);
        }
        if message.starts_with("failed printing to stderr") {
            std::process::exit(1);
        }
        report(info);
    }));
}
