use super::*;
use crate::candles::{Candle, columns};
use crate::synth::{SplitMix64, Step, quote, random_walk};

/// The bars of a packed span, appended to `out`: its plain columns
/// decoded, as the store reads them.
fn unpack(bytes: &[u8], out: &mut Vec<Candle>) -> Option<()> {
    let mut plain = Vec::new();
    unpack_plain(bytes, &mut plain)?;
    columns::decode(&plain, out)
}

/// The bars of `candles` packed then unpacked, and the packed length.
fn round_trip(candles: &[Candle]) -> (Vec<Candle>, usize) {
    let bytes = packed(candles);
    let mut out = Vec::new();
    unpack(&bytes, &mut out).expect("unpacks");
    (out, bytes.len())
}

fn packed(candles: &[Candle]) -> Vec<u8> {
    let (mut plain, mut bytes) = (Vec::new(), Vec::new());
    columns::encode(candles, &mut plain);
    Packer::default().pack(&plain, &mut bytes);
    bytes
}

/// The same bars as the plain columns give back, bit for bit.
fn assert_same_as_plain(candles: &[Candle]) -> usize {
    let mut plain = Vec::new();
    columns::encode(candles, &mut plain);
    let mut want = Vec::new();
    columns::decode(&plain, &mut want).expect("plain decodes");
    let (got, len) = round_trip(candles);
    let bits = |c: &[Candle]| -> Vec<[u64; 6]> {
        c.iter()
            .map(|c| {
                [
                    c.time_ms as u64,
                    c.open.to_bits(),
                    c.high.to_bits(),
                    c.low.to_bits(),
                    c.close.to_bits(),
                    c.volume.to_bits(),
                ]
            })
            .collect()
    };
    assert_eq!(bits(&got), bits(&want));
    len
}

fn ticks(seed: u64, n: usize) -> Vec<Candle> {
    let (tick, lot) = (Step::parse("0.01").ok(), Step::parse("0.00000001").ok());
    let mut bars = random_walk(seed, n, 1_700_000_000_000, 60_000, 100.0, 0.001);
    for c in &mut bars {
        quote(c, tick, lot);
    }
    bars
}

#[test]
fn a_venues_digits_take_a_fraction_of_the_plain_bytes_and_come_back_bit_for_bit() {
    let bars = ticks(7, MAX_BARS);
    let len = assert_same_as_plain(&bars);
    // Times without gaps take no bits; prices on a cent a few bits a bar.
    assert!(
        len * 4 < bars.len() * columns::BAR_BYTES,
        "{len} bytes for {} bars",
        bars.len()
    );
}

#[test]
fn full_precision_values_come_back_bit_for_bit_in_fewer_bytes() {
    let bars = random_walk(3, MAX_BARS, 0, 60_000, 100.0, 0.001);
    let len = assert_same_as_plain(&bars);
    // The times and the small steps of the prices' bits still pack.
    assert!(len < bars.len() * columns::BAR_BYTES * 3 / 4, "{len}");
}

#[test]
fn gaps_odd_values_and_extremes_come_back_bit_for_bit() {
    let mut bars = ticks(11, 500);
    bars[10].time_ms += 5 * 60_000; // not on the grid: the codec keeps any time
    for c in &mut bars[11..] {
        c.time_ms += 3_600_000; // a gap of an hour
    }
    bars[20].volume = -0.0; // as the plain columns: 0
    bars[21].open = -0.0; // a price of -0 has no digits: kept as bits
    bars[22].high = f64::MAX;
    bars[23].low = f64::MIN_POSITIVE / 4.0; // subnormal
    bars[24].close = f64::NAN;
    bars[25].volume = f64::INFINITY;
    bars[26].close = 0.1 + 0.2; // seventeen digits among cents
    bars[27].open = 9_007_199_254_740_993.0;
    bars[28].time_ms = bars[27].time_ms + 1;
    assert_same_as_plain(&bars);

    let extremes = [i64::MIN, -1, 0, i64::MAX];
    let mut far = ticks(1, extremes.len());
    for (c, t) in far.iter_mut().zip(extremes) {
        c.time_ms = t;
    }
    assert_same_as_plain(&far);
    assert_same_as_plain(&far[..1]);
    assert_same_as_plain(&[]);
}

