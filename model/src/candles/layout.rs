//! The layouts candle CSV comes in, and how each is recognised: Keel's own
//! `time,open,high,low,close,volume`; the same with capitalised or other
//! common names (yfinance's `Date,Open,High,Low,Close,Adj Close,Volume`,
//! `Datetime`, `timestamp`, `open_time`, …; an adjusted close is not the
//! close and is left aside); Binance's kline files, which have no header
//! (twelve columns, the open time first, in ms — or µs since 2025); or an
//! explicit map given by the user (`--columns time=Date,close=Close,…`).
//! Times may be RFC 3339, a date, a date and time (UTC unless an offset is
//! given), or epoch seconds, ms, µs or ns told apart by their digits.

use super::{COLUMNS, PARTIAL_COLUMN, shown};

/// Names a column may go by, per role (compared without case).
const ALIASES: [&[&str]; 6] = [
    &[
        "time",
        "date",
        "datetime",
        "timestamp",
        "open_time",
        "open time",
        "date_time",
        "opentime",
    ],
    &["open"],
    &["high"],
    &["low"],
    &["close"],
    &["volume", "vol"],
];

/// Columns named by the user for some roles: `time=Date,close=Close`;
/// and how a file's times are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    names: [Option<String>; 6],
    /// The column that marks partial bars, when the user names it (a
    /// file with two that could).
    partial: Option<String>,
    /// A time at local midnight with a UTC offset is the date it names
    /// (`2024-03-11 00:00:00-04:00` is 2024-03-11T00:00:00Z): daily and
    /// longer bars are dated, and an exporter that writes them as local
    /// midnights (yfinance's `history()` for US stocks, say) moves them by
    /// an hour at each daylight-saving change.
    dates: bool,
}

