//! Each gate's judgement: figures in, a verdict and its reasons out. The
//! host produces the figures (it runs the wasm, the backtests and the
//! shadows) and stores what comes back.

use keel_backtester::Metrics;

use crate::config::{BacktestGate, PaperGate};
use crate::names::{Gate, Verdict};

/// A gate's verdict with the reasons it failed (none when it passed).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub gate: Gate,
    pub verdict: Verdict,
    pub failures: Vec<String>,
}

impl Judgement {
    /// Passed when nothing failed.
    pub fn of(gate: Gate, failures: Vec<String>) -> Judgement {
        Judgement {
            gate,
            verdict: Verdict::from_passed(failures.is_empty()),
            failures,
        }
    }

    /// The verdict in one line: the failures, or that all held.
    pub fn detail(&self) -> String {
        if !self.failures.is_empty() {
            return self.failures.join("; ");
        }
        match self.gate {
            Gate::Validate => "every check passed",
            Gate::Backtest => "every threshold met",
            Gate::Paper => "every criterion held",
        }
        .to_owned()
    }
}

/// The validate gate: it passes when no check failed (`failures` names
/// each failed check).
pub fn validate(failures: Vec<String>) -> Judgement {
    Judgement::of(Gate::Validate, failures)
}

/// One walk-forward fold's out-of-sample return, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldReturn {
    pub fold: usize,
    pub return_pct: f64,
}

/// The backtest gate: the candidate's backtest figures `m` (default
/// parameters, the gate's data) and, when the gate asks for walk-forward,
/// each fold's out-of-sample return, against the thresholds.
pub fn backtest(gate: &BacktestGate, m: &Metrics, folds: &[FoldReturn]) -> Judgement {
    let mut failures = Vec::new();
    if m.trades < gate.min_trades {
        failures.push(format!(
            "{} trades, fewer than {}",
            m.trades, gate.min_trades
        ));
    }
    match m.sharpe {
        Some(s) if s >= gate.min_sharpe => {}
        Some(s) => failures.push(format!("Sharpe {s:.2} below {:.2}", gate.min_sharpe)),
        None => failures.push("no Sharpe ratio (flat equity)".into()),
    }
    if m.max_drawdown * 100.0 > gate.max_drawdown_pct {
        failures.push(format!(
            "max drawdown {:.2}% over {:.2}%",
            m.max_drawdown * 100.0,
            gate.max_drawdown_pct
        ));
    }
    match m.profit_factor {
        Some(pf) if pf >= gate.min_profit_factor => {}
        Some(pf) => failures.push(format!(
            "profit factor {pf:.2} below {:.2}",
            gate.min_profit_factor
        )),
        None => failures.push("no profit factor (no losing or no winning trade)".into()),
    }
    for fold in folds {
        if fold.return_pct < gate.min_oos_return_pct {
            failures.push(format!(
                "fold {} out-of-sample return {:.2}% below {:.2}%",
                fold.fold, fold.return_pct, gate.min_oos_return_pct
            ));
        }
    }
    Judgement::of(Gate::Backtest, failures)
}

/// A shadow's figures so far, for the paper gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperFigures {
    pub trades: u64,
    /// Equity now less starting cash.
    pub pnl: f64,
    /// The deepest drawdown so far, percent.
    pub max_drawdown_pct: f64,
    /// Per-bar Sharpe of the shadow, and of the main book over the same bars.
    pub sharpe: Option<f64>,
    pub active_sharpe: Option<f64>,
    /// The shadow's strategy was quarantined after repeated failures.
    pub quarantined: bool,
}

/// The paper gate, after a bar (`at_end`: the run's last). A shadow passes
/// once it has enough trades, a profit, a deepest drawdown under the limit
/// and a Sharpe not worse than the main book's over the same bars; it
/// fails as soon as its drawdown reaches the limit or its strategy is
/// quarantined (nothing can undo either), or at the end of the run when it
/// traded enough but did not pass. `None`: no verdict yet, the trial goes
/// on.
pub fn paper(gate: &PaperGate, f: &PaperFigures, at_end: bool) -> Option<Judgement> {
    let (judgement, over) = paper_trial(gate, f, at_end);
    over.then_some(judgement)
}

/// The paper gate's judgement of the figures so far, and whether the trial
/// is over.
fn paper_trial(gate: &PaperGate, f: &PaperFigures, at_end: bool) -> (Judgement, bool) {
    let enough = f.trades >= gate.min_trades as u64;
    let breached = f.max_drawdown_pct >= gate.max_drawdown_pct;
    let mut failures = Vec::new();
    if f.quarantined {
        failures.push("quarantined after repeated failures".into());
    }
    if !enough {
        failures.push(format!(
            "{} paper trades, fewer than {}",
            f.trades, gate.min_trades
        ));
    }
    if f.pnl <= 0.0 {
        failures.push(format!("P&L {:.2} is not positive", f.pnl));
    }
    if breached {
        failures.push(format!(
            "max drawdown {:.2}% not under {}%",
            f.max_drawdown_pct, gate.max_drawdown_pct
        ));
    }
    match (f.sharpe, f.active_sharpe) {
        (Some(c), Some(a)) if c < a => failures.push(format!(
            "Sharpe {c:.4} worse than the active strategy's {a:.4} over the same bars"
        )),
        (None, _) => failures.push("no risk-adjusted return yet".into()),
        _ => {}
    }
    let judgement = Judgement::of(Gate::Paper, failures);
    let over = judgement.verdict.passed() || breached || f.quarantined || (at_end && enough);
    (judgement, over)
}