#[test]
fn every_scale_and_width_comes_back_bit_for_bit() {
    let mut rng = SplitMix64::new(5);
    for scale in 0..=MAX_SCALE as i32 + 2 {
        for spread in [1u64, 1 << 7, 1 << 31, 1 << 52, u64::MAX] {
            let bars: Vec<Candle> = (0..300i64)
                .map(|i| {
                    let n = ((rng.next_u64() % spread) as i64).wrapping_sub((spread / 2) as i64);
                    let v = n as f64 / 10f64.powi(scale);
                    Candle {
                        time_ms: (i * 60_000).wrapping_add((rng.next_u64() % spread) as i64),
                        open: v,
                        high: v * 3.0,
                        low: -v,
                        close: f64::from_bits(rng.next_u64()),
                        volume: v.abs(),
                    }
                })
                .collect();
            assert_same_as_plain(&bars);
        }
    }
}

#[test]
fn damaged_bytes_are_refused_never_a_panic() {
    let bars = ticks(9, 1_000);
    let bytes = packed(&bars);
    let mut out = Vec::new();
    for len in 0..bytes.len() {
        assert!(unpack(&bytes[..len], &mut out).is_none(), "{len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(unpack(&longer, &mut out).is_none());
    // More bars than a span holds.
    let mut many = bytes.clone();
    many[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(unpack(&many, &mut out).is_none());
    // Another version; a width past 8 bytes; an unknown kind; times not whole.
    for (at, byte) in [(0, 2), (5 + 17, 9), (5 + 18, 16), (5, RAW)] {
        let mut bad = bytes.clone();
        bad[at] = byte;
        assert!(unpack(&bad, &mut out).is_none(), "{at}");
    }
    // Any byte changed: bars or a refusal, never a panic.
    let mut rng = SplitMix64::new(1);
    for _ in 0..2_000 {
        let mut bad = bytes.clone();
        let at = (rng.next_u64() % bad.len() as u64) as usize;
        bad[at] ^= 1 << (rng.next_u64() % 8);
        out.clear();
        let _ = unpack(&bad, &mut out);
        assert!(out.len() <= MAX_BARS);
    }
}

#[test]
fn unpacked_bars_are_appended_after_those_already_there() {
    let bars = ticks(2, 10);
    let bytes = packed(&bars[5..]);
    let mut out = bars[..5].to_vec();
    unpack(&bytes, &mut out).expect("unpacks");
    assert_eq!(out, bars);
}

#[test]
fn a_volume_of_minus_zero_is_damage_the_packer_never_writes() {
    // The plain columns write a volume of -0 as 0, so a digest of them
    // cannot tell the two apart: packed bars are refused if one is -0.
    let mut bars = random_walk(3, 5, 0, 60_000, 100.0, 0.001);
    bars[4].volume = 0.0;
    let mut plain = Vec::new();
    columns::encode(&bars, &mut plain);
    let volume_of_last = plain.len() - 8;
    plain[volume_of_last + 7] |= 0x80;
    let mut bytes = Vec::new();
    Packer::default().pack(&plain, &mut bytes);
    assert!(unpack(&bytes, &mut Vec::new()).is_none());
}

#[test]
fn a_span_of_one_bar_has_no_steps_to_describe() {
    let bytes = packed(&ticks(1, 1));
    let mut out = Vec::new();
    unpack(&bytes, &mut out).expect("one bar");
    // Each column's smallest step and width, which no step uses, must be
    // as the packer writes them: zero.
    for column in 0..6 {
        for (offset, byte) in [(9, 0x5a), (17, 3)] {
            let mut bad = bytes.clone();
            bad[5 + column * 18 + offset] = byte;
            assert!(unpack(&bad, &mut out).is_none(), "{column} {offset}");
        }
    }
}
