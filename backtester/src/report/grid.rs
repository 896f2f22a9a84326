//! What a parameter grid and a walk-forward found, as data (the
//! walk-forward's versioned JSON, `keel.walk-forward/1`) and as one HTML
//! page each: the parameter surface as heat tables with the chosen
//! combination starred, every combination's figures, and each fold's
//! in-sample and out-of-sample figures. Inline HTML and CSS, nothing
//! fetched.

use serde::Serialize;

use keel_model::shown::text;

use super::{DataRef, ParamEntry};
use crate::html::{self, Point, escape};
use crate::metrics::Metrics;

/// How a grid's combinations are ranked, best first: the Sharpe ratio,
/// then the return (a run without a Sharpe ranks below any with one).
pub fn score(m: &Metrics) -> (f64, f64) {
    (m.sharpe.unwrap_or(f64::NEG_INFINITY), m.total_return)
}

/// One combination of a grid: its parameters, and its figures or why it
/// could not run.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRun {
    pub params: Vec<ParamEntry>,
    pub outcome: Result<Metrics, String>,
}

/// One fold of a walk-forward.
#[derive(Debug, Clone, Serialize)]
pub struct Fold {
    pub fold: usize,
    pub in_sample: (String, String),
    pub out_of_sample: (String, String),
    pub params: Vec<ParamEntry>,
    pub in_sample_metrics: Metrics,
    pub out_of_sample_metrics: Metrics,
    /// The chosen combination's index in the grid.
    #[serde(skip)]
    pub chosen: usize,
    /// Every combination's in-sample Sharpe ratio, in grid order (`None`:
    /// it could not run, or had none).
    #[serde(skip)]
    pub in_sample_sharpe: Vec<Option<f64>>,
}

/// The walk-forward report (`keel.walk-forward/1`).
#[derive(Debug, Clone, Serialize)]
pub struct WalkForward {
    pub schema: &'static str,
    pub strategy: String,
    pub sha256: String,
    pub data: Vec<DataRef>,
    pub candidates_per_fold: usize,
    pub folds: Vec<Fold>,
    /// Out-of-sample returns compounded across the folds.
    pub out_of_sample_return: f64,
    /// The grid's combinations, in order.
    #[serde(skip)]
    pub grid: Vec<Vec<ParamEntry>>,
}

/// The most combinations a grid page lists one by one.
const LISTED: usize = 100;
/// The most folds drawn each with its own surface.
const SURFACES: usize = 24;

/// Each series a page is of: symbol, bars, span and the data's hash.
pub(super) fn data_lines(data: &[DataRef]) -> String {
    let mut lines = String::from("<p>");
    for d in data {
        let partial = match d.partial {
            0 => String::new(),
            n => format!(" ({n} partial)"),
        };
        lines.push_str(&format!(
            "{} — {}, {} bars{partial}, {} .. {}, <code>{}</code><br>\n",
            escape(&text(&d.symbol).to_string()),
            escape(&text(&d.source).to_string()),
            d.bars,
            escape(&d.first),
            escape(&d.last),
            escape(&d.digest)
        ));
    }
    lines.push_str("</p>\n");
    lines
}

fn params_text(params: &[ParamEntry]) -> String {
    params
        .iter()
        .map(|p| format!("{}={}", p.name, p.value))
        .collect::<Vec<_>>()
        .join(" ")
}

fn points(grid: &[Vec<ParamEntry>], value: impl Fn(usize) -> Option<f64>) -> Vec<Point> {
    grid.iter()
        .enumerate()
        .map(|(i, params)| Point {
            params: (params.iter())
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
            value: value(i),
        })
        .collect()
}

fn pct(x: f64) -> String {
    let class = if x >= 0.0 { "pos" } else { "neg" };
    format!("<td class=\"{class}\">{:+.2}%</td>", x * 100.0)
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("<td>—</td>".to_owned(), |x| format!("<td>{x:.2}</td>"))
}