impl Columns {
    /// `role=Name` pairs, comma separated; roles are time, open, high, low,
    /// close and volume, and `partial` for the column that marks partial
    /// bars. A name with a comma is written in double quotes, as a CSV
    /// header writes it: `close="Close, last"`.
    pub fn parse(text: &str) -> Result<Columns, String> {
        let mut columns = Columns::default();
        // Cut at each comma outside double quotes. As in a CSV header, a
        // quote opens a quoted name only where the name starts (after the
        // `=`), and inside one a doubled quote is one quote.
        let (mut pairs, mut start, mut quoted) = (Vec::new(), 0, false);
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let starts_name = || text[start..i].trim_end().ends_with('=');
            match c {
                '"' if quoted && chars.peek().is_some_and(|&(_, n)| n == '"') => {
                    chars.next();
                }
                '"' if quoted => quoted = false,
                '"' if starts_name() && !text[start..i].contains('"') => quoted = true,
                ',' if !quoted => {
                    pairs.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        pairs.push(&text[start..]);
        if quoted {
            return Err(format!(
                "{}: a quoted name does not end (write a name with a comma in double quotes: close=\"Close, last\")",
                shown::quoted(text)
            ));
        }
        for pair in pairs.into_iter().filter(|p| !p.trim().is_empty()) {
            let (role, name) = pair.split_once('=').ok_or_else(|| {
                format!(
                    "{}: expected ROLE=COLUMN, e.g. time=Date",
                    shown::quoted(pair)
                )
            })?;
            let role = role.trim().to_ascii_lowercase();
            let name = name_of(name);
            let name = name.as_str();
            if name.is_empty() {
                return Err(format!("{role}=: the column's name is empty"));
            }
            if role == PARTIAL_COLUMN {
                if columns.partial.replace(name.to_owned()).is_some() {
                    return Err(format!("{role} is named twice"));
                }
                continue;
            }
            let slot = COLUMNS.iter().position(|c| *c == role).ok_or_else(|| {
                format!(
                    "{}: not a column role (time, open, high, low, close, volume, partial)",
                    shown::quoted(&role)
                )
            })?;
            if columns.names[slot].replace(name.to_owned()).is_some() {
                return Err(format!("{role} is named twice"));
            }
        }
        Ok(columns)
    }

    /// The name a role's column is looked for by: the user's, or the
    /// role's own (`time`, `open`, …).
    pub(super) fn wanted(&self, role: usize) -> &str {
        self.names[role].as_deref().unwrap_or(COLUMNS[role])
    }

    /// These columns, with times at local midnight read as dates (for
    /// bars of a day or longer).
    pub fn with_dates(mut self, dates: bool) -> Columns {
        self.dates = dates;
        self
    }

    /// Whether times at local midnight are read as dates.
    pub(super) fn dates(&self) -> bool {
        self.dates
    }

    /// Whether the user named any column (the partial one too).
    pub(super) fn any_named(&self) -> bool {
        self.names.iter().any(Option::is_some) || self.partial.is_some()
    }

    /// Whether the user named the column of `role`.
    pub(super) fn is_named(&self, role: usize) -> bool {
        self.names[role].is_some()
    }

    /// These columns, the time's named `name`.
    #[cfg_attr(not(feature = "formats"), allow(dead_code))]
    pub(super) fn with_time(&self, name: &str) -> Columns {
        let mut columns = self.clone();
        columns.names[0] = Some(name.to_owned());
        columns
    }
}

/// Hands each comma-separated field of `raw` to `put`, as written (quotes
/// and all), a comma inside double quotes being part of its field (RFC
/// 4180; a doubled quote inside is one quote). `false` when a quote is
/// left open at the end of the line (the rest of its field would be on
/// the next: Keel reads a row a line).
#[inline]
pub(super) fn split_fields<'a>(raw: &'a str, mut put: impl FnMut(&'a str)) -> bool {
    let bytes = raw.as_bytes();
    let (mut start, mut i) = (0, 0);
    // Eight bytes at a time while they hold no quote: each word's commas
    // found at once. From the first word with a quote, byte by byte.
    while let Some(word) = bytes.get(i..i + 8)
        && let Ok(word) = <[u8; 8]>::try_from(word)
    {
        let word = u64::from_le_bytes(word);
        if zero_bytes(word ^ QUOTES) != 0 {
            break;
        }
        let mut commas = zero_bytes(word ^ COMMAS);
        while commas != 0 {
            let at = i + (commas.trailing_zeros() / 8) as usize;
            put(&raw[start..at]);
            start = at + 1;
            commas &= commas - 1;
        }
        i += 8;
    }
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            // A quote opens a quoted field only where a field starts; a
            // quote elsewhere (`12" pipe`) is a character of its field.
            b'"' if !quoted && i == start => quoted = true,
            b'"' if quoted => match bytes.get(i + 1) {
                // Doubled: one quote inside.
                Some(b'"') => i += 1,
                _ => quoted = false,
            },
            b',' if !quoted => {
                put(&raw[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    put(&raw[start..]);
    !quoted
}

const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);

/// The top bit of each byte of `x` that is zero, and no other bit: tested
/// without a carry from one byte into the next, so a byte next to a zero
/// is never taken for one.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The fields of `raw`, as [`split_fields`] cuts them.
pub(super) fn fields_of(raw: &str) -> Vec<&str> {
    let mut out = Vec::new();
    split_fields(raw, |f| out.push(f));
    out
}

/// What is said of a line whose quote is left open.
pub(super) const OPEN_QUOTE: &str = "a quoted field does not end on its line (Keel reads a row a line: no line breaks inside quotes)";

/// A field as written: surrounding spaces and quotes removed.
pub(super) fn field(raw: &str) -> &str {
    // Most fields are bare: nothing to trim or unquote.
    let bare = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'.');
    if bare(raw.as_bytes().first()) && bare(raw.as_bytes().last()) {
        return raw;
    }
    let raw = raw.trim();
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw)
        .trim()
}

/// A column's name as a header (or `--columns`) writes it: [`field`], and
/// a quoted name's doubled quotes one quote each (`"Close ""adj"""` is
/// `Close "adj"`), as pandas and every CSV writer escape them.
pub(super) fn name_of(raw: &str) -> String {
    let unquoted = field(raw);
    let quoted = raw.trim().starts_with('"') && unquoted.contains("\"\"");
    match quoted {
        true => unquoted.replace("\"\"", "\""),
        false => unquoted.to_owned(),
    }
}

/// Where each role's value sits in a row: from the header's names (the
/// user's, then the aliases), or `Headerless` when the first line is data.
pub(super) enum Header {
    Named([usize; 6]),
    /// No header: the first line is a row (Binance's kline files, or bare
    /// `time,open,high,low,close,volume`).
    Headerless,
    /// yfinance's header of three rows (since 0.2.51): `Price,Close,High,…`
    /// (the time column is the one named `Price`), then the tickers' row
    /// and the index's name (`Ticker,…`, `Date,,…`), passed over.
    Yfinance([usize; 6]),
}

/// Reads the first line: a header naming the columns, or a row of data.
pub(super) fn header(line: &str, columns: &Columns) -> Result<Header, String> {
    let mut names: Vec<String> = Vec::new();
    let closed = split_fields(line, |c| {
        names.push(name_of(c.trim_start_matches('\u{feff}')))
    });
    if !closed {
        return Err(OPEN_QUOTE.to_owned());
    }
    if joined_by_carriage_returns(line) {
        return Err(CARRIAGE_RETURNS.to_owned());
    }
    // Six numbers, and after them numbers or nothing (a trailing comma).
    if names.len() >= 6
        && names[..6].iter().all(|n| is_number(n))
        && names[6..].iter().all(|n| is_extra(n))
    {
        if columns.any_named() {
            return Err(
                "the file has no header, so no names for --columns to pick: its \
                        first six columns are time,open,high,low,close,volume in that order \
                        (leave --columns out, or give the file a header)"
                    .to_owned(),
            );
        }
        return Ok(Header::Headerless);
    }
    // yfinance's three rows: the first names the prices, and its first
    // column, over the dates, is `Price`.
    if !columns.is_named(0)
        && names
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case("price"))
        && find(&names, columns) == Err(0)
    {
        let mut renamed = names.clone();
        renamed[0] = "time".into();
        if let Ok(index) = find(&renamed, columns) {
            // Several tickers' prices side by side name each price twice.
            if let Some(why) = ambiguity(&renamed, &index, columns) {
                return Err(format!(
                    "{why}: yfinance's header of several tickers; save one ticker's \
                     (pandas: df.xs(TICKER, axis=1, level='Ticker').to_csv(out)) \
                     (header is '{}')",
                    shown::text(line.trim())
                ));
            }
            return Ok(Header::Yfinance(index));
        }
    }
    // pandas' `to_csv` of a frame whose time index has no name: the first
    // column has none.
    if !columns.is_named(0)
        && names.first().is_some_and(|n| n.is_empty())
        && find(&names, columns) == Err(0)
    {
        let mut renamed = names.clone();
        renamed[0] = "time".into();
        if let Ok(index) = find(&renamed, columns)
            && ambiguity(&renamed, &index, columns).is_none()
        {
            return Ok(Header::Named(index));
        }
    }
    let index = find(&names, columns).map_err(|role| {
        let header = format!("header is '{}'", shown::text(line.trim()));
        // One field that holds them all: another separator than commas.
        let separator = [';', '\t', '|'].into_iter().find(|&c| line.contains(c));
        match separator.filter(|_| names.len() == 1) {
            Some(c) => format!(
                "the fields are separated by {}, not commas: Keel reads comma-separated CSV \
                 ({header}); rewrite it with commas (pandas: pd.read_csv(f, sep={}).to_csv(out))",
                shown::quoted(&c.to_string()),
                shown::quoted(&c.to_string())
            ),
            None => match row_but(&names) {
                // A row of data, one field of which is not a number.
                Some(why) => format!("{why} ({header})"),
                None => missing(columns, role, &header),
            },
        }
    })?;
    if let Some(why) = ambiguity(&names, &index, columns) {
        return Err(format!("{why} (header is '{}')", shown::text(line.trim())));
    }
    Ok(Header::Named(index))
}

/// Why a file whose lines end with a carriage return alone is refused:
/// read by newlines, the whole file is one line.
pub(super) const CARRIAGE_RETURNS: &str = "its lines end with a carriage return alone \
     (as classic Mac OS wrote them), not a newline: rewrite them with newlines \
     (tr '\\r' '\\n' < FILE > OUT)";

/// Whether `line` holds a carriage return before its end: lines that end
/// with one alone, read as one.
pub(super) fn joined_by_carriage_returns(line: &str) -> bool {
    line.trim_end_matches('\r').contains('\r')
}

/// Whether a field past the six of a row without a header is what such a
/// row may hold there: a number, or nothing (a row that ends with a comma).
pub(super) fn is_extra(field: &str) -> bool {
    field.is_empty() || is_number(field)
}

/// Whether a field of a first line reads as a number (a row's, not a name).
fn is_number(field: &str) -> bool {
    field.parse::<f64>().is_ok()
}

/// Why a first line that names no columns is no header either: it
/// starts with a number, as a row does and a header never does, but a
/// field is not one (a mark `true` after the volume, say, or an empty
/// price), so it is a row Keel cannot read. `None` when the line does not
/// start as a row. Empty fields after the six are nothing (a row that
/// ends with a comma).
fn row_but(names: &[String]) -> Option<String> {
    if names.len() < 6 || !is_number(&names[0]) {
        return None;
    }
    let (at, odd) = (names.iter().enumerate())
        .find(|(i, n)| if *i < 6 { !is_number(n) } else { !is_extra(n) })?;
    Some(format!(
        "the first line is a row of data, not a header, but its field {} '{}' is not a \
         number: a file without a header holds numbers alone, time,open,high,low,close,volume \
         in that order; give it a header naming the columns otherwise",
        at + 1,
        shown::text(odd)
    ))
}

/// Why the columns found for the roles (`index`, into `names`, as the file
/// spells them) cannot be trusted: one column taken for two roles, or a
/// column's name shared by another (which of them holds the prices is a
/// guess). Names are the same in any case (`volume`, `Volume`), unless the
/// user named the column and spelled it as one of them alone does.
/// `None` when clear.
pub(super) fn ambiguity(names: &[String], index: &[usize; 6], columns: &Columns) -> Option<String> {
    for (role, &i) in index.iter().enumerate() {
        // Two columns going by the role's names (`date` and `datetime`):
        // which one the file means is a guess, unless the user says.
        if !columns.is_named(role) {
            let mut matching: Vec<&str> = Vec::new();
            let by_alias = names.iter().filter(|n| is_alias(role, n));
            for n in by_alias {
                if !matching.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                    matching.push(n);
                }
            }
            if let [first, second, ..] = matching.as_slice() {
                return Some(format!(
                    "two columns could be the {}: '{}' and '{}'; name one with --columns {}=NAME",
                    COLUMNS[role],
                    shown::text(first),
                    shown::text(second),
                    COLUMNS[role]
                ));
            }
        }
        if let Some(other) = index[..role].iter().position(|&j| j == i) {
            return Some(format!(
                "column '{}' is taken for both {} and {}",
                shown::text(&names[i]),
                COLUMNS[other],
                COLUMNS[role]
            ));
        }
        let spelled = columns.names[role].as_deref() == Some(names[i].as_str());
        let same = |n: &&String| match spelled {
            true => **n == names[i],
            false => n.eq_ignore_ascii_case(&names[i]),
        };
        let mut spellings: Vec<&str> = Vec::new();
        let mut count = 0;
        for n in names.iter().filter(same) {
            count += 1;
            if !spellings.contains(&n.as_str()) {
                spellings.push(n);
            }
        }
        if let [one] = spellings.as_slice()
            && count > 1
        {
            return Some(format!(
                "two columns are named '{}' ({} is one of them)",
                shown::text(one),
                COLUMNS[role]
            ));
        }
        if spellings.len() > 1 {
            let quoted: Vec<String> = (spellings.iter())
                .map(|n| format!("'{}'", shown::text(n)))
                .collect();
            // Named, but spelled as none of them is.
            let unspelled = match columns.is_named(role) {
                true => format!(
                    "no column is spelled '{}'; ",
                    shown::text(columns.wanted(role))
                ),
                false => String::new(),
            };
            return Some(format!(
                "{unspelled}columns {} differ in case alone, and the {} is one of them: name it \
                 as the file spells it, --columns {}=NAME",
                quoted.join(", "),
                COLUMNS[role],
                COLUMNS[role]
            ));
        }
    }
    None
}