/// Why candidate gates stand in the way of a promotion, in gate order
/// ("backtest failed", "paper has not run"); empty when every required
/// gate's latest verdict is a pass. `latest` gives a gate's latest
/// verdict; the paper gate counts only when `paper_required`.
pub fn promotion_blockers(
    paper_required: bool,
    latest: impl Fn(Gate) -> Option<Verdict>,
) -> Vec<String> {
    Gate::ALL
        .iter()
        .filter(|gate| **gate != Gate::Paper || paper_required)
        .filter_map(|gate| match latest(*gate) {
            Some(Verdict::Pass) => None,
            Some(Verdict::Fail) => Some(format!("{gate} failed")),
            None => Some(format!("{gate} has not run")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(trades: usize, sharpe: Option<f64>, drawdown: f64, pf: Option<f64>) -> Metrics {
        Metrics {
            total_return: 0.1,
            cagr: None,
            volatility: 0.0,
            sharpe,
            sortino: None,
            calmar: None,
            max_drawdown: drawdown,
            max_drawdown_duration_ms: 0,
            trades,
            win_rate: None,
            profit_factor: pf,
            expectancy: None,
            average_win: None,
            average_loss: None,
            exposure: 0.0,
            fees: 0.0,
        }
    }

    #[test]
    fn validate_passes_only_without_failed_checks() {
        let ok = validate(Vec::new());
        assert_eq!(
            (ok.verdict, ok.detail()),
            (Verdict::Pass, "every check passed".into())
        );
        let bad = validate(vec!["init: boom".into(), "determinism: differs".into()]);
        assert_eq!(bad.verdict, Verdict::Fail);
        assert_eq!(bad.detail(), "init: boom; determinism: differs");
    }

    #[test]
    fn backtest_judges_every_threshold() {
        struct Case {
            name: &'static str,
            metrics: Metrics,
            folds: Vec<FoldReturn>,
            detail: &'static str,
        }
        let gate = BacktestGate {
            min_oos_return_pct: -5.0,
            ..BacktestGate::default()
        };
        let fold = |fold, return_pct| FoldReturn { fold, return_pct };
        let cases = [
            Case {
                name: "all met",
                metrics: metrics(10, Some(0.0), 0.25, Some(1.0)),
                folds: vec![fold(1, -5.0)],
                detail: "every threshold met",
            },
            Case {
                name: "too few trades",
                metrics: metrics(9, Some(1.0), 0.1, Some(2.0)),
                folds: vec![],
                detail: "9 trades, fewer than 10",
            },
            Case {
                name: "sharpe below",
                metrics: metrics(10, Some(-0.5), 0.1, Some(2.0)),
                folds: vec![],
                detail: "Sharpe -0.50 below 0.00",
            },
            Case {
                name: "flat equity",
                metrics: metrics(10, None, 0.1, Some(2.0)),
                folds: vec![],
                detail: "no Sharpe ratio (flat equity)",
            },
            Case {
                name: "deep drawdown",
                metrics: metrics(10, Some(1.0), 0.3, Some(2.0)),
                folds: vec![],
                detail: "max drawdown 30.00% over 25.00%",
            },
            Case {
                name: "profit factor",
                metrics: metrics(10, Some(1.0), 0.1, Some(0.5)),
                folds: vec![],
                detail: "profit factor 0.50 below 1.00",
            },
            Case {
                name: "no profit factor",
                metrics: metrics(10, Some(1.0), 0.1, None),
                folds: vec![],
                detail: "no profit factor (no losing or no winning trade)",
            },
            Case {
                name: "a losing fold",
                metrics: metrics(10, Some(1.0), 0.1, Some(2.0)),
                folds: vec![fold(1, 3.0), fold(2, -7.5)],
                detail: "fold 2 out-of-sample return -7.50% below -5.00%",
            },
            Case {
                name: "everything at once, in order",
                metrics: metrics(0, None, 0.5, None),
                folds: vec![fold(1, -50.0)],
                detail: "0 trades, fewer than 10; no Sharpe ratio (flat equity); max drawdown 50.00% over 25.00%; no profit factor (no losing or no winning trade); fold 1 out-of-sample return -50.00% below -5.00%",
            },
        ];
        for case in cases {
            let judgement = backtest(&gate, &case.metrics, &case.folds);
            assert_eq!(judgement.detail(), case.detail, "{}", case.name);
            let passed = case.detail == "every threshold met";
            assert_eq!(judgement.verdict.passed(), passed, "{}", case.name);
        }
    }

    #[test]
    fn paper_decides_when_the_trial_is_over() {
        struct Case {
            name: &'static str,
            figures: PaperFigures,
            at_end: bool,
            verdict: Option<Verdict>,
            detail: &'static str,
        }
        let gate = PaperGate {
            min_trades: 5,
            max_drawdown_pct: 10.0,
            ..PaperGate::default()
        };
        let good = PaperFigures {
            trades: 5,
            pnl: 12.5,
            max_drawdown_pct: 3.0,
            sharpe: Some(0.02),
            active_sharpe: Some(0.01),
            quarantined: false,
        };
        let cases = [
            Case {
                name: "every criterion held",
                figures: good,
                at_end: false,
                verdict: Some(Verdict::Pass),
                detail: "every criterion held",
            },
            Case {
                name: "too few trades yet: the trial goes on",
                figures: PaperFigures { trades: 4, ..good },
                at_end: false,
                verdict: None,
                detail: "4 paper trades, fewer than 5",
            },
            Case {
                name: "too few trades at the end: still no verdict",
                figures: PaperFigures { trades: 4, ..good },
                at_end: true,
                verdict: None,
                detail: "4 paper trades, fewer than 5",
            },
            Case {
                name: "a loss after enough trades: fails only at the end",
                figures: PaperFigures { pnl: -1.0, ..good },
                at_end: false,
                verdict: None,
                detail: "P&L -1.00 is not positive",
            },
            Case {
                name: "a loss at the end",
                figures: PaperFigures { pnl: 0.0, ..good },
                at_end: true,
                verdict: Some(Verdict::Fail),
                detail: "P&L 0.00 is not positive",
            },
            Case {
                name: "the drawdown limit fails at once",
                figures: PaperFigures {
                    trades: 1,
                    max_drawdown_pct: 10.0,
                    ..good
                },
                at_end: false,
                verdict: Some(Verdict::Fail),
                detail: "1 paper trades, fewer than 5; max drawdown 10.00% not under 10%",
            },
            Case {
                name: "quarantine fails at once",
                figures: PaperFigures {
                    trades: 0,
                    quarantined: true,
                    ..good
                },
                at_end: false,
                verdict: Some(Verdict::Fail),
                detail: "quarantined after repeated failures; 0 paper trades, fewer than 5",
            },
            Case {
                name: "worse than the active strategy",
                figures: PaperFigures {
                    sharpe: Some(0.001),
                    ..good
                },
                at_end: true,
                verdict: Some(Verdict::Fail),
                detail: "Sharpe 0.0010 worse than the active strategy's 0.0100 over the same bars",
            },
            Case {
                name: "no Sharpe of the main book to compare with",
                figures: PaperFigures {
                    active_sharpe: None,
                    ..good
                },
                at_end: false,
                verdict: Some(Verdict::Pass),
                detail: "every criterion held",
            },
            Case {
                name: "no Sharpe of its own yet",
                figures: PaperFigures {
                    sharpe: None,
                    ..good
                },
                at_end: false,
                verdict: None,
                detail: "no risk-adjusted return yet",
            },
        ];
        for case in cases {
            let judged = paper(&gate, &case.figures, case.at_end);
            assert_eq!(judged.map(|j| j.verdict), case.verdict, "{}", case.name);
            // What a trial still lacks is said as its verdict would be.
            let (judgement, _) = paper_trial(&gate, &case.figures, case.at_end);
            assert_eq!(judgement.detail(), case.detail, "{}", case.name);
            assert_eq!(judgement.gate, Gate::Paper);
        }
    }

    #[test]
    fn promotion_waits_for_every_required_gate() {
        use Verdict::{Fail, Pass};
        struct Case {
            name: &'static str,
            paper_required: bool,
            verdicts: [Option<Verdict>; 3],
            blockers: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "all passed",
                paper_required: true,
                verdicts: [Some(Pass), Some(Pass), Some(Pass)],
                blockers: &[],
            },
            Case {
                name: "paper not run",
                paper_required: true,
                verdicts: [Some(Pass), Some(Pass), None],
                blockers: &["paper has not run"],
            },
            Case {
                name: "paper not required",
                paper_required: false,
                verdicts: [Some(Pass), Some(Pass), Some(Fail)],
                blockers: &[],
            },
            Case {
                name: "validate failed, so no backtest",
                paper_required: true,
                verdicts: [Some(Fail), None, None],
                blockers: &[
                    "validate failed",
                    "backtest has not run",
                    "paper has not run",
                ],
            },
        ];
        for case in cases {
            let latest = |gate: Gate| case.verdicts[gate as usize];
            let blockers = promotion_blockers(case.paper_required, latest);
            assert_eq!(blockers, case.blockers, "{}", case.name);
        }
    }
}
