//! The parameter grid: `--param name=values` axes, counted before anything
//! of them is built, expanded into every combination.

use anyhow::{Context, bail};
use keel_model::{ParamKind, ParamSpec, Params};

/// The most parameter combinations one backtest runs.
pub const MAX_COMBINATIONS: usize = 10_000;

/// One `--param` axis: its values as text, a range made on demand (so a
/// grid is counted before anything of it is built).
#[derive(Debug)]
enum Axis {
    List(Vec<String>),
    Range {
        from: f64,
        step: f64,
        count: usize,
        kind: ParamKind,
    },
}

impl Axis {
    fn len(&self) -> usize {
        match self {
            Axis::List(values) => values.len(),
            Axis::Range { count, .. } => *count,
        }
    }

    fn value(&self, i: usize) -> String {
        match self {
            Axis::List(values) => values[i].clone(),
            Axis::Range {
                from, step, kind, ..
            } => {
                let v = from + step * i as f64;
                match kind {
                    ParamKind::Int => format!("{}", v.round() as i64),
                    // To 12 significant digits: 0.1 + 0.1 * 2 is shown and
                    // run as 0.3, not 0.30000000000000004.
                    _ => format!("{}", format!("{v:.11e}").parse::<f64>().unwrap_or(v)),
                }
            }
        }
    }
}

/// Expands `NAME=VALUE`, `NAME=a,b,c` and `NAME=from..to:step` into every
/// combination, each resolved and checked against the strategy's specs.
/// The combinations are counted first: a grid over [`MAX_COMBINATIONS`] is
/// refused before any of it is made.
pub fn expand_grid(specs: &[ParamSpec], assignments: &[String]) -> anyhow::Result<Vec<Params>> {
    let mut axes: Vec<(String, Axis)> = Vec::with_capacity(assignments.len());
    for text in assignments {
        let (name, values) = text.split_once('=').with_context(|| {
            format!("--param {text}: expected NAME=VALUE, NAME=a,b,c or NAME=from..to:step")
        })?;
        let spec = specs
            .iter()
            .find(|s| s.name == name.trim())
            .with_context(|| {
                format!(
                    "--param {text}: parameter '{}' is not declared by the strategy",
                    name.trim()
                )
            })?;
        // Given twice, the last would silently win: one axis a name.
        if axes.iter().any(|(n, _)| *n == spec.name) {
            bail!(
                "--param {}: given twice; give all its values at once ({}=a,b,c)",
                spec.name,
                spec.name
            );
        }
        axes.push((
            spec.name.clone(),
            axis(spec, values).with_context(|| format!("--param {text}"))?,
        ));
    }
    let total = axes
        .iter()
        .try_fold(1usize, |n, (_, axis)| n.checked_mul(axis.len()))
        .filter(|&n| n <= MAX_COMBINATIONS);
    let Some(total) = total else {
        let count: f64 = axes.iter().map(|(_, axis)| axis.len() as f64).product();
        bail!(
            "the parameter grid has {} combinations, over {MAX_COMBINATIONS}",
            keel_model::bounds::compact(&count)
        );
    };
    (0..total)
        .map(|mut i| {
            // The last axis varies fastest.
            let mut combo = vec![String::new(); axes.len()];
            for (slot, (name, axis)) in combo.iter_mut().zip(&axes).rev() {
                *slot = format!("{name}={}", axis.value(i % axis.len()));
                i /= axis.len();
            }
            Params::resolve_text(specs, &combo).map_err(anyhow::Error::from)
        })
        .collect()
}