/// The refusal of a file with no column for `role` (`listed`: what it
/// has): a column Keel looked for by its usual names may be there under
/// another, which `--columns` names.
pub(super) fn missing(columns: &Columns, role: usize, listed: &str) -> String {
    let wanted = shown::text(columns.wanted(role));
    match columns.is_named(role) {
        true => format!("missing column '{wanted}' ({listed})"),
        false => format!(
            "missing column '{wanted}' ({listed}); name the file's own with --columns {}=COLUMN",
            COLUMNS[role]
        ),
    }
}

/// Whether `name` is one the column of `role` goes by, in any case.
fn is_alias(role: usize, name: &str) -> bool {
    ALIASES[role].iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Where each role's column is among `names` (as the file spells them):
/// the one the user named (spelled so, else in any case), else the first
/// alias found in any case. A role not found is the error.
pub(super) fn find(names: &[String], columns: &Columns) -> Result<[usize; 6], usize> {
    let mut index = [0usize; 6];
    for (role, slot) in index.iter_mut().enumerate() {
        let found = match &columns.names[role] {
            Some(name) => (names.iter().position(|n| n == name))
                .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name))),
            None => ALIASES[role]
                .iter()
                .find_map(|alias| names.iter().position(|n| n.eq_ignore_ascii_case(alias))),
        };
        *slot = found.ok_or(role)?;
    }
    Ok(index)
}

