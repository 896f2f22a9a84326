//! Untrusted text and numbers, made fit to show in an error line, a table or
//! a terminal. A strategy's symbols, tags, reasons and log lines, and a
//! user's file contents, reach the operator's screen only through here:
//! quoted input is cut to [`MAX_CHARS`] characters, control, bidi and other
//! invisible characters are escaped (`\x1b`, `\u{202e}`), and numbers are
//! written compactly (`1e308`, not 309 digits).
//!
//! Each helper returns a small `Copy` value that implements `Display`, so
//! showing text costs nothing until it is formatted.

use std::fmt::{self, Display, Write};

/// Most characters of one quoted input shown; the rest becomes `…`.
pub const MAX_CHARS: usize = 80;

/// Most characters of a whole line shown (an error, a log line).
pub const MAX_LINE_CHARS: usize = 1000;

/// Most characters shown of another library's message.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `text` as it may be shown: at most [`MAX_CHARS`] characters, every
/// control, bidi and invisible formatting character escaped.
pub fn text(text: &str) -> Text<'_> {
    Text {
        text,
        quoted: false,
        max: MAX_CHARS,
    }
}

/// A whole line (an error message, a strategy's log line) as it may be
/// shown: escaped as [`text`], cut at [`MAX_LINE_CHARS`].
pub fn line(text: &str) -> Text<'_> {
    Text {
        text,
        quoted: false,
        max: MAX_LINE_CHARS,
    }
}

/// Text the operator asked to read whole (a prompt, a model's answer, one
/// line of it at a time): escaped as [`text`], never cut.
pub fn whole(text: &str) -> Text<'_> {
    Text {
        text,
        quoted: false,
        max: usize::MAX,
    }
}

/// Another library's error message (a TOML or JSON parser's), which may
/// quote the input: escaped, every number of more than 24 characters
/// written compactly (`1e-300`, not 300 digits; past f64's range, its
/// first 20 digits and `…`), cut at
/// [`MAX_MESSAGE_CHARS`]. For an error path: it builds a string.
pub fn message(text: &str) -> String {
    let mut compacted = String::with_capacity(text.len().min(4 * MAX_MESSAGE_CHARS));
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(start);
        compacted.push_str(before);
        let end = from
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_digit()
                    || c == '.'
                    || c == 'e'
                    || c == 'E'
                    || ((c == '-' || c == '+') && i > 0 && from[..i].ends_with(['e', 'E'])))
            })
            .map_or(from.len(), |(i, _)| i);
        let run = &from[..end];
        match run.parse::<f64>() {
            _ if run.len() <= 24 => compacted.push_str(run),
            Ok(v) if v.is_finite() => write!(compacted, "{}", number(v)).unwrap_or(()),
            // Past f64's range, or not one number: its first digits.
            _ => write!(compacted, "{}…", &run[..20]).unwrap_or(()),
        }
        if compacted.chars().count() > MAX_MESSAGE_CHARS {
            break;
        }
        rest = &from[end..];
    }
    if compacted.chars().count() <= MAX_MESSAGE_CHARS {
        compacted.push_str(rest);
    }
    Text {
        text: &compacted,
        quoted: false,
        max: MAX_MESSAGE_CHARS,
    }
    .to_string()
}

/// [`text`] in double quotes, with `"` and `\` escaped too: for naming
/// input in an error (`symbol "\x1b[31mBTC"`).
pub fn quoted(text: &str) -> Text<'_> {
    Text {
        text,
        quoted: true,
        max: MAX_CHARS,
    }
}

/// `value` in at most ~24 characters: its shortest exact form in
/// [1e-6, 1e15), scientific notation outside (`1e308`, `2.5e-9`).
pub fn number(value: f64) -> Number {
    Number {
        value,
        decimals: None,
    }
}

/// `value` with `decimals` places (`{:.2}`) in [1e-6, 1e15); scientific
/// notation with as many decimals outside (`1.00e306`).
pub fn fixed(value: f64, decimals: usize) -> Number {
    Number {
        value,
        decimals: Some(decimals),
    }
}

/// An amount of money or of an asset: two decimals from 1 up (`10.00`),
/// three significant digits below (`0.000123`), so a small amount never
/// shows as `0.00`.
pub fn amount(value: f64) -> Number {
    let size = value.abs();
    // From 1 up, and below 1e-6 where the scientific form takes over, two
    // decimals; in between, three significant digits.
    let decimals = if (1e-6..1.0).contains(&size) {
        (2 - size.log10().floor() as i64).clamp(2, 8) as usize
    } else {
        2
    };
    fixed(value, decimals)
}

