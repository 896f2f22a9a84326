use super::*;

/// Fields as the byte-by-byte reading cuts them (the reference).
fn fields_one_byte_at_a_time(raw: &str) -> (Vec<&str>, bool) {
    let (bytes, mut out) = (raw.as_bytes(), Vec::new());
    let (mut start, mut i, mut quoted) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'"' if !quoted && i == start => quoted = true,
            b'"' if quoted && bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' if quoted => quoted = false,
            b',' if !quoted => {
                out.push(&raw[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&raw[start..]);
    (out, !quoted)
}

#[test]
fn fields_cut_a_word_at_a_time_are_those_cut_byte_by_byte() {
    // Bytes next to a comma's or a quote's value (a carry would take
    // `-`, 0x2d, or `#`, 0x23, for one), quotes at and off a field's
    // start, every position in and out of a word, multi-byte
    // characters.
    let alphabet: Vec<char> = ",,,\"-+#!.0123456789 e\u{ac}é€\u{feff}\0\u{7f}"
        .chars()
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..100_000 {
        let len = (next() % 40) as usize;
        let mut line: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if next() % 2 == 0 {
            line.retain(|c| c != '"');
        }
        let mut fields = Vec::new();
        let closed = split_fields(&line, |f| fields.push(f));
        assert_eq!(
            (fields, closed),
            fields_one_byte_at_a_time(&line),
            "{line:?}"
        );
    }
    let commas = ",".repeat(19);
    assert_eq!(fields_of(&commas), vec![""; 20]);
    let late = "1,2,3,4,5,6,7,\"8,9\",10";
    assert_eq!(
        fields_of(late),
        ["1", "2", "3", "4", "5", "6", "7", "\"8,9\"", "10"]
    );
}

fn calendar_ms(text: &str) -> Option<i64> {
    match calendar(text)? {
        Calendar::Ms(ms) => Some(ms),
        Calendar::Leap => None,
    }
}

#[test]
fn columns_are_named_by_role_or_refused_in_one_line() {
    let c = Columns::parse("time=Date, close = Adj Close").expect("valid");
    assert_eq!(c.names[0].as_deref(), Some("Date"));
    assert_eq!(c.names[4].as_deref(), Some("Adj Close"));
    // A name with a comma (or an equals sign) in double quotes, as a CSV
    // header writes it: a header naming it so is read.
    let quoted = Columns::parse(r#"close="Close, last",time=Date,volume="Vol = base""#);
    let quoted = quoted.expect("valid");
    assert_eq!(quoted.names[4].as_deref(), Some("Close, last"));
    assert_eq!(quoted.names[5].as_deref(), Some("Vol = base"));
    let line = r#"Date,open,high,low,"Close, last","Vol = base""#;
    assert!(matches!(
        header(line, &quoted),
        Ok(Header::Named([0, 1, 2, 3, 4, 5]))
    ));
    // A quote in a name, as pandas writes `Close "adj"` in a header:
    // doubled inside quotes. The name is the same whether the user writes
    // it bare or as the header does, and the same as Parquet's.
    let line = r#"Date,open,high,low,"Close ""adj""",volume"#;
    for text in [r#"close=Close "adj""#, r#"close="Close ""adj""""#] {
        let named = Columns::parse(text).expect(text);
        assert_eq!(named.names[4].as_deref(), Some(r#"Close "adj""#), "{text}");
        assert!(
            matches!(header(line, &named), Ok(Header::Named([0, 1, 2, 3, 4, 5]))),
            "{text}"
        );
    }
    // A quote inside a bare name is a character of it, as in a header.
    let bare = Columns::parse(r#"close=Close" last,time=Date"#).expect("bare");
    assert_eq!(bare.names[4].as_deref(), Some(r#"Close" last"#));
    assert_eq!(bare.names[0].as_deref(), Some("Date"));
    for (text, says) in [
        (r#"close="Close, last"#, "a quoted name does not end"),
        (r#"close="Close "" last"#, "a quoted name does not end"),
        (r#"close="""#, "empty"),
        ("time", "expected ROLE=COLUMN"),
        ("when=Date", "not a column role"),
        ("time=", "empty"),
        ("time=a,time=b", "named twice"),
    ] {
        let e = Columns::parse(text).expect_err(text);
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn a_column_that_could_be_either_of_two_is_refused() {
    let plain = Columns::default();
    for (line, columns, says) in [
        (
            "time,open,open,high,low,close,volume",
            &plain,
            "two columns are named 'open' (open is one of them)",
        ),
        (
            "time,close,open,high,low,close,volume",
            &plain,
            "two columns are named 'close' (close is one of them)",
        ),
        (
            "time,open,high,low,close,volume",
            &Columns::parse("volume=open").expect("valid"),
            "column 'open' is taken for both open and volume",
        ),
    ] {
        match header(line, columns) {
            Err(e) => assert_eq!(e, format!("{says} (header is '{line}')")),
            Ok(_) => panic!("{line} was taken"),
        }
    }
    // Two names a time goes by, unless the user says which.
    let two_times = "Date,Datetime,open,high,low,close,volume";
    match header(two_times, &plain) {
        Err(e) => assert_eq!(
            e,
            format!(
                "two columns could be the time: 'Date' and 'Datetime'; name one with \
                 --columns time=NAME (header is '{two_times}')"
            )
        ),
        Ok(_) => panic!("{two_times} was taken"),
    }
    let said = Columns::parse("time=Datetime").expect("valid");
    assert!(matches!(
        header(two_times, &said),
        Ok(Header::Named([1, 2, 3, 4, 5, 6]))
    ));
    // Names differing in case alone are one name, unless the user
    // names the column as one of them alone spells it.
    let cased = "time,open,high,low,close,volume,Volume";
    match header(cased, &plain) {
        Err(e) => assert_eq!(
            e,
            format!(
                "columns 'volume', 'Volume' differ in case alone, and the volume is one of \
                 them: name it as the file spells it, --columns volume=NAME (header is '{cased}')"
            )
        ),
        Ok(_) => panic!("{cased} was taken"),
    }
    for (named, column) in [("volume=Volume", 6), ("volume=volume", 5)] {
        let said = Columns::parse(named).expect("valid");
        match header(cased, &said) {
            Ok(Header::Named(index)) => assert_eq!(index, [0, 1, 2, 3, 4, column], "{named}"),
            Ok(Header::Headerless | Header::Yfinance(_)) => panic!("{named}: not named"),
            Err(e) => panic!("{named}: {e}"),
        }
    }
    let semicolons = "ts;o;h;l;c;v";
    match header(semicolons, &plain) {
        Err(e) => assert!(
            e.starts_with("the fields are separated by \";\", not commas"),
            "{e}"
        ),
        Ok(_) => panic!("{semicolons} was taken"),
    }
    let unsure = Columns::parse("volume=VOLUME").expect("valid");
    match header(cased, &unsure) {
        Err(e) => assert_eq!(
            e,
            format!(
                "no column is spelled 'VOLUME'; columns 'volume', 'Volume' differ in \
                 case alone, and the volume is one of them: name it as the file spells it, \
                 --columns volume=NAME (header is '{cased}')"
            )
        ),
        Ok(_) => panic!("VOLUME was taken in {cased}"),
    }
    // A name in another case than the aliases' is still found.
    assert!(matches!(
        header("TIME,OPEN,HIGH,LOW,CLOSE,VOLUME", &plain),
        Ok(Header::Named([0, 1, 2, 3, 4, 5]))
    ));
    // An adjusted close beside the close is not the close: no doubt.
    let yfinance = "Date,Open,High,Low,Close,Adj Close,Volume";
    assert!(matches!(header(yfinance, &plain), Ok(Header::Named(_))));
}

#[test]
fn times_come_in_every_common_shape() {
    assert_eq!(epoch_ms("1704067200"), Ok(1_704_067_200_000));
    assert_eq!(epoch_ms("1704067200000"), Ok(1_704_067_200_000));
    assert_eq!(epoch_ms("1704067200000000"), Ok(1_704_067_200_000));
    assert_eq!(epoch_ms("1704067200000000000"), Ok(1_704_067_200_000));
    assert_eq!(epoch_ms("60000"), Ok(60_000));
    for n in [1_704_067_200, 1_704_067_200_000, 1_704_067_200_000_000] {
        assert_eq!(epoch_int_ms(n), 1_704_067_200_000, "{n}");
    }
    assert_eq!(epoch_int_ms(1_704_067_200_000_000_000), 1_704_067_200_000);
    assert_eq!((epoch_int_ms(0), epoch_int_ms(60_000)), (0, 60_000));
    assert_eq!(epoch_int_ms(-1_000_000_000), -1_000_000_000_000);
    assert_eq!(calendar_ms("2024-01-01"), Some(1_704_067_200_000));
    assert_eq!(calendar_ms("2024-01-01 00:01:00"), Some(1_704_067_260_000));
    assert_eq!(calendar_ms("2024-01-01T00:01:00"), Some(1_704_067_260_000));
    assert_eq!(
        calendar_ms("2024-01-01 09:30:00-05:00"),
        Some(1_704_067_200_000 + (14 * 60 + 30) * 60_000)
    );
    assert_eq!(calendar_ms("01/02/2024"), None);
}