/// Where the column that marks partial bars sits among `names` (see
/// [`PARTIAL_COLUMN`]): the one the user named (`--columns partial=NAME`,
/// as spelled, else in any case), which must be there and not a role's
/// (`index`); else the one named `partial` in any case that is not a
/// role's; none when the file has none. Two such columns are refused, as
/// two columns for a role are: which one marks the bars is a guess, even
/// when they agree on the rows read so far.
pub(super) fn partial_column(
    names: &[String],
    index: &[usize; 6],
    columns: &Columns,
) -> Result<Option<usize>, String> {
    if let Some(name) = &columns.partial {
        // As spelled; else in any case, if one column alone is so named.
        let mut alike = (names.iter().enumerate()).filter(|(_, n)| n.eq_ignore_ascii_case(name));
        let at = match names.iter().position(|n| n == name) {
            Some(at) => at,
            None => match (alike.next(), alike.next()) {
                (Some((at, _)), None) => at,
                (Some((_, first)), Some((_, second))) => {
                    return Err(format!(
                        "'{}' could be either of two columns: '{}' and '{}'; name it as the \
                         file spells it",
                        shown::text(name),
                        shown::text(first),
                        shown::text(second)
                    ));
                }
                (None, _) => {
                    return Err(format!(
                        "no column '{}' to mark partial bars (--columns partial=NAME)",
                        shown::text(name)
                    ));
                }
            },
        };
        return match index.iter().position(|&i| i == at) {
            Some(role) => Err(format!(
                "'{}' is the {}'s column: it cannot mark partial bars too",
                shown::text(&names[at]),
                COLUMNS[role]
            )),
            None => Ok(Some(at)),
        };
    }
    let mut found = (names.iter().enumerate())
        .filter(|(i, n)| n.eq_ignore_ascii_case(PARTIAL_COLUMN) && !index.contains(i));
    match (found.next(), found.next()) {
        (Some((_, first)), Some((_, second))) => Err(format!(
            "two columns could mark partial bars: '{}' and '{}'; name one with --columns \
             partial=NAME",
            shown::text(first),
            shown::text(second)
        )),
        (first, _) => Ok(first.map(|(i, _)| i)),
    }
}

