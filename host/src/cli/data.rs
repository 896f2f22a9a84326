//! `keel data …`: import, download, generate and list candle data.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

use keel_model::candles::{self, Gap, format_time};
use keel_model::{Timeframe, shown, synth};

use crate::ranges;
use crate::store::Store;

/// Pieces of a file (some 65,000 bars each) read ahead of the import.
const PIECES_AHEAD: usize = 4;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a candle file (CSV, freqtrade JSON, Parquet or Feather) and
    /// store it.
    Import {
        /// Candle CSV — `time,open,high,low,close,volume`, capitalised or
        /// yfinance's names (`Date`, `Datetime`, `Adj Close` left aside),
        /// pandas' `to_csv`, Binance's headerless klines — freqtrade's
        /// `.json` or `.feather`, or Parquet (`.parquet`: pandas'
        /// `to_parquet`, the time a column or the index; pyarrow). Feather is
        /// Arrow's IPC file (also `.arrow`, `.ipc`). Times: RFC 3339, a date
        /// (and time), or epoch s/ms/µs/ns; in Parquet and Feather also
        /// timestamps of any unit. Codecs: gzip (`.gz`) for CSV and JSON;
        /// snappy, lz4, gzip for Parquet; lz4 for Feather (zstd is refused
        /// with how to rewrite the file).
        file: PathBuf,
        /// The symbol the bars are of, e.g. `ETH/BTC`.
        #[arg(long)]
        symbol: String,
        /// Bar length: 1m 5m 15m 1h 4h 1d 1w 1M.
        #[arg(long)]
        timeframe: String,
        /// The file's columns by role, for names Keel does not know (CSV,
        /// Parquet, Feather):
        /// `time=Zeit,open=Erster,high=Hoch,low=Tief,close=Letzter,volume=Umsatz`
        /// (roles not named are found by their usual names; a name with a
        /// comma in double quotes: `close="Close, last"`); `partial=NAME`
        /// names the column that marks partial bars, when two could.
        #[arg(long, value_name = "ROLE=COLUMN,…")]
        columns: Option<String>,
        /// Overwrite stored bars whose values differ (otherwise refused);
        /// the file's marks of partial bars (a column `partial`) become
        /// the marks of every bar it brings, unchanged ones too.
        #[arg(long)]
        replace: bool,
    },
    /// Write seeded random-walk candles (for scale and speed tests).
    Synth {
        /// The symbol the bars are stored or written as.
        #[arg(long, default_value = "SYN/USD")]
        symbol: String,
        /// How many bars.
        #[arg(long, default_value_t = 100_000, value_parser = ranges::SYNTH_BARS.parser())]
        bars: usize,
        /// The random walk's seed: the same seed, the same bars.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Bar length: 1m 5m 15m 1h 4h 1d 1w 1M.
        #[arg(long, default_value = "1m")]
        timeframe: String,
        /// Open time of the first bar (RFC 3339 or epoch ms).
        #[arg(long, default_value = "2024-01-01T00:00:00Z")]
        start: String,
        /// The first bar's open price.
        #[arg(long, default_value_t = 100.0, value_parser = ranges::SYNTH_PRICE.parser())]
        price: f64,
        /// Per-bar volatility (0.01 = 1%).
        #[arg(long, default_value_t = 0.01, value_parser = ranges::SYNTH_SIGMA.parser())]
        sigma: f64,
        /// Prices on this tick, as a venue quotes them (`0.01`): values
        /// with the digits of a venue's file. Default: as the walk makes
        /// them (seventeen digits).
        #[arg(long, value_parser = synth::Step::parse)]
        tick: Option<synth::Step>,
        /// Volumes on this lot size (`0.00000001`). Default: as the walk
        /// makes them.
        #[arg(long, value_parser = synth::Step::parse)]
        lot: Option<synth::Step>,
        /// Write the bars here — CSV (`.csv`, `.csv.gz`) or Parquet
        /// (`.parquet`), by the name; without it they go into the database.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the stored series (from the catalogue; `--check` reads them).
    List {
        /// Read every stored bar and check each span against its digest,
        /// its bars against the candle rules and the catalogue against
        /// them, saying which series are whole and which damaged (exit 1
        /// when one is): what a listing alone cannot tell.
        #[arg(long)]
        check: bool,
    },
    /// Remove a stored series whole (its bars, its catalogue row, and where
    /// downloads into it stood): to import it again on another grid, or to
    /// be rid of it. Files and venues it came from are untouched.
    Delete {
        /// The series, as `SYMBOL@TIMEFRAME` (`keel data list` names them).
        series: String,
    },
    /// Write a stored series to a file: CSV in Keel's own layout, which
    /// every tool reads (`.csv.gz`: gzip-compressed), or Parquet
    /// (`.parquet`: `date` as timestamp[ms, UTC], then open, high, low,
    /// close, volume as float64, snappy-compressed; pandas and pyarrow read
    /// it as it was).
    Export {
        /// The series, as `SYMBOL@TIMEFRAME` (`keel data list` names them).
        series: String,
        /// The file to write (replaced whole, never left half-written).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Aggregate to bars of this length first (5m, 15m, 1h, 4h or 1d),
        /// as `keel backtest --timeframe` does. The file then has a last
        /// column `partial`: `true` for a bar with fewer candles than a
        /// whole one (a gap inside, or the data starts or ends inside it).
        /// `keel backtest --data` of the file notes those bars (and an
        /// aggregation of it counts a bar holding one as partial); an
        /// import keeps the marks beside the bars, and an export of a
        /// series that has them writes the column too.
        #[arg(long, value_name = "TF", value_parser = super::backtest::timeframe)]
        timeframe: Option<Timeframe>,
    },
    /// Fetch a venue's public trade history as bars into the database:
    /// resumable (the same command again goes on where it stopped), gaps
    /// reported and never filled.
    Download(super::download::DownloadArgs),
}

