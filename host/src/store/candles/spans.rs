//! A span's row of `candle_spans`: written from its bars (packed, with
//! the digest of their plain columns and the row's own figures), and read
//! back, checked against all of them.

use rusqlite::{Transaction, params};

use keel_model::candles::columns::{self, span_of};
use keel_model::candles::packed::{self, Packer};
use keel_model::candles::{Candle, Timeframe, check_candle, format_time, gaps};

/// The times span `span` holds, first and last.
pub(super) fn span_times(span: i64) -> (i64, i64) {
    let from = span.saturating_mul(columns::SPAN_MS);
    (from, from.saturating_add(columns::SPAN_MS - 1))
}

/// The times a span's row that `fault` refused is said by: the first and
/// last bar the row lists, when they lie within the span and are not what
/// is wrong with it; else the span's whole range (which may run past the
/// series' ends).
pub(super) fn said_times(row: &rusqlite::Row, span: i64, fault: &SpanFault) -> (i64, i64) {
    let (from, to) = span_times(span);
    let figure = |i: usize| row.get::<_, i64>(i).ok();
    match (fault, figure(4), figure(5)) {
        (SpanFault::Bars(_), Some(first), Some(last))
            if from <= first && first <= last && last <= to =>
        {
            (first, last)
        }
        _ => (from, to),
    }
}

/// The bars of a `candle_spans` row ([`SPAN_COLUMNS`]) of `span`,
/// appended to `out` (which holds the spans before it), and its digest
/// (`plain` is scratch for its plain columns);
/// or why the row is damaged: its columns against its digest and bar
/// count, each bar against its span, the bar before and the candle rules,
/// and its first and last times and gap counts against its bars.
pub(super) fn stored_span(
    row: &rusqlite::Row,
    span: i64,
    timeframe: Timeframe,
    grid: &mut Option<i64>,
    out: &mut Vec<Candle>,
    plain: &mut Vec<u8>,
) -> Result<[u8; 32], SpanFault> {
    let bar_ms = timeframe.duration_ms();
    let bars_of = |why: String| SpanFault::Bars(why);
    // A count that is not a number is a figure of the row, not its bars:
    // the bars may still be whole (and `--replace` keeps them).
    let bars: Option<i64> = row.get(1).ok();
    let digest: [u8; 32] = (row.get_ref(2).ok())
        .and_then(|v| v.as_blob().ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bars_of("its digest is not one".into()))?;
    let bytes = (row.get_ref(3).ok())
        .and_then(|v| v.as_blob().ok())
        .ok_or_else(|| bars_of("its columns are not bytes".into()))?;
    // The bars are checked against the digest of their plain columns,
    // however they are kept: bars that are not the span's are refused
    // even when a hand that knows the packing made them consistent.
    let packed = match row.get_ref(8) {
        Ok(rusqlite::types::ValueRef::Integer(0)) => false,
        Ok(rusqlite::types::ValueRef::Integer(1)) => true,
        _ => return Err(bars_of("its packing is neither 0 nor 1".into())),
    };
    let plain: &[u8] = match packed {
        true => {
            packed::unpack_plain(bytes, plain)
                .ok_or_else(|| bars_of("its columns are not its bars".into()))?;
            plain
        }
        false => bytes,
    };
    if columns::span_digest(plain) != digest {
        return Err(bars_of("its bars do not match their digest".into()));
    }
    let before = out.len();
    columns::decode(plain, out).ok_or_else(|| bars_of("its columns are not its bars".into()))?;
    for i in before..out.len() {
        let c = &out[i];
        if span_of(c.time_ms) != span {
            return Err(bars_of(format!(
                "a bar at {} is outside it",
                format_time(c.time_ms)
            )));
        }
        if i.checked_sub(1)
            .is_some_and(|p| c.time_ms <= out[p].time_ms)
        {
            return Err(bars_of("its bars are out of order".into()));
        }
        check_candle(c).map_err(bars_of)?;
        // Whole timeframes from the series' other bars (months: no grid).
        if timeframe != Timeframe::Month1
            && (c.time_ms - *grid.get_or_insert(c.time_ms)).rem_euclid(bar_ms) != 0
        {
            return Err(bars_of(format!(
                "a bar at {} is off the series' {timeframe} grid",
                format_time(c.time_ms)
            )));
        }
    }
    // The row's own figures, which the catalogue is made of, are its bars'.
    let got = &out[before..];
    match bars {
        None => return Err(SpanFault::Figures("its bar count is not a number")),
        Some(bars) if bars != got.len() as i64 => {
            return Err(SpanFault::Figures("its bar count is not its bars'"));
        }
        Some(_) => {}
    }
    let figure = |i: usize| row.get::<_, i64>(i).ok();
    let range = got
        .first()
        .zip(got.last())
        .map(|(a, b)| (a.time_ms, b.time_ms));
    if range.is_none() || range != figure(4).zip(figure(5)) {
        return Err(SpanFault::Figures(
            "its first and last times are not its bars'",
        ));
    }
    let holes = gaps(got, bar_ms);
    let missing: u64 = holes.iter().map(|g| g.missing).sum();
    if Some(holes.len() as i64) != figure(6) || Some(missing as i64) != figure(7) {
        return Err(SpanFault::Figures("its gap counts are not its bars'"));
    }
    Ok(digest)
}