/// A row's mark of a partial bar: `true` or `false` in any case (pandas
/// writes `True`), or `1` or `0`.
pub(super) fn partial_mark(text: &str) -> Result<bool, String> {
    match text.trim() {
        t if t.eq_ignore_ascii_case("true") || t == "1" => Ok(true),
        t if t.eq_ignore_ascii_case("false") || t == "0" => Ok(false),
        t => Err(format!(
            "the mark of a partial bar '{}' is neither true nor false",
            shown::text(t)
        )),
    }
}

/// Epoch time in ms from a count of seconds, ms, µs or ns, told apart by
/// its digits (10, 13, 16 or 19; any other count is taken as ms).
pub(super) fn epoch_ms(digits: &str) -> Result<i64, String> {
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("time '{}' is out of range", shown::text(digits)))?;
    Ok(scaled_ms(n, digits.len()))
}

/// Epoch time in ms from an integer count of seconds, ms, µs or ns, told
/// apart by its digits as in text (a column of integers in a Parquet or
/// Feather file).
#[cfg_attr(not(feature = "formats"), allow(dead_code))]
pub(super) fn epoch_int_ms(n: i64) -> i64 {
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    scaled_ms(n, digits)
}

fn scaled_ms(n: i64, digits: usize) -> i64 {
    match digits {
        10 => n.saturating_mul(1000),
        16 => n / 1_000,
        19 => n / 1_000_000,
        _ => n,
    }
}

