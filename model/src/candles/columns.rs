//! Candles as columns of bytes: how the store keeps a series, and what its
//! digest is taken of.
//!
//! A series is cut into *spans* of [`SPAN_MS`] on the clock (65,536
//! minutes, about 45 days: 65,536 one-minute bars, some 3 MB), so that where
//! a bar belongs depends only on its time, never on what else is stored:
//! an import touches only the spans its bars fall in, and the digest of a
//! series is the same however it was put together. A span's *plain
//! columns* are its bars column by column, little-endian: every open time
//! (i64), then every open, high, low, close and volume (f64). They are what
//! a digest is taken of; the store keeps them packed
//! ([`packed`](super::packed)), in fewer bytes that decode to the same.
//!
//! The digest of a series is BLAKE3 over the BLAKE3 digests of its spans'
//! plain columns, in time order, written `blake3:<hex>`. The store computes
//! each span's digest when it writes the span and keeps it (each read
//! checks the span's bars against it); a backtest of a stored series takes
//! the series' digest from the catalogue, and one of a file computes it at
//! several gigabytes a second.

use super::Candle;

/// How long one span of a series is: 65,536 minutes.
pub const SPAN_MS: i64 = 65_536 * 60_000;

/// The bytes one bar takes in a span: its time and five values.
pub const BAR_BYTES: usize = 48;

/// The span a bar opening at `time_ms` belongs to.
pub fn span_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(SPAN_MS)
}

/// `candles` (oldest first) cut where their span changes.
pub fn spans(candles: &[Candle]) -> impl Iterator<Item = &[Candle]> {
    candles.chunk_by(|a, b| span_of(a.time_ms) == span_of(b.time_ms))
}

/// `candles` as columns: times, then opens, highs, lows, closes, volumes.
pub fn encode(candles: &[Candle], out: &mut Vec<u8>) {
    let n = candles.len();
    // Every byte is written below: only bytes the buffer did not have are
    // zeroed first (spans of one length reuse it as it is).
    out.resize(n * BAR_BYTES, 0);
    // One pass over the bars, writing the six columns side by side.
    let (times, rest) = out.split_at_mut(n * 8);
    let (opens, rest) = rest.split_at_mut(n * 8);
    let (highs, rest) = rest.split_at_mut(n * 8);
    let (lows, rest) = rest.split_at_mut(n * 8);
    let (closes, volumes) = rest.split_at_mut(n * 8);
    let places = times
        .chunks_exact_mut(8)
        .zip(opens.chunks_exact_mut(8))
        .zip(highs.chunks_exact_mut(8))
        .zip(lows.chunks_exact_mut(8))
        .zip(closes.chunks_exact_mut(8))
        .zip(volumes.chunks_exact_mut(8));
    for ((((((t, o), h), l), c), v), bar) in places.zip(candles) {
        t.copy_from_slice(&bar.time_ms.to_le_bytes());
        o.copy_from_slice(&bar.open.to_le_bytes());
        h.copy_from_slice(&bar.high.to_le_bytes());
        l.copy_from_slice(&bar.low.to_le_bytes());
        c.copy_from_slice(&bar.close.to_le_bytes());
        // A volume of -0 is 0 (`+ 0.0` makes it so): bars that compare
        // equal are the same bytes, and so the same digest.
        v.copy_from_slice(&(bar.volume + 0.0).to_le_bytes());
    }
}

/// Candles from `encode`'s bytes, appended to `out`; `None` when the bytes
/// are not a whole number of bars.
pub fn decode(bytes: &[u8], out: &mut Vec<Candle>) -> Option<()> {
    if !bytes.len().is_multiple_of(BAR_BYTES) {
        return None;
    }
    let n = bytes.len() / BAR_BYTES;
    let column = |k: usize| bytes[k * 8 * n..(k + 1) * 8 * n].chunks_exact(8);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    out.reserve(n);
    let rows = column(0)
        .zip(column(1))
        .zip(column(2))
        .zip(column(3))
        .zip(column(4))
        .zip(column(5));
    out.extend(rows.map(|(((((t, o), h), l), c), v)| Candle {
        time_ms: word(t) as i64,
        open: f64::from_bits(word(o)),
        high: f64::from_bits(word(h)),
        low: f64::from_bits(word(l)),
        close: f64::from_bits(word(c)),
        volume: f64::from_bits(word(v)),
    }));
    Some(())
}

