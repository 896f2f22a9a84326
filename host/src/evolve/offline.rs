//! The offline author: no model, only code. It draws parameter sets near a
//! parent strategy's defaults (seeded, within each declared range) and
//! writes the chosen one back into the parent's source as its new defaults,
//! so the candidate is a component of its own with the same code.

use keel_model::{ParamKind, ParamSpec, ParamValue};

/// A small seeded generator (SplitMix64): the same night, the same draws.
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: u64) -> Draws {
        Draws(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` parameter sets near the specs' defaults: each number moved by a
/// factor up to ×/÷ 2 (at least one step for integers), kept within its
/// range; an integer of at most eleven values (a choice: a building
/// block, a mode) drawn among all of them; flags flipped one time in five. The defaults themselves come
/// first, so the parent is always among the trials.
pub fn mutations(
    specs: &[ParamSpec],
    draws: &mut Draws,
    n: usize,
) -> Vec<Vec<(String, ParamValue)>> {
    let defaults: Vec<(String, ParamValue)> =
        specs.iter().map(|s| (s.name.clone(), s.default)).collect();
    let mut out = vec![defaults];
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        let set: Vec<(String, ParamValue)> = specs
            .iter()
            .map(|s| (s.name.clone(), mutate(s, draws)))
            .collect();
        if !out.contains(&set) {
            out.push(set);
        }
    }
    out
}

fn mutate(spec: &ParamSpec, draws: &mut Draws) -> ParamValue {
    let factor = 2f64.powf(draws.unit() * 2.0 - 1.0);
    let clamp = |x: f64| {
        let x = spec.min.map_or(x, |m| x.max(m));
        spec.max.map_or(x, |m| x.min(m))
    };
    match (spec.kind, spec.default) {
        // A choice among a few (a building block, a mode): any of them.
        (ParamKind::Int, ParamValue::Int(_))
            if spec
                .min
                .zip(spec.max)
                .is_some_and(|(lo, hi)| hi - lo <= 10.0) =>
        {
            let (lo, hi) = spec.min.zip(spec.max).unwrap_or((0.0, 0.0));
            ParamValue::Int(
                lo as i64 + (draws.unit() * (hi - lo + 1.0)).floor().min(hi - lo) as i64,
            )
        }
        (ParamKind::Int, ParamValue::Int(d)) => {
            let mut v = (d as f64 * factor).round() as i64;
            if v == d {
                v += if draws.unit() < 0.5 { -1 } else { 1 };
            }
            ParamValue::Int(clamp(v as f64) as i64)
        }
        (ParamKind::Float, ParamValue::Float(d)) => {
            // Four significant digits: a source literal, not float noise.
            let v = clamp(d * factor);
            let digits = 3 - v.abs().log10().floor().max(-12.0) as i32;
            let scale = 10f64.powi(digits.clamp(0, 15));
            ParamValue::Float(clamp((v * scale).round() / scale))
        }
        (ParamKind::Flag, ParamValue::Flag(b)) => ParamValue::Flag(b ^ (draws.unit() < 0.2)),
        (_, d) => d,
    }
}

/// A parameter set as `name=value` assignments.
pub fn assignments(set: &[(String, ParamValue)]) -> Vec<String> {
    set.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The `ParamSpec` constructor of a value's kind.
fn kind_of(v: ParamValue) -> &'static str {
    match v {
        ParamValue::Int(_) => "int",
        ParamValue::Float(_) => "float",
        ParamValue::Flag(_) => "flag",
    }
}

/// A value as a Rust literal of its kind.
fn literal(v: ParamValue) -> String {
    match v {
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        ParamValue::Float(f) => format!("{f}"),
        ParamValue::Flag(b) => b.to_string(),
    }
}

/// `source` with the defaults of its `ParamSpec::int|float|flag("NAME", …)`
/// declarations set to `values`, and its describe() name `from` renamed
/// `to`. Every value must find its declaration.
pub fn rewrite(
    source: &str,
    values: &[(String, ParamValue)],
    from: &str,
    to: &str,
) -> Result<String, String> {
    let mut out = source.to_owned();
    for (name, value) in values {
        let kind = kind_of(*value);
        let (start, end) = default_span(&out, kind, name)
            .ok_or_else(|| format!("no ParamSpec::{kind}(\"{name}\", …) in the source"))?;
        out.replace_range(start..end, &literal(*value));
    }
    let declared = format!("name: \"{from}\".into()");
    if !out.contains(&declared) {
        return Err(format!("no `{declared}` in the source"));
    }
    Ok(out.replacen(&declared, &format!("name: \"{to}\".into()"), 1))
}

/// Where the default literal of `ParamSpec::KIND("NAME", DEFAULT, …)` is.
fn default_span(source: &str, kind: &str, name: &str) -> Option<(usize, usize)> {
    let head = format!("ParamSpec::{kind}(");
    let mut from = 0;
    while let Some(at) = source[from..].find(&head) {
        let mut i = from + at + head.len();
        from = i;
        let skip = |i: &mut usize| {
            while source[*i..].starts_with(char::is_whitespace) {
                *i += 1;
            }
        };
        skip(&mut i);
        let quoted = format!("\"{name}\"");
        if !source[i..].starts_with(&quoted) {
            continue;
        }
        i += quoted.len();
        skip(&mut i);
        if !source[i..].starts_with(',') {
            continue;
        }
        i += 1;
        skip(&mut i);
        let len = source[i..].find([',', ')'])?;
        let end = i + source[i..i + len].trim_end().len();
        return Some((i, end));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaffold::TEMPLATES;

    #[test]
    fn mutations_stay_in_range_start_from_the_defaults_and_repeat_per_seed() {
        let specs = [
            ParamSpec::int("fast", 10, 2, 200, ""),
            ParamSpec::int("slow", 30, 3, 1000, ""),
            ParamSpec::float("size", 0.2, 0.001, 1.0, ""),
            ParamSpec::flag("short", false, ""),
        ];
        let sets = mutations(&specs, &mut Draws::new(9), 50);
        assert_eq!(sets.len(), 50);
        assert_eq!(sets[0][0].1, ParamValue::Int(10));
        assert_eq!(sets, mutations(&specs, &mut Draws::new(9), 50));
        assert_ne!(sets, mutations(&specs, &mut Draws::new(10), 50));
        for set in &sets[1..] {
            for ((_, v), s) in set.iter().zip(&specs) {
                let x = match *v {
                    ParamValue::Int(i) => i as f64,
                    ParamValue::Float(f) => f,
                    ParamValue::Flag(_) => continue,
                };
                assert!(
                    s.min.is_none_or(|m| x >= m) && s.max.is_none_or(|m| x <= m),
                    "{v:?}"
                );
            }
        }
    }

    #[test]
    fn every_templates_defaults_are_rewritten_and_parse_back() {
        for t in &TEMPLATES {
            let src = crate::scaffold::source(t, t.name).expect("template");
            // Every declared parameter, found and replaced.
            let names: Vec<&str> = src
                .match_indices("ParamSpec::")
                .filter_map(|(i, _)| src[i..].split('"').nth(1))
                .collect();
            assert!(names.len() >= 3, "{}: {names:?}", t.name);
            let mut values = Vec::new();
            for name in &names {
                for (kind, v) in [
                    ("int", ParamValue::Int(7)),
                    ("float", ParamValue::Float(0.125)),
                    ("flag", ParamValue::Flag(true)),
                ] {
                    if default_span(&src, kind, name).is_some() {
                        values.push(((*name).to_owned(), v));
                    }
                }
            }
            assert_eq!(values.len(), names.len(), "{}", t.name);
            let out = rewrite(&src, &values, t.name, "child-1").expect(t.name);
            assert!(out.contains("name: \"child-1\".into()"));
            for (name, v) in &values {
                let (a, b) = default_span(&out, kind_of(*v), name).expect("still there");
                assert_eq!(&out[a..b], literal(*v), "{}: {name}", t.name);
            }
        }
        let e =
            rewrite("x", &[("nope".into(), ParamValue::Int(1))], "a", "b").expect_err("missing");
        assert_eq!(e, "no ParamSpec::int(\"nope\", …) in the source");
    }

    #[test]
    fn a_choice_among_few_is_drawn_among_all_of_them() {
        let specs = [ParamSpec::int("entry", 0, 0, 2, "")];
        let drawn: std::collections::BTreeSet<i64> = mutations(&specs, &mut Draws::new(3), 30)
            .iter()
            .map(|set| match set[0].1 {
                ParamValue::Int(i) => i,
                _ => -1,
            })
            .collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn float_literals_keep_their_kind() {
        assert_eq!(literal(ParamValue::Float(2.0)), "2.0");
        assert_eq!(literal(ParamValue::Float(0.0125)), "0.0125");
        assert_eq!(literal(ParamValue::Int(-3)), "-3");
    }
}