/// A time given as a date (`2024-01-02`), or a date and time with a space
/// or `T` and no zone (taken as UTC), or with an offset.
/// The date a time at local midnight with a non-zero UTC offset names, as
/// epoch ms at 00:00 UTC; `None` for any other time.
pub(super) fn local_midnight_date_ms(text: &str) -> Option<i64> {
    use chrono::DateTime;
    let t = DateTime::parse_from_rfc3339(text).ok().or_else(|| {
        ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"]
            .into_iter()
            .find_map(|format| DateTime::parse_from_str(text, format).ok())
    })?;
    let midnight = t.time() == chrono::NaiveTime::MIN;
    (midnight && t.offset().local_minus_utc() != 0)
        .then(|| t.date_naive().and_time(chrono::NaiveTime::MIN))
        .map(|d| d.and_utc().timestamp_millis())
}

/// A date, or a date and time (UTC unless it has an offset): its time in
/// ms, or that it is a leap second (`23:59:60`, which chrono reads as a
/// second's leap).
pub(super) enum Calendar {
    Ms(i64),
    Leap,
}

pub(super) fn calendar(text: &str) -> Option<Calendar> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};
    let of = |leap: bool, ms: i64| {
        Some(if leap {
            Calendar::Leap
        } else {
            Calendar::Ms(ms)
        })
    };
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|t| Calendar::Ms(t.and_utc().timestamp_millis()));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return of(
                t.nanosecond() >= 1_000_000_000,
                t.and_utc().timestamp_millis(),
            );
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return of(t.nanosecond() >= 1_000_000_000, t.timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests;
