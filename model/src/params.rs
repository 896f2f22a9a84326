//! Strategy parameters: declared specs, resolved values, and the checks both
//! the host and the native harness apply before a strategy sees a value.

use std::fmt;

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Int,
    Float,
    Flag,
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ParamKind::Int => "int",
            ParamKind::Float => "float",
            ParamKind::Flag => "flag",
        })
    }
}

/// A parameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Flag(bool),
}

impl ParamValue {
    pub fn kind(self) -> ParamKind {
        match self {
            ParamValue::Int(_) => ParamKind::Int,
            ParamValue::Float(_) => ParamKind::Float,
            ParamValue::Flag(_) => ParamKind::Flag,
        }
    }

    fn as_number(self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(v as f64),
            ParamValue::Float(v) => Some(v),
            ParamValue::Flag(_) => None,
        }
    }
}

impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}

impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}

impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Flag(v)
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ParamValue::Int(v) => v.to_string(),
            ParamValue::Float(v) => v.to_string(),
            ParamValue::Flag(v) => v.to_string(),
        };
        f.pad(&text)
    }
}

/// A tunable parameter a strategy declares.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub description: String,
    pub kind: ParamKind,
    pub default: ParamValue,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl ParamSpec {
    pub fn int(name: &str, default: i64, min: i64, max: i64, description: &str) -> ParamSpec {
        ParamSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            kind: ParamKind::Int,
            default: ParamValue::Int(default),
            min: Some(min as f64),
            max: Some(max as f64),
        }
    }

    pub fn float(name: &str, default: f64, min: f64, max: f64, description: &str) -> ParamSpec {
        ParamSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            kind: ParamKind::Float,
            default: ParamValue::Float(default),
            min: Some(min),
            max: Some(max),
        }
    }

    pub fn flag(name: &str, default: bool, description: &str) -> ParamSpec {
        ParamSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            kind: ParamKind::Flag,
            default: ParamValue::Flag(default),
            min: None,
            max: None,
        }
    }

    /// Checks `value` against this spec's kind and bounds.
    pub fn check(&self, value: ParamValue) -> Result<(), ParamError> {
        if value.kind() != self.kind {
            return Err(ParamError::WrongKind {
                name: self.name.clone(),
                expected: self.kind,
                found: value.kind(),
            });
        }
        if let Some(v) = value.as_number() {
            let below = self.min.is_some_and(|min| v < min);
            let above = self.max.is_some_and(|max| v > max);
            if !v.is_finite() || below || above {
                return Err(ParamError::OutOfRange {
                    name: self.name.clone(),
                    value: v,
                    min: self.min,
                    max: self.max,
                });
            }
        }
        Ok(())
    }

    /// Parses a command-line value ("12", "0.5", "true") as this spec's kind.
    pub fn parse(&self, text: &str) -> Result<ParamValue, ParamError> {
        let bad = || ParamError::Unparsable {
            name: self.name.clone(),
            kind: self.kind,
            text: text.to_owned(),
        };
        let value = match self.kind {
            ParamKind::Int => ParamValue::Int(text.trim().parse().map_err(|_| bad())?),
            ParamKind::Float => ParamValue::Float(text.trim().parse().map_err(|_| bad())?),
            ParamKind::Flag => ParamValue::Flag(text.trim().parse().map_err(|_| bad())?),
        };
        self.check(value)?;
        Ok(value)
    }
}

/// Why a parameter (or a whole spec list) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter '{name}' is not declared by the strategy")]
    Unknown { name: String },
    #[error("parameter '{name}' expects a {expected} value, got a {found}")]
    WrongKind {
        name: String,
        expected: ParamKind,
        found: ParamKind,
    },
    #[error("parameter '{name}' = {value} is outside [{}, {}]", fmt_bound(*min), fmt_bound(*max))]
    OutOfRange {
        name: String,
        value: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
    #[error("parameter '{name}': cannot read '{text}' as {kind}")]
    Unparsable {
        name: String,
        kind: ParamKind,
        text: String,
    },
    #[error("parameter '{name}' is declared twice")]
    Duplicate { name: String },
    #[error("parameter name '{name}' is not of [a-z0-9_-] and 1 to 64 bytes")]
    BadName { name: String },
    #[error("parameter '{name}': min {min} is above max {max}")]
    EmptyRange { name: String, min: f64, max: f64 },
    #[error("expected NAME=VALUE, got '{text}'")]
    NotAnAssignment { text: String },
}

fn fmt_bound(bound: Option<f64>) -> String {
    bound.map_or_else(|| "unbounded".to_owned(), |b| b.to_string())
}

/// Checks a strategy's declared specs: names, uniqueness, defaults within bounds.
pub fn check_specs(specs: &[ParamSpec]) -> Result<(), ParamError> {
    for (i, spec) in specs.iter().enumerate() {
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ParamError::BadName {
                name: spec.name.clone(),
            });
        }
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(ParamError::Duplicate {
                name: spec.name.clone(),
            });
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max)
            && min > max
        {
            return Err(ParamError::EmptyRange {
                name: spec.name.clone(),
                min,
                max,
            });
        }
        spec.check(spec.default)?;
    }
    Ok(())
}

