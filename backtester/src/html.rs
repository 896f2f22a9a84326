//! The pieces every HTML report is made of — a backtest's and a paper or
//! live run's (`keel report run`): the page around it, escaped text, and
//! the equity-and-drawdown chart with dated axes and gridlines. Inline SVG
//! and CSS only: a report is one file that opens anywhere, offline.

use keel_model::candles::format_time;

mod charts;
mod surface;

pub use charts::{Level, Marker, histogram, monthly_returns, price_chart};
pub use surface::{Point, heatmap};

/// Text made safe for HTML: markup characters as entities, and control
/// characters (which a symbol or a reason may carry) shown as `\xNN`
/// rather than written raw into the page.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}\
     table{border-collapse:collapse;margin:0.5em 0}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}\
     td{white-space:nowrap}\
     th{text-align:left}.neg{color:#b00}.pos{color:#070}code{font-size:12px}\
     svg.chart{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}\
     .chart .grid{stroke:#e4e4e4;stroke-width:1}.chart .axis{fill:#666;font-size:11px}\
     .chart .equity{fill:none;stroke:#1565c0;stroke-width:1.5}\
     .chart .drawdown{fill:#e88;opacity:0.6}.chart .name{fill:#333;font-size:12px}\
     .chart .benchmark{fill:none;stroke:#888;stroke-width:1.2;stroke-dasharray:5 4}\
     .chart .price{fill:none;stroke:#444;stroke-width:1}\
     .chart .entry-long{fill:#2ea043}.chart .entry-short{fill:#d73a49}\
     .chart .exit{fill:none;stroke:#1565c0;stroke-width:1.5}\
     .chart .stop{stroke:#d73a49;stroke-width:1.2;stroke-dasharray:4 3}\
     .chart .target{stroke:#2ea043;stroke-width:1.2;stroke-dasharray:4 3}\
     .chart .gain{fill:#2ea043;opacity:0.8}.chart .loss{fill:#d73a49;opacity:0.8}\
     table.months td{text-align:center;min-width:3.5em}\
     table.surface td{text-align:center;min-width:3.5em}table.surface caption{text-align:left;padding:4px 0;color:#333}\
     td.chosen{outline:2px solid #1565c0;outline-offset:-2px;font-weight:bold}\
     .muted{color:#777}h2{margin-top:1.6em}";

/// The start of a page titled `title`, with the reports' style sheet.
pub fn page_start(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    )
}

/// The end of a page.
pub const PAGE_END: &str = "</body></html>\n";

/// Five gridlines up a plot spanning `left..right`, at even steps of
/// `lo..hi` placed by `y`, each labelled left of it.
fn valued_gridlines(
    svg: &mut String,
    (lo, hi): (f64, f64),
    y: impl Fn(f64) -> f64,
    (left, right): (f64, f64),
) {
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<line class=\"grid\" x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y(v) + 4.0,
            tick(v, hi - lo),
            y = y(v)
        ));
    }
}

/// Five dated gridlines across a plot from `top` to `bottom`, at even
/// steps of `t0..t1` (ms) placed by `x`, labelled at `label_y` (the first
/// label from its start, the last to its end).
fn dated_gridlines(
    svg: &mut String,
    (t0, t1): (f64, f64),
    x: impl Fn(f64) -> f64,
    (top, bottom): (f64, f64),
    label_y: f64,
) {
    for i in 0..=4 {
        let t = t0 + (t1 - t0) * f64::from(i) / 4.0;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let label = format_time(t as i64);
        svg.push_str(&format!(
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{label_y:.1}\" text-anchor=\"{anchor}\">{}</text>\n",
            escape(&label.get(..16).unwrap_or(&label).replace('T', " ")),
            x = x(t)
        ));
    }
}

/// A number for an axis label: as many decimals as its range needs.
fn tick(value: f64, span: f64) -> String {
    let decimals = match span.abs() {
        s if s >= 100.0 => 0,
        s if s >= 1.0 => 2,
        s if s > 0.0 => (2.0 - s.log10().floor()).clamp(2.0, 8.0) as usize,
        _ => 2,
    };
    format!("{value:.decimals$}")
}

/// Equity (top) and its drawdown from the running peak (below) as one
/// SVG: five dated gridlines across, five valued ones up, the deepest
/// drawdown marked; at most ~2,000 points drawn. `benchmark` (buy and
/// hold, say), if any, is drawn dashed on the same scale.
pub fn equity_chart(points: &[(i64, f64)], benchmark: &[(i64, f64)]) -> String {
    const W: f64 = 1000.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 10.0;
    const EQ: f64 = 260.0;
    const GAP: f64 = 24.0;
    const DD: f64 = 110.0;
    const BOTTOM: f64 = 26.0;
    const H: f64 = TOP + EQ + GAP + DD + BOTTOM;
    if points.len() < 2 {
        return "<p class=\"muted\">(too few points to draw)</p>\n".to_owned();
    }
    let every = points.len().div_ceil(2000);
    let mut drawn: Vec<(i64, f64)> = points.iter().step_by(every).copied().collect();
    if drawn.last() != points.last() {
        drawn.extend(points.last().copied());
    }
    let (t0, t1) = (drawn[0].0 as f64, drawn[drawn.len() - 1].0 as f64);
    let bench_every = benchmark.len().div_ceil(2000).max(1);
    let bench: Vec<(i64, f64)> = benchmark
        .iter()
        .step_by(bench_every)
        .copied()
        .filter(|&(t, _)| t >= drawn[0].0 && t <= drawn[drawn.len() - 1].0)
        .collect();
    let (mut lo, mut hi) = drawn
        .iter()
        .chain(&bench)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, e)| {
            (lo.min(e), hi.max(e))
        });
    if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo, hi) = (lo - pad, hi + pad);
    let mut peak = f64::NEG_INFINITY;
    let drawdowns: Vec<(i64, f64)> = drawn
        .iter()
        .map(|&(t, e)| {
            peak = peak.max(e);
            (t, if peak > 0.0 { (peak - e) / peak } else { 0.0 })
        })
        .collect();
    // The deepest drawdown of every point, not only of those drawn.
    let mut peak = f64::NEG_INFINITY;
    let worst = points.iter().fold(0.0f64, |w, &(_, e)| {
        peak = peak.max(e);
        if peak > 0.0 {
            w.max((peak - e) / peak)
        } else {
            w
        }
    });
    let dd_scale = (worst * 1.1).max(0.001);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
    let y = |e: f64| TOP + EQ * (1.0 - (e - lo) / (hi - lo));
    let yd = |d: f64| TOP + EQ + GAP + DD * (d / dd_scale);
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"equity and drawdown\">\n"
    );
    valued_gridlines(&mut svg, (lo, hi), y, (LEFT, W - RIGHT));
    dated_gridlines(&mut svg, (t0, t1), x, (TOP, H - BOTTOM), H - 8.0);
    let line: String = drawn
        .iter()
        .map(|&(t, e)| format!("{:.1},{:.1} ", x(t as f64), y(e)))
        .collect();
    let mut area = format!("{:.1},{:.1} ", x(t0), yd(0.0));
    for &(t, d) in &drawdowns {
        area.push_str(&format!("{:.1},{:.1} ", x(t as f64), yd(d)));
    }
    area.push_str(&format!("{:.1},{:.1}", x(t1), yd(0.0)));
    if bench.len() > 1 {
        let dashed: String = bench
            .iter()
            .map(|&(t, e)| format!("{:.1},{:.1} ", x(t as f64), y(e)))
            .collect();
        svg.push_str(&format!(
            "<polyline class=\"benchmark\" points=\"{dashed}\"/>\n\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">- - buy and hold</text>\n",
            LEFT + 60.0,
            TOP + 14.0
        ));
    }
    svg.push_str(&format!(
        "<polyline class=\"equity\" points=\"{line}\"/>\n\
         <line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{z:.1}\" y2=\"{z:.1}\"/>\n\
         <polygon class=\"drawdown\" points=\"{area}\"/>\n\
         <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">-{:.2}%</text>\n\
         <text class=\"name\" x=\"{}\" y=\"{:.1}\">drawdown (deepest {:.2}%)</text>\n\
         <text class=\"name\" x=\"{}\" y=\"{:.1}\">equity</text>\n</svg>\n",
        W - RIGHT,
        LEFT - 6.0,
        yd(dd_scale),
        dd_scale * 100.0,
        LEFT + 6.0,
        yd(0.0) + 14.0,
        worst * 100.0,
        LEFT + 6.0,
        TOP + 14.0,
        z = yd(0.0)
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_written_raw() {
        assert_eq!(escape("\u{1b}[31mX\u{7}\u{1}"), "\\x1b[31mX\\x07\\x01");
    }

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(
            escape("<b>\"P&L\"</b>"),
            "&lt;b&gt;&quot;P&amp;L&quot;&lt;/b&gt;"
        );
    }

    #[test]
    fn the_chart_dates_its_axis_values_its_grid_and_marks_the_deepest_drawdown() {
        let day = 86_400_000;
        let points: Vec<(i64, f64)> = [100.0, 110.0, 88.0, 120.0, 125.0]
            .iter()
            .enumerate()
            .map(|(i, &e)| (1_704_067_200_000 + i as i64 * day, e))
            .collect();
        let svg = equity_chart(&points, &[]);
        assert!(svg.contains(">2024-01-01 00:00<"), "{svg}");
        assert!(svg.contains(">2024-01-05 00:00<"), "{svg}");
        assert_eq!(svg.matches("class=\"grid\"").count(), 11, "{svg}");
        assert!(svg.contains("deepest 20.00%"), "110 to 88 is 20%: {svg}");
        assert!(equity_chart(&points[..1], &[]).contains("too few points"));
        let flat = equity_chart(&[(0, 5.0), (60_000, 5.0)], &[]);
        assert!(!flat.contains("NaN"), "{flat}");
    }
}