/// Why bars spaced as `spacings` are not of timeframe `tf`, if they are
/// not: most of them closer together than a bar's length, or most of them
/// a longer timeframe's length apart (the file is of that one: 5m bars, or
/// daily ones whose UTC hour moves an hour at each daylight-saving change,
/// or months). A series that is only sparse (bars missing here and there,
/// or every other one) is of its timeframe, with gaps.
fn not_of_timeframe(spacings: &candles::Spacings, tf: Timeframe) -> Option<String> {
    let spacing = spacings.typical()?;
    if tf.matches_spacing(spacing) {
        return None;
    }
    if spacing < tf.duration_ms() {
        let shown = spacing_text(spacing);
        return spacings
            .mostly(|s| s == spacing)
            .then(|| format!("bars are mostly {shown} apart, which is not --timeframe {tf}"));
    }
    let longer = Timeframe::ALL
        .into_iter()
        .filter(|t| t.duration_ms() > tf.duration_ms())
        .find(|t| spacings.mostly(|s| t.matches_spacing(s)))?;
    Some(format!(
        "bars are mostly {longer} apart: --timeframe {longer}, not --timeframe {tf}"
    ))
}

/// Why `out` is no place to export to: the name of a format export does
/// not write (JSON, Feather, a compressed Parquet, a compression other than
/// gzip: the file would be CSV), or the database itself or one of its files.
fn refuse_export_to(out: &Path, db: &Path) -> anyhow::Result<()> {
    let inner = candles::is_gzip(out)
        .then(|| out.file_stem().map(Path::new))
        .flatten();
    let extension = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let compressed = [
        "bz2", "xz", "zst", "zstd", "lz4", "br", "zip", "7z", "lzma", "z",
    ];
    if candles::is_json(out)
        || candles::is_feather(out)
        || inner.is_some_and(|i| candles::is_parquet(i) || candles::is_feather(i))
        || extension.is_some_and(|e| compressed.contains(&e.as_str()))
    {
        bail!(
            "--out {}: export writes CSV or Parquet; name it .csv, .csv.gz or .parquet",
            out.display()
        );
    }
    // The database and its companions (`-wal`, `-shm`, `-journal`, which
    // may not exist yet): by the file itself (through links), or by its
    // directory and name.
    let Ok(db_path) = db.canonicalize() else {
        return Ok(());
    };
    let by_directory = |out: &Path| {
        let name = out.file_name()?;
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
        Some(
            dir.unwrap_or(Path::new("."))
                .canonicalize()
                .ok()?
                .join(name),
        )
    };
    // A link's target, which need not exist yet (the export writes it).
    let linked = std::fs::read_link(out)
        .ok()
        .map(|target| match out.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        });
    // The database's own names, not every name that begins with one
    // (`keel.db.csv` is a file of its own).
    let companions: Vec<PathBuf> = ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut name = db_path.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect();
    let own = [
        out.canonicalize().ok(),
        by_directory(out),
        linked.as_deref().and_then(by_directory),
    ]
    .into_iter()
    .flatten()
    .any(|p| companions.contains(&p));
    if own {
        bail!("--out {}: that is the database's own file", out.display());
    }
    Ok(())
}