/// Two numbers as written (by [`fixed`], [`amount`], …), both with more
/// decimals where they differ but would read alike: a value past a limit
/// never reads as the limit (`order of 10.00 is below the minimum order
/// of 10.00`). Up to eight decimals more.
pub fn apart(a: Number, b: Number) -> (Number, Number) {
    let (mut a, mut b) = (a, b);
    for _ in 0..8 {
        if a.value == b.value || a.to_string() != b.to_string() {
            break;
        }
        a.decimals = a.decimals.map(|d| d + 1);
        b.decimals = b.decimals.map(|d| d + 1);
    }
    (a, b)
}

/// `n` of `one`, in the plural unless one: `1 bar`, `2 bars`, `0 bars`.
pub fn counted<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str) -> String {
    match n == N::from(1) {
        true => format!("1 {one}"),
        false => format!("{n} {one}s"),
    }
}

/// The verb for `n` of some things: `1 of 240 bars is`, `2 … are`.
pub fn is_are(n: usize) -> &'static str {
    match n {
        1 => "is",
        _ => "are",
    }
}

/// A price with the precision its size needs: six significant digits,
/// at least two decimals and at most eight (the ledger's), so
/// `0.00159866` and `42000.00` both read right.
pub fn price(value: f64) -> Number {
    let size = value.abs();
    let decimals = if size > 0.0 && size.is_finite() {
        (5 - size.log10().floor() as i64).clamp(2, 8) as usize
    } else {
        2
    };
    fixed(value, decimals)
}

/// See [`text`], [`quoted`] and [`line`].
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    text: &'a str,
    quoted: bool,
    max: usize,
}

impl Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_none() {
            return self.write_to(f);
        }
        // Padding and alignment apply to the text as shown.
        let mut shown = String::new();
        self.write_to(&mut shown)?;
        f.pad(&shown)
    }
}