fn axis(spec: &ParamSpec, text: &str) -> anyhow::Result<Axis> {
    if let Some((range, step)) = text.split_once(':')
        && let Some((from, to)) = range.split_once("..")
    {
        let parse = |what: &str, t: &str| {
            let v = t
                .trim()
                .parse::<f64>()
                .with_context(|| format!("{what} '{t}' is not a number"))?;
            if !v.is_finite() {
                bail!("{what} {t} is not a finite number");
            }
            Ok(v)
        };
        let (from, to, step) = (parse("from", from)?, parse("to", to)?, parse("step", step)?);
        if step <= 0.0 || to < from {
            bail!("a range needs from <= to and a step above 0");
        }
        // Counted as a float (at most inf, never NaN): a tiny step must not
        // wrap an integer.
        let count = ((to - from) / step + 1e-9).floor() + 1.0;
        if count > MAX_COMBINATIONS as f64 {
            bail!(
                "the range has {} values, over {MAX_COMBINATIONS}",
                keel_model::bounds::compact(&count)
            );
        }
        return Ok(Axis::Range {
            from,
            step,
            count: count as usize,
            kind: spec.kind,
        });
    }
    Ok(Axis::List(
        text.split(',').map(|v| v.trim().to_owned()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::params_entries;

    /// Counts the bytes each thread allocates, to prove what a refusal
    /// costs without timing anything.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCATED: Cell<usize> = const { Cell::new(0) };
        }

        struct Counting;

        // SAFETY: every call goes to the system allocator unchanged; the
        // count is a thread-local without a destructor (it allocates nothing).
        #[allow(unsafe_code)]
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = ALLOCATED.try_with(|n| n.set(n.get() + layout.size()));
                // SAFETY: as the caller promised for `layout`.
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: `ptr` came from `alloc` above, with `layout`.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        /// What `f` returns, and the bytes it allocated on this thread.
        pub fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
            let before = ALLOCATED.with(Cell::get);
            let out = f();
            (out, ALLOCATED.with(Cell::get) - before)
        }
    }

    #[test]
    fn a_grid_is_counted_before_it_is_built() {
        let specs = vec![
            ParamSpec::int("fast", 10, 1, 1000, ""),
            ParamSpec::int("slow", 30, 1, 1000, ""),
        ];
        let cases: [(&[&str], &str); 2] = [
            (
                &["fast=2..100:0.01", "slow=30,60,90"],
                "the parameter grid has 29403 combinations, over 10000",
            ),
            // The grid (it reached 6 GB before it was refused).
            (
                &["fast=2..200:0.02", "slow=3..1000:0.1"],
                "the parameter grid has 98722871 combinations, over 10000",
            ),
        ];
        for (params, expect) in cases {
            let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
            let (result, bytes) = counting::allocated_by(|| expand_grid(&specs, &params));
            assert_eq!(result.expect_err(expect).to_string(), expect);
            // Building even the smaller grid takes megabytes.
            assert!(bytes < 16 * 1024, "{expect}: {bytes} bytes allocated");
        }
    }

    #[test]
    fn ranges_with_no_sane_count_of_values_are_refused() {
        let specs = vec![ParamSpec::int("fast", 10, 1, 1000, "")];
        let cases = [
            (
                "fast=5..50:1e-300",
                "--param fast=5..50:1e-300: the range has 4.5e301 values, over 10000",
            ),
            (
                "fast=1..inf:1",
                "--param fast=1..inf:1: to inf is not a finite number",
            ),
            (
                "fast=5..50:0",
                "--param fast=5..50:0: a range needs from <= to and a step above 0",
            ),
            (
                "fast=5..50:NaN",
                "--param fast=5..50:NaN: step NaN is not a finite number",
            ),
        ];
        for (param, expect) in cases {
            let err = expand_grid(&specs, &[param.to_owned()]).expect_err(param);
            assert_eq!(format!("{err:#}"), expect);
        }
    }

    #[test]
    fn grids_expand_ranges_lists_and_singles() {
        let specs = vec![
            ParamSpec::int("fast", 10, 2, 100, ""),
            ParamSpec::float("size", 0.1, 0.01, 1.0, ""),
            ParamSpec::flag("short", false, ""),
        ];
        let grid = expand_grid(
            &specs,
            &[
                "fast=5..15:5".into(),
                "size=0.1,0.2".into(),
                "short=true".into(),
            ],
        )
        .expect("grid");
        assert_eq!(grid.len(), 6);
        let fast: Vec<i64> = grid.iter().map(|p| p.int("fast").expect("int")).collect();
        assert_eq!(fast, [5, 5, 10, 10, 15, 15]);
        assert!(grid.iter().all(|p| p.flag("short") == Ok(true)));
        // A float range is stepped in the decimals it is written in.
        let grid = expand_grid(&specs, &["size=0.1..0.7:0.1".into()]).expect("floats");
        let sizes: Vec<String> = (grid.iter())
            .map(|p| params_entries(p)[1].value.clone())
            .collect();
        assert_eq!(sizes, ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]);
        let grid = expand_grid(&specs, &["size=1e-2..3e-2:1e-2".into()]).expect("floats");
        let sizes: Vec<f64> = grid
            .iter()
            .map(|p| p.float("size").expect("size"))
            .collect();
        assert_eq!(sizes, [0.01, 0.02, 0.03]);
        assert_eq!(expand_grid(&specs, &[]).expect("defaults").len(), 1);
        let err = expand_grid(&specs, &["fast=1..5:1".into()]).expect_err("out of range");
        assert_eq!(err.to_string(), "parameter 'fast' = 1 is outside [2, 100]");
        let err = expand_grid(&specs, &["slow=3".into()]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "--param slow=3: parameter 'slow' is not declared by the strategy"
        );
        // Given twice, the last one used to win without a word.
        let twice = ["fast=5".to_owned(), " fast=6".to_owned()];
        let err = expand_grid(&specs, &twice).expect_err("twice");
        assert_eq!(
            err.to_string(),
            "--param fast: given twice; give all its values at once (fast=a,b,c)"
        );
    }
}