/// A stored series named on the command line, `SYMBOL@TIMEFRAME`.
fn series_arg(series: &str) -> anyhow::Result<(&str, Timeframe)> {
    let (symbol, tf) = series_parts(series)?;
    Ok((symbol, timeframe(tf)?))
}

/// `SYMBOL@TIMEFRAME` cut at its last `@`, the timeframe as written;
/// neither may be empty.
fn series_parts(series: &str) -> anyhow::Result<(&str, &str)> {
    (series.rsplit_once('@'))
        .filter(|(symbol, tf)| !symbol.trim().is_empty() && !tf.trim().is_empty())
        .with_context(|| {
            format!(
                "{}: expected SYMBOL@TIMEFRAME, e.g. ETH/BTC@5m",
                shown::text(series)
            )
        })
}

pub(super) fn timeframe(text: &str) -> anyhow::Result<Timeframe> {
    Timeframe::parse(text)
        .with_context(|| format!("timeframe '{text}' is not one of 1m 5m 15m 1h 4h 1d 1w 1M"))
}

pub(super) fn run(command: DataCommand, db: &Path) -> anyhow::Result<bool> {
    match command {
        DataCommand::Import {
            file,
            symbol,
            timeframe: tf,
            columns,
            replace,
        } => {
            let tf = timeframe(&tf)?;
            check_symbol(&symbol)?;
            let columns = candles::Columns::parse(columns.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("--columns: {e}"))?;
            // Bars of a day or longer are dated: a local midnight (as
            // exporters of stocks write them) is the date it names.
            let columns = columns.with_dates(tf.duration_ms() >= Timeframe::D1.duration_ms());
            // Read twice at once (its digest, its bars): only a file can be.
            if std::fs::metadata(&file).is_ok_and(|m| m.is_dir()) {
                bail!("{}: is a directory, not a candle file", file.display());
            }
            if std::fs::metadata(&file).is_ok_and(|m| !m.is_file()) {
                bail!(
                    "{}: not a regular file (a pipe or a device is read once; save it to a file first)",
                    file.display()
                );
            }
            // Three at once: the file's digest is taken, its bars read
            // and checked on another thread, and stored here as they come
            // (a Parquet file's never held whole), in one transaction.
            let source = file.display().to_string();
            let mut store = Store::open(db)?;
            let (file, columns) = (&file, &columns);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let mut marked = candles::resample::Partial::default();
            let report = std::thread::scope(|s| {
                let digest = s.spawn(|| crate::store::file_digest(file, &stop));
                let (pieces, taken) =
                    std::sync::mpsc::sync_channel::<candles::Marked>(PIECES_AHEAD);
                // The bars the file marks partial: stored as marks beside
                // them, and counted to say where they are.
                let reader = s.spawn(move || {
                    let mut marked = candles::resample::Partial::default();
                    candles::read_file_each_marked(file, columns, |piece, marks| {
                        marked.extend(marks.iter().copied());
                        // The import stopped first: its error is the one said.
                        (pieces.send((piece, marks))).map_err(|_| anyhow::anyhow!("stopped"))
                    })
                    .map(|()| marked)
                });
                let marked = &mut marked;
                // `taken` moves in: an import that stops drops it, and the
                // reader's next piece finds no one to take it.
                let imported = store.import_with(&symbol, tf, &source, replace, move |import| {
                    for (piece, marks) in taken.iter() {
                        import.push_marked(&piece, &marks)?;
                    }
                    *marked = match reader.join() {
                        Ok(read) => read?,
                        Err(_) => bail!("{}: the thread reading it failed", file.display()),
                    };
                    if let Some(why) = not_of_timeframe(import.spacings(), tf) {
                        bail!("{}: {why}", file.display());
                    }
                    let digest = digest
                        .join()
                        .map_err(|_| anyhow::anyhow!("the digest failed"))?;
                    digest.with_context(|| format!("{}: cannot read", file.display()))
                });
                // A failed import does not wait for the rest of the digest.
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                imported
            })?;
            let (first, last) = report.range.unwrap_or_default();
            println!(
                "imported {} {} from {}: {} ({} new, {} unchanged, {} replaced), {} .. {}",
                shown::text(&report.symbol),
                report.timeframe,
                source,
                shown::counted(report.bars, "bar"),
                report.inserted,
                report.unchanged,
                report.replaced,
                format_time(first),
                format_time(last),
            );
            for mended in &report.mended {
                println!("{mended}");
            }
            if marked.count > 0 {
                println!(
                    "{} of its bars {} marked partial by the file ({}): kept as marks beside them (backtests and exports of {}@{tf} say them)",
                    marked.count,
                    shown::is_are(marked.count),
                    marked.places(),
                    shown::text(&report.symbol)
                );
            }
            println!("{}", gap_line(&report.gaps));
            print_stored_series(&store, &report.symbol, tf, report.bars)?;
            Ok(true)
        }
        DataCommand::Synth {
            symbol,
            bars,
            seed,
            timeframe: tf,
            start,
            price,
            sigma,
            tick,
            lot,
            out,
        } => {
            let tf = timeframe(&tf)?;
            let start_ms = candles::parse_time(&start).map_err(anyhow::Error::msg)?;
            let mut candles =
                synth::random_walk(seed, bars, start_ms, tf.duration_ms(), price, sigma);
            // Monthly bars a calendar month apart, not 30 days.
            if tf == Timeframe::Month1 {
                for (i, c) in candles.iter_mut().enumerate() {
                    let month = u32::try_from(i).ok();
                    c.time_ms = (month.and_then(|m| candles::months_after(start_ms, m)))
                        .with_context(|| format!("synth bar {}: past the last time", i + 1))?;
                }
            }
            // A wild enough walk leaves what the ledger books (or the times
            // Keel accepts): the same rule as every imported candle.
            let (first, last) = candles::CANDLE_TIME_MS;
            for (i, c) in candles.iter_mut().enumerate() {
                synth::quote(c, tick, lot);
                candles::check_candle(c).map_err(|e| {
                    // A time out of range is the start's and the count's.
                    let hint = match ((first..=last).contains(&c.time_ms), tick.is_some()) {
                        (true, false) => "try a smaller --sigma or fewer --bars",
                        (true, true) => "try a smaller --sigma, a finer --tick or fewer --bars",
                        (false, _) => "try an earlier --start or fewer --bars",
                    };
                    anyhow::anyhow!("synth bar {}: {e} ({hint})", i + 1)
                })?;
            }
            match out {
                Some(path) => {
                    candles::write_file(&path, &candles)?;
                    println!(
                        "wrote {bars} {tf} bars of {symbol} (seed {seed}) to {}",
                        path.display()
                    );
                }
                None => {
                    let mut store = Store::open(db)?;
                    let source = format!("synth:seed={seed}");
                    let report = store.import_candles(
                        &symbol,
                        tf,
                        &candles,
                        &source,
                        source.as_bytes(),
                        false,
                    )?;
                    println!(
                        "stored {} {tf} bars of {symbol} (seed {seed}) in {}",
                        report.inserted,
                        db.display()
                    );
                }
            }
            Ok(true)
        }
        DataCommand::Export {
            series,
            out,
            timeframe: to,
        } => {
            let (symbol, tf) = series_arg(&series)?;
            let stdout = out == Path::new("-");
            if !stdout {
                refuse_export_to(&out, db)?;
            }
            let store = Store::open_existing(db)?;
            // What is exported is one state of the store.
            store.hold_still()?;
            let Some(listed) = store.series(symbol, tf)? else {
                bail!(
                    "{}: no such series in {} (keel data list names them)",
                    shown::text(&series),
                    db.display()
                );
            };
            let resampler = match to {
                Some(to) => Some(
                    candles::resample::Resampler::new(tf.duration_ms(), to)
                        .map_err(|e| anyhow::anyhow!("--timeframe {to}: {e}"))?,
                ),
                None => None,
            };
            // The bars the file they were imported from marked partial:
            // marked so again, or making the bars they fall in partial.
            let marks = crate::store::SpanMarks::new(store.marks(symbol, tf)?);
            let marked = resampler.is_some() || marks.any();
            // Span by span, never the whole series: a file is replaced only
            // once complete; the standard output has what came before a
            // damaged span, then the error.
            let (written, partial) = if stdout {
                // A reader that has had enough (`| head`) ends the export
                // quietly, as it ends any tool writing to a pipe.
                let quiet = |e: &anyhow::Error| {
                    e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                };
                let written = (|| {
                    let mut rows = candles::CsvRows::new(std::io::stdout().lock(), marked)?;
                    let pumped = pump(&store, &listed, tf, resampler, marks, &mut |c, p| {
                        rows.write(c, p)
                    })?;
                    drop(rows.finish()?);
                    anyhow::Ok(pumped)
                })();
                match written {
                    Err(e) if quiet(&e) => return Ok(true),
                    other => other.context("standard output")?,
                }
            } else {
                let mut pumped = (0, Default::default());
                candles::write_file_each(&out, marked, |put| {
                    // A damaged series is said as a read says it; only what
                    // the file refuses is a failure to write.
                    pumped = pump(&store, &listed, tf, resampler, marks, put).map_err(|e| {
                        match e.downcast_ref::<crate::store::StoreError>() {
                            Some(_) => e,
                            None => e.context(format!("{}: cannot write", out.display())),
                        }
                    })?;
                    Ok::<_, anyhow::Error>(())
                })?;
                pumped
            };
            let note = match partial.count {
                0 if to.is_some() => " (none partial: its partial column is all false)".into(),
                0 => String::new(),
                n if to.is_none() => format!(
                    " ({n} partial, marked in its partial column as the file they were imported from marked them; {})",
                    partial.places()
                ),
                n => format!(
                    " ({n} partial, marked in its partial column: a gap inside, the data starting or ending inside them, or a bar marked partial; {})",
                    partial.places()
                ),
            };
            let what = format!(
                "{} of {} {}{note}",
                shown::counted(written, "bar"),
                shown::text(symbol),
                to.unwrap_or(tf)
            );
            match stdout {
                true => eprintln!("wrote {what}"),
                false => println!("wrote {what} to {}", out.display()),
            }
            Ok(true)
        }
        DataCommand::Download(args) => super::download::run(args, db),
        DataCommand::Delete { series } => {
            let (symbol, text) = series_parts(&series)?;
            // A timeframe Keel does not know only where damage put one.
            let tf = timeframe(text);
            let mut store = Store::open_existing(db)?;
            let spelled = tf.as_ref().map_or(text, |tf| tf.as_str());
            let bars = match (store.delete_series(symbol, spelled)?, tf) {
                (Some(bars), _) => bars,
                (None, Err(e)) => return Err(e),
                (None, Ok(_)) => bail!(
                    "{}: no such series in {} (keel data list names them)",
                    shown::text(&series),
                    db.display()
                ),
            };
            println!(
                "deleted {} {}: {}",
                shown::text(symbol),
                shown::text(spelled),
                shown::counted(bars, "bar")
            );
            Ok(true)
        }
        DataCommand::List { check } => {
            let store = Store::open_existing(db)?;
            // One state for the catalogue and every span read after it.
            if check {
                store.hold_still()?;
            }
            let series = store.list_series()?;
            let unlisted = match check {
                true => store.unlisted_series()?,
                false => Vec::new(),
            };
            if series.is_empty() && unlisted.is_empty() {
                println!("no candles stored in {}", db.display());
            }
            let mut damaged = 0;
            for s in &series {
                println!(
                    "{:<12} {:<4} {:>14}  {} .. {}  {}  {}",
                    shown::text(&s.symbol).to_string(),
                    s.timeframe,
                    shown::counted(s.bars, "bar"),
                    format_time(s.first_ms),
                    format_time(s.last_ms),
                    gaps_text(s),
                    &s.digest[..s.digest.len().min(7 + 16)]
                );
                if check {
                    match store.check_series(s) {
                        Ok(()) => println!("  whole: every bar read and checked"),
                        Err(e) => {
                            damaged += 1;
                            println!("  damaged: {e}");
                        }
                    }
                }
            }
            for (symbol, timeframe) in &unlisted {
                damaged += 1;
                println!(
                    "{:<12} {:<4} damaged: bars or marks stored that the catalogue does not list (keel data delete {}@{} removes them)",
                    shown::text(symbol).to_string(),
                    shown::text(timeframe),
                    shown::text(symbol),
                    shown::text(timeframe)
                );
            }
            if check && damaged > 0 {
                let all = series.len() + unlisted.len();
                eprintln!(
                    "error: {damaged} of {all} stored series {} damaged (above)",
                    shown::is_are(damaged)
                );
                return Ok(false);
            }
            Ok(true)
        }
    }
}