/// Resolved parameter values: every declared parameter, defaults filled in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    values: Vec<(String, ParamValue)>,
}

impl Params {
    /// Every declared parameter at its default, overridden by `overrides`
    /// (each checked against its spec).
    pub fn resolve(
        specs: &[ParamSpec],
        overrides: &[(String, ParamValue)],
    ) -> Result<Params, ParamError> {
        check_specs(specs)?;
        let mut values: Vec<(String, ParamValue)> =
            specs.iter().map(|s| (s.name.clone(), s.default)).collect();
        for (name, value) in overrides {
            let Some(index) = specs.iter().position(|s| &s.name == name) else {
                return Err(ParamError::Unknown { name: name.clone() });
            };
            specs[index].check(*value)?;
            values[index].1 = *value;
        }
        Ok(Params { values })
    }

    /// Parses `NAME=VALUE` assignments against `specs`, then resolves.
    pub fn resolve_text(specs: &[ParamSpec], assignments: &[String]) -> Result<Params, ParamError> {
        let mut overrides = Vec::with_capacity(assignments.len());
        for text in assignments {
            let Some((name, value)) = text.split_once('=') else {
                return Err(ParamError::NotAnAssignment { text: text.clone() });
            };
            let name = name.trim();
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                return Err(ParamError::Unknown {
                    name: name.to_owned(),
                });
            };
            overrides.push((name.to_owned(), spec.parse(value)?));
        }
        Params::resolve(specs, &overrides)
    }

    /// Values exactly as given (the guest side: the host already checked them).
    pub fn from_values(values: Vec<(String, ParamValue)>) -> Params {
        Params { values }
    }

    pub fn values(&self) -> &[(String, ParamValue)] {
        &self.values
    }

    pub fn get(&self, name: &str) -> Option<ParamValue> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// An int parameter; `Err` names it if it is missing or of another kind.
    pub fn int(&self, name: &str) -> Result<i64, String> {
        match self.get(name) {
            Some(ParamValue::Int(v)) => Ok(v),
            other => Err(missing(name, "int", other)),
        }
    }

    /// A float parameter (an int value is accepted and widened).
    pub fn float(&self, name: &str) -> Result<f64, String> {
        match self.get(name) {
            Some(ParamValue::Float(v)) => Ok(v),
            Some(ParamValue::Int(v)) => Ok(v as f64),
            other => Err(missing(name, "float", other)),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            Some(ParamValue::Flag(v)) => Ok(v),
            other => Err(missing(name, "flag", other)),
        }
    }
}

fn missing(name: &str, kind: &str, found: Option<ParamValue>) -> String {
    match found {
        None => format!("parameter '{name}' was not given"),
        Some(v) => format!("parameter '{name}' should be {kind}, got {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::int("fast", 10, 2, 100, "fast window"),
            ParamSpec::float("stop", 0.02, 0.0, 0.5, "stop distance"),
            ParamSpec::flag("short", false, "allow shorts"),
        ]
    }

    #[test]
    fn defaults_then_overrides() {
        let p = Params::resolve_text(&specs(), &["fast=20".into(), "short=true".into()])
            .expect("valid overrides");
        assert_eq!(p.int("fast"), Ok(20));
        assert_eq!(p.float("stop"), Ok(0.02));
        assert_eq!(p.flag("short"), Ok(true));
    }

    #[test]
    fn refusals_name_the_parameter() {
        struct Case {
            input: &'static str,
            expect: &'static str,
        }
        let cases = [
            Case {
                input: "fast=1",
                expect: "parameter 'fast' = 1 is outside [2, 100]",
            },
            Case {
                input: "fast=abc",
                expect: "parameter 'fast': cannot read 'abc' as int",
            },
            Case {
                input: "slow=3",
                expect: "parameter 'slow' is not declared by the strategy",
            },
            Case {
                input: "stop=NaN",
                expect: "parameter 'stop' = NaN is outside [0, 0.5]",
            },
            Case {
                input: "fast",
                expect: "expected NAME=VALUE, got 'fast'",
            },
        ];
        for case in cases {
            let err = Params::resolve_text(&specs(), &[case.input.into()]).expect_err(case.input);
            assert_eq!(err.to_string(), case.expect, "input {}", case.input);
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = specs();
        s.push(ParamSpec::int("fast", 1, 0, 2, "again"));
        assert!(matches!(check_specs(&s), Err(ParamError::Duplicate { .. })));
        let bad_default = [ParamSpec::int("n", 500, 0, 100, "")];
        assert!(matches!(
            check_specs(&bad_default),
            Err(ParamError::OutOfRange { .. })
        ));
        let bad_name = [ParamSpec::flag("Big Name", true, "")];
        assert!(matches!(
            check_specs(&bad_name),
            Err(ParamError::BadName { .. })
        ));
        let mut wrong_kind = ParamSpec::int("n", 1, 0, 2, "");
        wrong_kind.default = ParamValue::Float(1.0);
        assert!(matches!(
            check_specs(&[wrong_kind]),
            Err(ParamError::WrongKind { .. })
        ));
    }
}
