//! A span's bars packed: how the store keeps them on disk, in fewer bytes
//! than the plain columns of [`columns`](super::columns) and decoded back
//! to the very same bits.
//!
//! Each column becomes whole numbers, and each number is written as its
//! step from the one before, less the column's smallest step, in as few
//! whole bytes as the largest needs:
//! - open times are whole milliseconds already: a series without gaps
//!   steps by its timeframe every bar, which takes no bits at all;
//! - a column of prices or volumes a venue quotes in decimal digits (on
//!   a cent, on 1e-8 of a coin) becomes those digits, `value × 10^scale`,
//!   when every value of the span comes back from them bit for bit;
//! - any other column (a value with all of an `f64`'s seventeen digits)
//!   is kept as its values' bits, whose steps still need fewer than eight
//!   bytes when the values move a little from bar to bar.
//!
//! Layout, little-endian: a version byte, the bar count (u32), then for
//! each of the six columns (times, opens, highs, lows, closes, volumes) a
//! kind byte (the scale, or [`RAW`]), the first number (i64), the smallest
//! step (i64), the width of a step in bytes (u8, 0 to 8) and the steps.
//! Eight zero bytes end it. A span packed is the same bars as its plain
//! columns: `unpack_plain` gives those columns back byte for byte, and the
//! span's digest is theirs, whatever the store kept.

use super::columns::BAR_BYTES;

/// The only layout so far.
const VERSION: u8 = 1;

/// The kind of a column kept as its values' bits.
const RAW: u8 = 0xFF;

/// The largest scale tried: 10^15 (a volume on 1e-8 of a coin takes 8).
const MAX_SCALE: u8 = 15;

/// The most bars a span can hold: 65,536 minutes of one-minute bars.
pub const MAX_BARS: usize = 65_536;

/// Zero bytes after the columns, so that every step is read with whole
/// eight-byte loads inside the span's bytes.
const PAD: usize = 8;