/// A symbol the store can name and a listing can show: not empty, no
/// space around it, no control character, no `@` (stored series are
/// named `SYMBOL@TIMEFRAME`, so one with an `@` could never be named), and
/// written composed (Unicode NFC), so that symbols that look alike are one.
pub(super) fn check_symbol(symbol: &str) -> anyhow::Result<()> {
    let fault = if symbol.trim().is_empty() {
        Some("a symbol is not empty")
    } else if symbol.trim() != symbol {
        Some("a symbol has no space around it")
    } else if symbol.chars().any(char::is_control) {
        Some("a symbol holds no control character")
    } else if symbol.contains('@') {
        Some("a symbol holds no '@' (stored series are named SYMBOL@TIMEFRAME)")
    } else if symbol.chars().count() > 64 {
        Some("a symbol is at most 64 characters")
    } else {
        None
    };
    if let Some(fault) = fault {
        bail!("--symbol {}: {fault}", shown::quoted(symbol));
    }
    // Text that looks alike is one symbol: written another way (a letter
    // and its accent as two characters), it would be another series that
    // prints as this one.
    let nfc = icu_normalizer::ComposingNormalizer::new_nfc();
    if !nfc.is_normalized(symbol) {
        let composed = nfc.normalize(symbol);
        bail!(
            "--symbol {}: a symbol is written composed (Unicode NFC: {}, {} characters, not {})",
            shown::quoted(symbol),
            shown::quoted(&composed),
            composed.chars().count(),
            symbol.chars().count()
        );
    }
    Ok(())
}

