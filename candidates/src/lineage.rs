//! A candidate's ancestors, and the hash prefixes that name a parent.

/// The most ancestors [`ancestors`] walks back.
pub const MAX_ANCESTORS: usize = 100;

/// The line of ancestors from `parent` (a candidate's parent hash) back,
/// parent first: `parent_of` gives a hash's own parent (the host looks it
/// up), `None` where it is not known. The walk stops at a cycle and after
/// [`MAX_ANCESTORS`].
pub fn ancestors<E>(
    parent: Option<String>,
    mut parent_of: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<Vec<String>, E> {
    let mut line: Vec<String> = Vec::new();
    let mut next = parent;
    while let Some(hash) = next.take() {
        if line.len() == MAX_ANCESTORS || line.contains(&hash) {
            break;
        }
        next = parent_of(&hash)?;
        line.push(hash);
    }
    Ok(line)
}

/// `text` as a SHA-256 hex prefix (lower case) of 6 to 64 digits, if it is
/// one.
pub fn hash_prefix(text: &str) -> Option<String> {
    let prefix = text.to_ascii_lowercase();
    let hex = prefix.chars().all(|c| c.is_ascii_hexdigit());
    ((6..=64).contains(&prefix.len()) && hex).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn walk(parents: &[(&str, &str)], start: Option<&str>) -> Vec<String> {
        let map: HashMap<&str, &str> = parents.iter().copied().collect();
        ancestors(start.map(str::to_owned), |h| {
            Ok::<_, ()>(map.get(h).map(|p| (*p).to_owned()))
        })
        .expect("walk")
    }

    #[test]
    fn ancestors_are_walked_parent_first_until_unknown() {
        let parents = [("c", "b"), ("b", "a")];
        assert_eq!(walk(&parents, Some("c")), ["c", "b", "a"]);
        assert_eq!(walk(&parents, Some("z")), ["z"]);
        assert!(walk(&parents, None).is_empty());
    }

    #[test]
    fn a_cycle_or_a_long_line_ends_the_walk() {
        assert_eq!(walk(&[("a", "b"), ("b", "a")], Some("a")), ["a", "b"]);
        let long: Vec<(String, String)> = (0..500)
            .map(|i| (i.to_string(), (i + 1).to_string()))
            .collect();
        let pairs: Vec<(&str, &str)> = long.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(walk(&pairs, Some("0")).len(), MAX_ANCESTORS);
        let failed = ancestors(Some("a".into()), |_| Err("db gone"));
        assert_eq!(failed, Err("db gone"));
    }

    #[test]
    fn hash_prefixes_are_six_to_sixty_four_hex_digits() {
        let cases = [
            ("6580C0", Some("6580c0")),
            ("6580c", None),
            ("6580cg", None),
            (&"a".repeat(64), Some(&*"a".repeat(64))),
            (&"a".repeat(65), None),
            ("", None),
        ];
        for (text, prefix) in cases {
            assert_eq!(hash_prefix(text).as_deref(), prefix, "{text}");
        }
    }
}