/// Whole numbers beyond ±2^53 are not all `f64`s.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// 10^scale for every scale tried, each exact in an `f64`.
const POW10: [f64; MAX_SCALE as usize + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Scratch for packing, kept between spans.
#[derive(Debug, Default)]
pub struct Packer {
    numbers: Vec<i64>,
}

impl Packer {
    /// A span's plain columns (`columns::encode` of at most [`MAX_BARS`]
    /// bars) packed into `out`: the same bars in fewer bytes.
    pub fn pack(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let n = plain.len() / BAR_BYTES;
        out.clear();
        out.push(VERSION);
        out.extend((n as u32).to_le_bytes());
        let column = |k: usize| {
            let words = plain[k * 8 * n..(k + 1) * 8 * n].chunks_exact(8);
            words.map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        };
        self.numbers.clear();
        self.numbers.extend(column(0).map(|t| t as i64));
        put_column(0, &mut self.numbers, out);
        for k in 1..6 {
            let values = column(k).map(f64::from_bits);
            let kind = scaled(values, &mut self.numbers).unwrap_or_else(|| {
                self.numbers.clear();
                self.numbers.extend(column(k).map(|bits| bits as i64));
                RAW
            });
            put_column(kind, &mut self.numbers, out);
        }
        // Room for the reader's last eight-byte load.
        out.extend([0; PAD]);
    }
}

/// The values as whole numbers of one scale, the smallest from which every
/// one comes back bit for bit (`from_scaled`), into `numbers`; `None` when
/// no scale up to [`MAX_SCALE`] does.
fn scaled(values: impl Iterator<Item = f64>, numbers: &mut Vec<i64>) -> Option<u8> {
    numbers.clear();
    let mut scale = 0u8;
    for v in values {
        loop {
            if let Some(n) = to_scaled(v, scale) {
                numbers.push(n);
                break;
            }
            if scale == MAX_SCALE {
                return None;
            }
            // The numbers so far, ten times larger, give the same values at
            // the next scale: n / 10^s and 10n / 10^(s+1) are one rational,
            // and division rounds the rational, however it is written.
            scale += 1;
            for n in numbers.iter_mut() {
                *n = n.checked_mul(10).filter(|m| (*m as f64).abs() <= EXACT)?;
            }
        }
    }
    Some(scale)
}

/// `v` as a whole number at `scale`, if that number gives `v` back.
fn to_scaled(v: f64, scale: u8) -> Option<i64> {
    // Rounded half away from zero by hand: `f64::round` is a call into the
    // C library on CPUs without SSE4.1, and this runs for every value. A
    // wrong rounding (or a NaN, made 0 here) only fails the check below.
    let y = v * POW10[scale as usize];
    let n = (y + 0.5f64.copysign(y)) as i64;
    let exact = n.unsigned_abs() <= EXACT as u64;
    (exact && from_scaled(n, scale).to_bits() == v.to_bits()).then_some(n)
}

fn from_scaled(n: i64, scale: u8) -> f64 {
    n as f64 / POW10[scale as usize]
}

/// One column: its kind, first number, smallest step, width and steps.
/// `numbers` become their steps (a scratch the caller refills).
fn put_column(kind: u8, numbers: &mut [i64], out: &mut Vec<u8>) {
    out.push(kind);
    let first = numbers.first().copied().unwrap_or(0);
    // In place, back to front: each number becomes its step from the one
    // before (the first stays, unused).
    let (mut least, mut most) = (i64::MAX, i64::MIN);
    for i in (1..numbers.len()).rev() {
        let step = numbers[i].wrapping_sub(numbers[i - 1]);
        (least, most) = (least.min(step), most.max(step));
        numbers[i] = step;
    }
    let steps = numbers.get(1..).unwrap_or(&[]);
    if steps.is_empty() {
        (least, most) = (0, 0);
    }
    let above = |step: i64| step.wrapping_sub(least) as u64;
    // Whole bytes: a step is read with one load and a mask, and the bits a
    // byte rounds up cost little beside the step's own.
    let width = (u64::BITS - above(most).leading_zeros()).div_ceil(8) as usize;
    out.extend(first.to_le_bytes());
    out.extend(least.to_le_bytes());
    out.push(width as u8);
    if width > 0 {
        // Eight bytes stored at each step's place, the next step's store
        // writing over those past its width; the last one's cut off after.
        let start = out.len();
        out.resize(start + steps.len() * width + 8, 0);
        let bytes = &mut out[start..];
        for (i, &step) in steps.iter().enumerate() {
            if let Some(place) = bytes.get_mut(i * width..i * width + 8) {
                place.copy_from_slice(&above(step).to_le_bytes());
            }
        }
        out.truncate(start + steps.len() * width);
    }
}

/// A packed span's plain columns (`columns::encode`'s bytes of its bars),
/// into `plain`; `None` when the bytes are not a packed span (damaged, or
/// not packed): never more than [`MAX_BARS`] bars, whatever the bytes say.
/// The store checks a span's digest on these, then decodes them.
pub fn unpack_plain(bytes: &[u8], plain: &mut Vec<u8>) -> Option<()> {
    let mut rest = bytes;
    if take(&mut rest, 1)? != [VERSION] {
        return None;
    }
    let n = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    if n > MAX_BARS {
        return None;
    }
    let mut columns = Vec::with_capacity(6);
    for k in 0..6 {
        let column = Column::read(&mut rest, n)?;
        let known = match k {
            0 => column.kind == 0,
            _ => column.kind <= MAX_SCALE || column.kind == RAW,
        };
        if !known {
            return None;
        }
        columns.push(column);
    }
    if rest != [0; PAD] {
        return None;
    }
    plain.resize(n * BAR_BYTES, 0);
    if n == 0 {
        return Some(());
    }
    for (k, (column, words)) in columns
        .iter()
        .zip(plain.chunks_exact_mut(n * 8))
        .enumerate()
    {
        match (k, column.kind) {
            // Times, and values kept as their bits, are their words.
            (0, _) | (_, RAW) => column.write_words(words, |n| n as u64),
            (_, scale) => column.write_words(words, |n| from_scaled(n, scale).to_bits()),
        }
    }
    // The packer writes a volume of -0 as 0, as the plain columns do,
    // whose digest cannot tell the two apart: a -0 is damage. (Only bits
    // can be -0; a scaled 0 is 0.)
    let volumes = &plain[5 * 8 * n..];
    if columns[5].kind == RAW
        && volumes
            .chunks_exact(8)
            .any(|w| w == MINUS_ZERO.to_le_bytes())
    {
        return None;
    }
    Some(())
}

/// The bits of -0.
const MINUS_ZERO: u64 = 1 << 63;

/// One packed column, as read.
struct Column<'a> {
    kind: u8,
    first: i64,
    least: i64,
    width: usize,
    /// Its steps and every byte after them, to the span's end.
    packed: &'a [u8],
}

impl<'a> Column<'a> {
    /// The column at the front of `rest`, taken off it.
    fn read(rest: &mut &'a [u8], n: usize) -> Option<Self> {
        let kind = take(rest, 1)?[0];
        let first = i64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
        let least = i64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
        let width = usize::from(take(rest, 1)?[0]);
        // No step past 8 bytes; none at all in a span of one bar, whose
        // smallest step and width are written 0.
        if width > 8 || (n <= 1 && (least != 0 || width != 0)) {
            return None;
        }
        // A load may run past the column's own bytes, never past the
        // span's (`PAD`).
        let packed = *rest;
        take(rest, n.saturating_sub(1) * width)?;
        if rest.len() < PAD {
            return None;
        }
        Some(Column {
            kind,
            first,
            least,
            width,
            packed,
        })
    }

    /// Its numbers, in order, as words into `words` (eight bytes each,
    /// one per bar): `word` makes each number's.
    fn write_words(&self, words: &mut [u8], word: impl Fn(i64) -> u64) {
        let mut places = words.chunks_exact_mut(8);
        let Some(head) = places.next() else { return };
        head.copy_from_slice(&word(self.first).to_le_bytes());
        let mask = match self.width {
            0 => 0,
            width => u64::MAX >> (64 - 8 * width),
        };
        let step = |byte: usize| {
            let b = self.packed.get(byte..byte + 8).unwrap_or(&[0; 8]);
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) & mask
        };
        let mut last = self.first;
        for (i, place) in places.enumerate() {
            last = last.wrapping_add(self.least.wrapping_add(step(i * self.width) as i64));
            place.copy_from_slice(&word(last).to_le_bytes());
        }
    }
}

/// The next `n` bytes, taken off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

#[cfg(test)]
mod tests;