/// A spacing in the largest unit it is whole in: `60 ms`, `90 s`, `5 min`, `1 d`.
fn spacing_text(ms: i64) -> String {
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    match units.iter().find(|(unit, _)| ms != 0 && ms % unit == 0) {
        Some((unit, name)) => format!("{} {name}", ms / unit),
        None => format!("{ms} ms"),
    }
}

/// Hands the stored series to `put` span by span, aggregated by
/// `resampler` when given, with whether each bar is partial (aggregated
/// so, or among the `marks` its import kept; no marks when neither
/// aggregated nor marked); how many bars it put, and which of them are
/// partial. A damaged span stops it with the store's error; a failed
/// `put` with its own.
fn pump(
    store: &Store,
    listed: &crate::store::StoredSeries,
    tf: Timeframe,
    mut resampler: Option<candles::resample::Resampler>,
    mut marks: crate::store::SpanMarks,
    put: &mut candles::Put<'_>,
) -> anyhow::Result<(usize, candles::resample::Partial)> {
    let (mut written, mut failed) = (0, None);
    let (mut made, mut flags) = (Vec::new(), Vec::new());
    let mut partial = candles::resample::Partial::default();
    let whole = store.stream_series(listed, tf, |span| {
        let given = marks.of(span);
        let bars = match &mut resampler {
            Some(r) => {
                made.clear();
                flags.clear();
                if let Err(e) = r.push_partial_marked(span, &given, &mut made, &mut flags) {
                    failed = Some(anyhow::anyhow!("{}@{tf}: {e}", shown::text(&listed.symbol)));
                    return false;
                }
                &made[..]
            }
            None if marks.any() => {
                partial.extend(given.iter().copied());
                flags.clear();
                let mut at = given.iter().peekable();
                flags.extend(span.iter().map(|c| at.next_if_eq(&&c.time_ms).is_some()));
                &span[..]
            }
            None => &span[..],
        };
        written += bars.len();
        put(bars, &flags)
            .map_err(|e| failed = Some(e.into()))
            .is_ok()
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    marks.check(store, &listed.symbol, tf, whole)?;
    if let Some(r) = resampler {
        made.clear();
        flags.clear();
        partial = r.finish_marked(&mut made, &mut flags);
        written += made.len();
        put(&made, &flags)?;
    }
    Ok((written, partial))
}

/// After the lines that tell of the bars a command stored: the series
/// whole, when it holds more than those (bars stored before, a span
/// mended, another run's bars with a gap between).
pub(super) fn print_stored_series(
    store: &Store,
    symbol: &str,
    tf: Timeframe,
    bars: usize,
) -> anyhow::Result<()> {
    let series = store.series(symbol, tf)?;
    if let Some(s) = series.filter(|s| s.bars as usize != bars) {
        println!(
            "the stored series now: {} bars, {} .. {}, {}",
            s.bars,
            format_time(s.first_ms),
            format_time(s.last_ms),
            gaps_text(&s)
        );
    }
    Ok(())
}

/// A stored series' gaps, as the catalogue counts them.
fn gaps_text(s: &crate::store::StoredSeries) -> String {
    match s.gaps {
        0 => "no gaps".to_owned(),
        n => format!(
            "{} ({} missing)",
            shown::counted(n, "gap"),
            shown::counted(s.missing, "bar")
        ),
    }
}

/// The gaps of imported or downloaded bars, in words.
pub(super) fn gap_line(gaps: &[Gap]) -> String {
    let missing: u64 = gaps.iter().map(|g| g.missing).sum();
    match gaps.iter().max_by_key(|g| g.missing) {
        None => "no gaps".to_owned(),
        Some(largest) => format!(
            "{}, {} (not filled); largest: {} after {}",
            shown::counted(gaps.len(), "gap"),
            shown::counted(missing, "missing bar"),
            shown::counted(largest.missing, "bar"),
            format_time(largest.after_ms)
        ),
    }
}
