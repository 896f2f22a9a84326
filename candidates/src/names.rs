//! Names that are enums in code and strings only at the SQL and JSON
//! boundary: who acts ([`Actor`]), which gate ([`Gate`]), what it said
//! ([`Verdict`]). [`named!`] gives each such enum its one spelling.

/// A name that is none of its enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{text}'")]
pub struct UnknownName {
    pub kind: &'static str,
    pub text: String,
}

/// An enum of unit variants, each with the one string that stands for it
/// in SQL and JSON: `as_str`, `parse` (and `FromStr`), `ALL`, `Display`
/// (padded, so it fits a table column) and `Serialize` as that string.
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in SQL and shown in JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value `text` names.
            pub fn parse(text: &str) -> Result<$name, $crate::names::UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::names::UnknownName {
                        kind: $kind,
                        text: keel_model::shown::text(text).to_string(),
                    }),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;
            fn from_str(text: &str) -> Result<$name, Self::Err> {
                $name::parse(text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use named;

named! {
    /// Who moves a candidate or the deployments.
    pub enum Actor as "actor" {
        /// A person submitting a candidate by hand, as records before
        /// `operator` submitted name them.
        Person = "person",
        /// A person deciding (promote, reject, roll back).
        Operator = "operator",
        /// The nightly evolution, submitting or deciding.
        Evolution = "evolution",
        /// The paper engine's automatic rollback.
        RiskManager = "risk-manager",
        /// Keel itself: gate verdicts, the first deployment.
        Keel = "keel",
    }
}

impl Actor {
    /// May submit a candidate (`keel candidate submit --by`, which, like
    /// every other `--by`, takes `operator` or `evolution`).
    pub fn submits(self) -> bool {
        matches!(self, Actor::Person | Actor::Operator | Actor::Evolution)
    }

    /// May promote, reject or roll back (`keel candidate … --by`).
    pub fn decides(self) -> bool {
        matches!(self, Actor::Operator | Actor::Evolution)
    }
}

named! {
    /// The gates a candidate passes on its way to trading, cheapest first.
    pub enum Gate as "gate" {
        /// Load checks, `init`, a fuel-metered smoke run, determinism.
        Validate = "validate",
        /// Thresholds on a backtest of the gate's data.
        Backtest = "backtest",
        /// A shadow run beside the active strategy in `keel run`.
        Paper = "paper",
    }
}

named! {
    /// What a gate said.
    pub enum Verdict as "verdict" {
        Pass = "pass",
        Fail = "fail",
    }
}

impl Verdict {
    pub fn from_passed(passed: bool) -> Verdict {
        if passed { Verdict::Pass } else { Verdict::Fail }
    }

    pub fn passed(self) -> bool {
        self == Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_value() {
        for actor in Actor::ALL {
            assert_eq!(Actor::parse(actor.as_str()), Ok(*actor));
        }
        for gate in Gate::ALL {
            assert_eq!(gate.as_str().parse(), Ok(*gate));
        }
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::parse(verdict.as_str()), Ok(*verdict));
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_its_kind() {
        let cases = [
            (Actor::parse("root").map(|_| ()), "unknown actor 'root'"),
            (Gate::parse("Paper").map(|_| ()), "unknown gate 'Paper'"),
            (Verdict::parse("").map(|_| ()), "unknown verdict ''"),
        ];
        for (result, message) in cases {
            assert_eq!(result.map_err(|e| e.to_string()), Err(message.to_owned()));
        }
    }

    #[test]
    fn names_fill_a_table_column_and_serialize_as_their_string() {
        assert_eq!(format!("[{:<14}]", Actor::RiskManager), "[risk-manager  ]");
        assert_eq!(Verdict::from_passed(false), Verdict::Fail);
        assert!(Verdict::Pass.passed());
        let json = serde_json::to_string(&[Gate::Paper]).expect("json");
        assert_eq!(json, r#"["paper"]"#);
        let submitters: Vec<Actor> = Actor::ALL.iter().copied().filter(|a| a.submits()).collect();
        assert_eq!(
            submitters,
            [Actor::Person, Actor::Operator, Actor::Evolution]
        );
        let deciders: Vec<Actor> = Actor::ALL.iter().copied().filter(|a| a.decides()).collect();
        assert_eq!(deciders, [Actor::Operator, Actor::Evolution]);
    }
}