/// The digest of one span's bytes.
pub fn span_digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// A series' digest from its spans' digests, in time order.
pub fn combine<'a>(span_digests: impl IntoIterator<Item = &'a [u8; 32]>) -> String {
    let mut h = blake3::Hasher::new();
    for d in span_digests {
        h.update(d);
    }
    format!("blake3:{}", h.finalize().to_hex())
}

/// The digest of `candles` (oldest first): the same as the store's for the
/// same bars.
pub fn digest(candles: &[Candle]) -> String {
    let mut digester = Digester::default();
    digester.push(candles);
    digester.finish()
}

/// [`digest`] of candles handed over in pieces cut anywhere, oldest first:
/// one span's candles held at a time.
#[derive(Debug, Default)]
pub struct Digester {
    span: Vec<Candle>,
    digests: Vec<[u8; 32]>,
    bytes: Vec<u8>,
}

impl Digester {
    pub fn push(&mut self, candles: &[Candle]) {
        for c in candles {
            if self
                .span
                .first()
                .is_some_and(|f| span_of(f.time_ms) != span_of(c.time_ms))
            {
                self.close_span();
            }
            self.span.push(*c);
        }
    }

    fn close_span(&mut self) {
        encode(&self.span, &mut self.bytes);
        self.digests.push(span_digest(&self.bytes));
        self.span.clear();
    }

    pub fn finish(mut self) -> String {
        if !self.span.is_empty() {
            self.close_span();
        }
        combine(&self.digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn columns_round_trip_every_bit() {
        let mut candles = synth::random_walk(7, 1000, -SPAN_MS, 60_000, 10.0, 0.01);
        candles[3].volume = 0.0;
        candles[4].close = 1e-8;
        let mut bytes = Vec::new();
        encode(&candles, &mut bytes);
        assert_eq!(bytes.len(), 1000 * BAR_BYTES);
        assert_eq!(&bytes[..8], &(-SPAN_MS).to_le_bytes());
        let mut back = Vec::new();
        decode(&bytes, &mut back).expect("whole bars");
        assert_eq!(back, candles);
        assert!(decode(&bytes[1..], &mut back).is_none());
    }

    /// A volume of -0 is the volume 0: the same bytes, so the same digest
    /// (an import calls them unchanged; the digests must agree).
    #[test]
    fn a_volume_of_minus_zero_is_stored_and_digested_as_zero() {
        let mut candles = synth::random_walk(5, 3, 0, 60_000, 10.0, 0.01);
        candles[1].volume = 0.0;
        let mut minus = candles.clone();
        minus[1].volume = -0.0;
        assert_eq!(digest(&minus), digest(&candles));
        let mut bytes = Vec::new();
        encode(&minus, &mut bytes);
        let mut back = Vec::new();
        decode(&bytes, &mut back).expect("whole bars");
        assert_eq!(back[1].volume.to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn spans_follow_the_clock_not_the_bars() {
        // A minute before a span's end, and its first minute.
        let candles = synth::random_walk(1, 4, SPAN_MS - 120_000, 60_000, 10.0, 0.01);
        let cut: Vec<usize> = spans(&candles).map(<[Candle]>::len).collect();
        assert_eq!(cut, vec![2, 2]);
        assert_eq!(span_of(-1), -1);
    }

    #[test]
    fn the_digest_is_of_the_bars_and_only_the_bars() {
        let candles = synth::random_walk(3, 200_000, 0, 60_000, 10.0, 0.01);
        let d = digest(&candles);
        assert!(d.starts_with("blake3:") && d.len() == 7 + 64, "{d}");
        assert_eq!(d, digest(&candles.clone()));
        let mut moved = candles.clone();
        moved[150_000].volume += 1e-9;
        assert_ne!(d, digest(&moved));
        assert_ne!(d, digest(&candles[1..]));
        // Four spans, hashed by their own bytes.
        let mut bytes = Vec::new();
        let each: Vec<[u8; 32]> = spans(&candles)
            .map(|s| {
                encode(s, &mut bytes);
                span_digest(&bytes)
            })
            .collect();
        assert_eq!(each.len(), 4);
        assert_eq!(combine(&each), d);
    }

    #[test]
    fn a_digest_of_pieces_is_the_digest_of_the_whole() {
        let candles = synth::random_walk(3, 200_000, -SPAN_MS / 2, 60_000, 10.0, 0.01);
        let whole = digest(&candles);
        for cut in [1, 999, 65_536, 70_001] {
            let mut d = Digester::default();
            for piece in candles.chunks(cut) {
                d.push(piece);
            }
            assert_eq!(d.finish(), whole, "pieces of {cut}");
        }
        assert_eq!(Digester::default().finish(), digest(&[]));
    }
}