/// The page of a grid of `runs` of `strategy` (name and version) on `data`.
pub fn grid_html(strategy: &str, sha256: &str, data: &[DataRef], runs: &[GridRun]) -> String {
    let title = format!("{strategy} — parameter grid");
    let mut page = html::page_start(&title);
    page.push_str(&format!(
        "<p>artifact <code>{}</code></p>\n",
        escape(sha256)
    ));
    page.push_str(&data_lines(data));
    let mut ranked: Vec<(usize, &Metrics)> = (runs.iter().enumerate())
        .filter_map(|(i, r)| r.outcome.as_ref().ok().map(|m| (i, m)))
        .collect();
    ranked.sort_by(|a, b| {
        score(b.1)
            .partial_cmp(&score(a.1))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    // A combination that never traded is no one's best.
    let chosen = (ranked.first())
        .filter(|(_, m)| m.trades > 0)
        .map(|(i, _)| *i);
    let verdict = match chosen {
        Some(i) => format!(
            "; the best by Sharpe (then return): <b>{}</b>",
            escape(&params_text(&runs[i].params))
        ),
        None if !ranked.is_empty() => "; none of them traded, so none is the best".to_owned(),
        None => String::new(),
    };
    page.push_str(&format!(
        "<p>{} combinations, {} ran{verdict}.</p>\n",
        runs.len(),
        ranked.len(),
    ));
    let grid: Vec<Vec<ParamEntry>> = runs.iter().map(|r| r.params.clone()).collect();
    let metric =
        |f: fn(&Metrics) -> Option<f64>| move |i: usize| runs[i].outcome.as_ref().ok().and_then(f);
    page.push_str("<h2>Parameter surface</h2>\n");
    page.push_str(&html::heatmap(
        &points(&grid, metric(|m| m.sharpe)),
        "Sharpe",
        chosen,
    ));
    page.push_str(&html::heatmap(
        &points(&grid, metric(|m| Some(m.total_return * 100.0))),
        "Return %",
        chosen,
    ));
    page.push_str(&html::heatmap(
        &points(&grid, metric(|m| Some(-m.max_drawdown * 100.0))),
        "Max drawdown % (as a loss)",
        chosen,
    ));
    page.push_str(&format!(
        "<h2>Every combination, best first{}</h2>\n<table>\n<tr><th>#</th><th>parameters</th>\
         <th>return</th><th>Sharpe</th><th>max DD</th><th>trades</th><th>win rate</th>\
         <th>profit factor</th></tr>\n",
        if ranked.len() > LISTED {
            format!(" (the top {LISTED} of {})", ranked.len())
        } else {
            String::new()
        }
    ));
    for (rank, (i, m)) in ranked.iter().take(LISTED).enumerate() {
        let star = if Some(*i) == chosen { "★ " } else { "" };
        page.push_str(&format!(
            "<tr><td>{}</td><th>{star}{}</th>{}{}<td>{:.2}%</td><td>{}</td>{}{}</tr>\n",
            rank + 1,
            escape(&params_text(&runs[*i].params)),
            pct(m.total_return),
            ratio(m.sharpe),
            m.max_drawdown * 100.0,
            m.trades,
            m.win_rate.map_or("<td>—</td>".to_owned(), |w| format!(
                "<td>{:.1}%</td>",
                w * 100.0
            )),
            ratio(m.profit_factor),
        ));
    }
    page.push_str("</table>\n");
    let refused: Vec<(&GridRun, &String)> = (runs.iter())
        .filter_map(|r| r.outcome.as_ref().err().map(|e| (r, e)))
        .collect();
    if !refused.is_empty() {
        page.push_str(&format!(
            "<h2>Combinations that could not run ({})</h2>\n<table>\n",
            refused.len()
        ));
        for (r, why) in refused.iter().take(LISTED) {
            page.push_str(&format!(
                "<tr><th>{}</th><td style=\"text-align:left\">{}</td></tr>\n",
                escape(&params_text(&r.params)),
                escape(why)
            ));
        }
        page.push_str("</table>\n");
    }
    page.push_str(html::PAGE_END);
    page
}

impl WalkForward {
    /// The page: each fold's windows, the combination its in-sample part
    /// chose and how that did out of sample, and each fold's in-sample
    /// surface with the choice starred.
    pub fn html(&self) -> String {
        let title = format!(
            "{} — walk-forward, {} folds",
            self.strategy,
            self.folds.len()
        );
        let mut page = html::page_start(&title);
        page.push_str(&format!(
            "<p>artifact <code>{}</code></p>\n",
            escape(&self.sha256)
        ));
        page.push_str(&data_lines(&self.data));
        page.push_str(&format!(
            "<p>Each fold chooses the best of {} combinations by in-sample Sharpe (then return) \
             and trades it on the window after. Out-of-sample return, compounded over the folds: \
             <b class=\"{}\">{:+.2}%</b>.</p>\n",
            self.candidates_per_fold,
            if self.out_of_sample_return >= 0.0 {
                "pos"
            } else {
                "neg"
            },
            self.out_of_sample_return * 100.0
        ));
        page.push_str(
            "<h2>Folds</h2>\n<table>\n<tr><th>fold</th><th>in sample</th><th>IS Sharpe</th>\
             <th>IS return</th><th>IS trades</th><th>chosen</th><th>out of sample</th>\
             <th>OOS return</th><th>OOS Sharpe</th><th>OOS max DD</th><th>OOS trades</th></tr>\n",
        );
        for f in &self.folds {
            let (is, oos) = (&f.in_sample_metrics, &f.out_of_sample_metrics);
            page.push_str(&format!(
                "<tr><td>{}</td><td>{} .. {}</td>{}{}<td>{}</td><th>★ {}</th><td>{} .. {}</td>\
                 {}{}<td>{:.2}%</td><td>{}</td></tr>\n",
                f.fold,
                escape(&f.in_sample.0),
                escape(&f.in_sample.1),
                ratio(is.sharpe),
                pct(is.total_return),
                is.trades,
                escape(&params_text(&f.params)),
                escape(&f.out_of_sample.0),
                escape(&f.out_of_sample.1),
                pct(oos.total_return),
                ratio(oos.sharpe),
                oos.max_drawdown * 100.0,
                oos.trades,
            ));
        }
        page.push_str("</table>\n");
        if self.grid.len() > 1 {
            page.push_str("<h2>In-sample surface of each fold</h2>\n");
            for f in self.folds.iter().take(SURFACES) {
                let surface = html::heatmap(
                    &points(&self.grid, |i| f.in_sample_sharpe.get(i).copied().flatten()),
                    &format!("Fold {}: in-sample Sharpe", f.fold),
                    Some(f.chosen),
                );
                page.push_str(&surface);
            }
            if self.folds.len() > SURFACES {
                page.push_str(&format!(
                    "<p class=\"muted\">… the other {} folds' surfaces are left out.</p>\n",
                    self.folds.len() - SURFACES
                ));
            }
        }
        page.push_str(html::PAGE_END);
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_how_many_bars_of_a_series_are_partial() {
        let data = |partial| DataRef {
            symbol: "BTC/USD".into(),
            source: "store:BTC/USD@1m as 1h".into(),
            digest: "blake3:ab".into(),
            bars: 240,
            first: "2017-11-04T23:00:00Z".into(),
            last: "2017-11-14T22:00:00Z".into(),
            partial,
        };
        assert!(
            data_lines(&[data(118)]).contains(", 240 bars (118 partial), 2017-11-04T23:00:00Z")
        );
        assert!(data_lines(&[data(0)]).contains(", 240 bars, 2017-11-04T23:00:00Z"));
    }

    fn params(fast: u32, slow: u32) -> Vec<ParamEntry> {
        [("fast", fast), ("slow", slow)]
            .iter()
            .map(|(n, v)| ParamEntry {
                name: (*n).into(),
                value: v.to_string(),
            })
            .collect()
    }

    fn metrics(sharpe: f64, ret: f64) -> Metrics {
        Metrics {
            total_return: ret,
            cagr: None,
            volatility: 0.1,
            sharpe: Some(sharpe),
            sortino: None,
            calmar: None,
            max_drawdown: 0.02,
            max_drawdown_duration_ms: 0,
            trades: 7,
            win_rate: Some(0.5),
            profit_factor: Some(1.1),
            expectancy: None,
            average_win: None,
            average_loss: None,
            exposure: 0.3,
            fees: 1.0,
        }
    }

    #[test]
    fn a_grid_page_draws_the_surface_lists_every_run_and_stars_the_best() {
        let mut runs = Vec::new();
        for slow in [30, 60] {
            for fast in [5, 10] {
                runs.push(GridRun {
                    params: params(fast, slow),
                    outcome: Ok(metrics(f64::from(fast) / f64::from(slow), 0.01)),
                });
            }
        }
        runs.push(GridRun {
            params: params(40, 30),
            outcome: Err("slow must exceed fast".into()),
        });
        let page = grid_html("sma-cross 1.0.0", "ab12", &[], &runs);
        assert!(page.contains("5 combinations, 4 ran"), "{page}");
        assert!(page.contains("the best by Sharpe (then return): <b>fast=10 slow=30</b>"));
        assert!(
            page.contains("Sharpe by fast (across) and slow (down)"),
            "{page}"
        );
        assert_eq!(
            page.matches("class=\"chosen\"").count(),
            3,
            "one per surface"
        );
        assert!(page.contains("<th>★ fast=10 slow=30</th>"), "{page}");
        assert!(page.contains("slow must exceed fast"));
        assert!(!page.contains("<script"), "no script in a report");

        // When nothing traded, nothing is starred as the best.
        for run in &mut runs {
            if let Ok(m) = &mut run.outcome {
                m.trades = 0;
            }
        }
        let page = grid_html("sma-cross 1.0.0", "ab12", &[], &runs);
        assert!(
            page.contains("5 combinations, 4 ran; none of them traded, so none is the best."),
            "{page}"
        );
        assert!(
            !page.contains("class=\"chosen\"") && !page.contains('★'),
            "{page}"
        );
    }

    #[test]
    fn a_walk_forward_page_shows_each_fold_and_its_surface_with_the_choice() {
        let grid = vec![params(5, 30), params(10, 30), params(5, 60), params(10, 60)];
        let fold = |k: usize, chosen: usize| Fold {
            fold: k,
            in_sample: ("2018-01-10".into(), "2018-01-15".into()),
            out_of_sample: ("2018-01-15".into(), "2018-01-20".into()),
            params: grid[chosen].clone(),
            in_sample_metrics: metrics(2.0, 0.03),
            out_of_sample_metrics: metrics(-0.5, -0.01),
            chosen,
            in_sample_sharpe: vec![Some(1.0), Some(2.0), None, Some(-1.0)],
        };
        let wf = WalkForward {
            schema: "keel.walk-forward/1",
            strategy: "sma-cross 1.0.0".into(),
            sha256: "ab12".into(),
            data: Vec::new(),
            candidates_per_fold: 4,
            folds: vec![fold(1, 1), fold(2, 0)],
            out_of_sample_return: -0.0199,
            grid,
        };
        let page = wf.html();
        assert!(page.contains("walk-forward, 2 folds"), "{page}");
        assert!(page.contains("<b class=\"neg\">-1.99%</b>"), "{page}");
        assert!(
            page.contains("<th>★ fast=10 slow=30</th>")
                && page.contains("<th>★ fast=5 slow=30</th>")
        );
        assert!(
            page.contains("Fold 1: in-sample Sharpe") && page.contains("Fold 2: in-sample Sharpe")
        );
        assert!(page.contains("★ 2.00") && page.contains("★ 1.00"), "{page}");
        let json = serde_json::to_value(&wf).expect("json");
        assert!(json.get("grid").is_none() && json["folds"][0].get("chosen").is_none());
    }
}