/// Why a stored span cannot be used as it is.
#[derive(Debug)]
pub(super) enum SpanFault {
    /// Its bars are damaged: they cannot be trusted.
    Bars(String),
    /// Its bars are whole (their digest holds, every rule too) but the
    /// row's figures are not theirs: they can be made again from them.
    Figures(&'static str),
}

impl SpanFault {
    pub(super) fn why(&self) -> &str {
        match self {
            SpanFault::Bars(why) => why,
            SpanFault::Figures(why) => why,
        }
    }
}

/// The columns `stored_span` reads, in its order.
pub(super) const SPAN_COLUMNS: &str =
    "span, bars, digest, columns, first_ms, last_ms, gaps, missing, packed";

/// Scratch for writing spans, kept between them: a span's plain columns
/// (its digest is theirs) and its packed bytes (what is kept).
#[derive(Debug, Default)]
pub(super) struct SpanBytes {
    pub(super) plain: Vec<u8>,
    packed: Vec<u8>,
    packer: Packer,
    /// Written as plain columns only: migration 11's move, which runs
    /// before `packed` exists (migration 14).
    plain_only: bool,
}

impl SpanBytes {
    /// Scratch that writes plain columns only (see `plain_only`).
    pub(super) fn plain_only() -> SpanBytes {
        SpanBytes {
            plain_only: true,
            ..SpanBytes::default()
        }
    }
}

/// One span's bars, written whole over what was stored.
pub(super) fn write_span(
    tx: &Transaction,
    symbol: &str,
    timeframe: &str,
    bar_ms: i64,
    bars: &[Candle],
    scratch: &mut SpanBytes,
) -> rusqlite::Result<()> {
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return Ok(());
    };
    columns::encode(bars, &mut scratch.plain);
    let digest = columns::span_digest(&scratch.plain);
    let holes = gaps(bars, bar_ms);
    let missing: u64 = holes.iter().map(|g| g.missing).sum();
    // Packed, unless the `packed` column is not there yet.
    let (kept, column, value, update) = match scratch.plain_only {
        true => (&scratch.plain, "", "", ""),
        false => {
            scratch.packer.pack(&scratch.plain, &mut scratch.packed);
            (&scratch.packed, ", packed", ", 1", ", packed = 1")
        }
    };
    tx.prepare_cached(&format!(
        "INSERT INTO candle_spans (symbol, timeframe, span, bars, first_ms, last_ms, gaps, missing, digest, columns{column})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10{value})
         ON CONFLICT (symbol, timeframe, span) DO UPDATE SET
            bars = excluded.bars, first_ms = excluded.first_ms, last_ms = excluded.last_ms,
            gaps = excluded.gaps, missing = excluded.missing, digest = excluded.digest,
            columns = excluded.columns{update}"
    ))?
    .execute(params![
        symbol,
        timeframe,
        span_of(first.time_ms),
        bars.len() as i64,
        first.time_ms,
        last.time_ms,
        holes.len() as i64,
        missing as i64,
        &digest[..],
        &kept[..]
    ])?;
    Ok(())
}
