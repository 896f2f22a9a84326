use super::*;

/// 40,000 rows of CSV (about 2.5 MB, read in halves), and where the
/// second half starts: its first line's number and its index.
fn rows() -> (Vec<String>, usize) {
    let candles = crate::synth::random_walk(6, 40_000, 0, 60_000, 10.0, 0.01);
    let mut text = Vec::new();
    let text = String::from_utf8(
        write_rows(&mut text, &candles)
            .map(|w| w.clone())
            .expect("rows"),
    )
    .expect("utf-8");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // The rows after the header are one block (`read`).
    let body = &text[text.find('\n').expect("header") + 1..];
    let half = body.len() / 2;
    let cut = half + body[half..].find('\n').expect("newline") + 1;
    let index = 1 + body[..cut].lines().count();
    (lines, index)
}

fn read(lines: &[String]) -> Result<Vec<Candle>, CandleError> {
    let columns = Columns::default();
    let mut rows = Lines::new("a.csv", &columns);
    let mut out = Vec::new();
    // The header alone first: a block is read in halves once it is known.
    rows.block(&(lines[0].clone() + "\n"), &mut out)?;
    rows.block(&(lines[1..].join("\n") + "\n"), &mut out)?;
    Ok(out)
}

#[test]
fn halves_read_apart_are_the_rows_read_in_turn() {
    let (lines, _) = rows();
    let text = lines.join("\n") + "\n";
    let columns = Columns::default();
    let mut one = Lines::new("a.csv", &columns);
    let mut in_turn = Vec::new();
    one.lines(&text, &mut in_turn).expect("in turn");
    assert_eq!(read(&lines).expect("halves"), in_turn);
    assert_eq!(in_turn.len(), 40_000);
}

#[test]
fn lines_after_a_block_read_in_halves_are_counted_from_its_end() {
    let (mut lines, second) = rows();
    // Blank lines in either half are lines too.
    lines.insert(second + 5, String::new());
    lines.insert(7, String::new());
    let columns = Columns::default();
    let mut rows = Lines::new("a.csv", &columns);
    let mut out = Vec::new();
    // The header first: a block is read in halves once it is known.
    rows.block(&(lines[0].clone() + "\n"), &mut out)
        .expect("header");
    rows.block(&(lines[1..].join("\n") + "\n"), &mut out)
        .expect("rows");
    assert_eq!(out.len(), 40_000);
    let next = "2030-01-01T00:00:00Z,1,1,1,1,1\n\nnot a row\n";
    let err = rows.block(next, &mut out).expect_err("broken").to_string();
    assert_eq!(
        err,
        format!("a.csv:{}: expected 6 fields, found 1", lines.len() + 3)
    );
}

#[test]
fn a_bad_row_in_the_second_half_is_named_by_its_own_line() {
    let (lines, second) = rows();
    // The second half's fourth row is broken: line second + 4.
    let mut broken = lines.clone();
    broken[second + 3] = broken[second + 3].replace(',', ";");
    let err = read(&broken).expect_err("broken").to_string();
    assert_eq!(
        err,
        format!("a.csv:{}: expected 6 fields, found 1", second + 4)
    );
    // Where the halves meet: its first row is no later than the last.
    let mut early = lines.clone();
    early[second] = early[second - 2].clone();
    let err = read(&early).expect_err("early").to_string();
    assert!(
        err.starts_with(&format!("a.csv:{}: time ", second + 1))
            && err.contains("is not after the previous bar's"),
        "{err}"
    );
    // A broken row in both halves: the first is reported.
    broken[10] = "x".into();
    let err = read(&broken).expect_err("both").to_string();
    assert_eq!(err, "a.csv:11: expected 6 fields, found 1");
}