impl Text<'_> {
    fn write_to(&self, f: &mut impl Write) -> fmt::Result {
        if self.quoted {
            f.write_char('"')?;
        }
        for (i, c) in self.text.chars().enumerate() {
            if i == self.max {
                f.write_char('…')?;
                break;
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '"' | '\\' if self.quoted => write!(f, "\\{c}")?,
                c if (c as u32) < 0x80 && c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c if hidden(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        if self.quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

/// Characters that are invisible or change how the text around them is
/// shown: C1 controls, bidi embeddings, overrides, isolates and marks,
/// zero-width characters, line and paragraph separators.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// See [`number`] and [`fixed`].
#[derive(Debug, Clone, Copy)]
pub struct Number {
    value: f64,
    decimals: Option<usize>,
}

impl Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        let plain = v == 0.0 || !v.is_finite() || (1e-6..1e15).contains(&v.abs());
        match (plain, self.decimals) {
            (true, None) => write_padded(f, format_args!("{v}")),
            (true, Some(d)) => write_padded(f, format_args!("{v:.d$}")),
            (false, None) => write_padded(f, format_args!("{v:e}")),
            (false, Some(d)) => write_padded(f, format_args!("{v:.d$e}")),
        }
    }
}

/// Writes `args` straight into `f`, or through a string when `f` asks for a
/// width (padding and alignment apply to the whole number, as for an f64).
fn write_padded(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    if f.width().is_none() {
        f.write_fmt(args)
    } else {
        f.pad(&args.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_plural_unless_one() {
        assert_eq!(counted(1u32, "bar"), "1 bar");
        assert_eq!(counted(0u32, "bar"), "0 bars");
        assert_eq!(counted(2_000_000usize, "bar"), "2000000 bars");
    }

    #[test]
    fn text_is_cut_and_escaped() {
        struct Case {
            input: String,
            text: String,
            quoted: String,
        }
        let case = |input: &str, text: &str, quoted: &str| Case {
            input: input.to_owned(),
            text: text.to_owned(),
            quoted: quoted.to_owned(),
        };
        let cases = [
            case("BTC/USD", "BTC/USD", "\"BTC/USD\""),
            case("", "", "\"\""),
            case("\u{1b}[31mred", "\\x1b[31mred", "\"\\x1b[31mred\""),
            case("a\0b\x7f", "a\\x00b\\x7f", "\"a\\x00b\\x7f\""),
            case(
                "line\nnext\r\t",
                "line\\nnext\\r\\t",
                "\"line\\nnext\\r\\t\"",
            ),
            case("abc\u{202e}fed", "abc\\u{202e}fed", "\"abc\\u{202e}fed\""),
            case(
                "\u{2066}x\u{2069}\u{200b}",
                "\\u{2066}x\\u{2069}\\u{200b}",
                "\"\\u{2066}x\\u{2069}\\u{200b}\"",
            ),
            case("\u{9b}31m", "\\u{9b}31m", "\"\\u{9b}31m\""),
            case("say \"hi\" \\", "say \"hi\" \\", "\"say \\\"hi\\\" \\\\\""),
            case("ünïcödé €", "ünïcödé €", "\"ünïcödé €\""),
        ];
        for c in cases {
            assert_eq!(text(&c.input).to_string(), c.text, "{:?}", c.input);
            assert_eq!(quoted(&c.input).to_string(), c.quoted, "{:?}", c.input);
        }
        let long = "x".repeat(10_000_000);
        let shown = text(&long).to_string();
        assert_eq!(shown, format!("{}…", "x".repeat(MAX_CHARS)));
        let shown = line(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_LINE_CHARS + 1);
        let exact = "é".repeat(MAX_CHARS);
        assert_eq!(
            text(&exact).to_string(),
            exact,
            "exactly the limit is whole"
        );
    }

    #[test]
    fn library_messages_get_compact_numbers_and_are_cut() {
        let tiny = format!(
            "invalid type: floating point `0.{}1`, expected u32",
            "0".repeat(300)
        );
        assert_eq!(
            message(&tiny),
            "invalid type: floating point `1e-301`, expected u32"
        );
        assert_eq!(
            message("line 3 column 7: expected 2.5 or 1e9\u{1b}"),
            "line 3 column 7: expected 2.5 or 1e9\\x1b"
        );
        let long = message(&"word ".repeat(1000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        let digits = message(&"9".repeat(100_000));
        assert_eq!(digits, format!("{}…", "9".repeat(20)));
    }

    #[test]
    fn numbers_are_compact() {
        let cases: [(f64, Option<usize>, &str); 16] = [
            (0.0, None, "0"),
            (1.5, None, "1.5"),
            (-42.0, None, "-42"),
            (0.1 + 0.2, None, "0.30000000000000004"),
            (1e308, None, "1e308"),
            (f64::MAX, None, "1.7976931348623157e308"),
            (-1e15, None, "-1e15"),
            (999_999_999_999_999.0, None, "999999999999999"),
            (2.5e-9, None, "2.5e-9"),
            (f64::NAN, None, "NaN"),
            (f64::NEG_INFINITY, None, "-inf"),
            (9.99, Some(2), "9.99"),
            (1e306, Some(2), "1.00e306"),
            (12.345, Some(1), "12.3"),
            (1e-7, Some(2), "1.00e-7"),
            (f64::NAN, Some(2), "NaN"),
        ];
        for (value, decimals, expect) in cases {
            let shown = match decimals {
                None => number(value).to_string(),
                Some(d) => fixed(value, d).to_string(),
            };
            assert_eq!(shown, expect, "{value:?}");
            assert!(shown.len() <= 24, "{shown}");
        }
        assert_eq!(format!("{:>8}", number(1.5)), "     1.5");
        let amounts = [
            (10.0, "10.00"),
            (9.999, "10.00"),
            (0.5, "0.500"),
            (0.0001, "0.000100"),
            (0.00012345, "0.000123"),
            (2.5e-7, "2.50e-7"),
            (0.0, "0.00"),
            (1e300, "1.00e300"),
            (f64::NAN, "NaN"),
        ];
        for (value, expect) in amounts {
            assert_eq!(amount(value).to_string(), expect, "{value:?}");
        }
        assert_eq!(format!("{:<6}|", text("\u{1b}")), "\\x1b  |");
    }

    #[test]
    fn prices_keep_the_digits_their_size_needs() {
        assert_eq!(price(0.00159866).to_string(), "0.00159866");
        assert_eq!(price(101.078405).to_string(), "101.078");
        assert_eq!(price(42000.0).to_string(), "42000.00");
        assert_eq!(price(1.5).to_string(), "1.50000");
        assert_eq!(price(0.0).to_string(), "0.00");
    }
}
