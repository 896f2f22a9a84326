//! The report's other pictures: each symbol's price with the trades on it,
//! the monthly returns as a heat-coloured table, and the distribution of
//! trade returns. Inline SVG and tables; every axis labelled.

use super::{dated_gridlines, escape, valued_gridlines};

/// A trade's entry or exit, drawn on its symbol's price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marker {
    pub time_ms: i64,
    pub price: f64,
    /// An entry (else an exit).
    pub entry: bool,
    /// A long position's (else a short's).
    pub long: bool,
}

/// A position's stop-loss or take-profit while it was open, drawn on its
/// symbol's price as a dashed level from entry to exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub from_ms: i64,
    pub to_ms: i64,
    pub price: f64,
    /// A stop-loss (else a take-profit).
    pub stop: bool,
}

impl Level {
    /// The stop and the target of a position held from `from_ms` to
    /// `to_ms`, those that were set.
    pub fn of(from_ms: i64, to_ms: i64, stop: Option<f64>, target: Option<f64>) -> Vec<Level> {
        let level = |price: Option<f64>, stop| {
            price
                .filter(|p| p.is_finite() && *p > 0.0)
                .map(|price| Level {
                    from_ms,
                    to_ms,
                    price,
                    stop,
                })
        };
        [level(stop, true), level(target, false)]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A plot area of `w × h` at (`left`, `top`) mapping time and value.
struct Frame {
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    t: (f64, f64),
    v: (f64, f64),
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        let (t0, t1) = self.t;
        self.left + self.w * if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 }
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = self.v;
        self.top + self.h * (1.0 - if hi > lo { (v - lo) / (hi - lo) } else { 0.5 })
    }

    /// Five valued gridlines up and five dated ones across, labelled.
    fn grid(&self, svg: &mut String) {
        let bottom = self.top + self.h;
        valued_gridlines(svg, self.v, |v| self.y(v), (self.left, self.left + self.w));
        dated_gridlines(
            svg,
            self.t,
            |t| self.x(t),
            (self.top, bottom),
            bottom + 16.0,
        );
    }
}

/// A symbol's closes with each trade's entry (▲ long, ▼ short) and exit
/// (○) marked at its price, and its stop-loss and take-profit (dashed)
/// while it was open; at most ~2,000 closes drawn.
pub fn price_chart(
    symbol: &str,
    closes: &[(i64, f64)],
    markers: &[Marker],
    levels: &[Level],
) -> String {
    if closes.len() < 2 {
        return format!(
            "<p class=\"muted\">{}: too few closes to draw</p>\n",
            escape(symbol)
        );
    }
    let every = closes.len().div_ceil(2000);
    let drawn: Vec<(i64, f64)> = closes.iter().step_by(every).copied().collect();
    let (lo, hi) = closes
        .iter()
        .map(|c| c.1)
        .chain(markers.iter().map(|m| m.price))
        .chain(levels.iter().map(|l| l.price))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p), hi.max(p))
        });
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-6);
    let frame = Frame {
        left: 80.0,
        top: 24.0,
        w: 908.0,
        h: 240.0,
        t: (closes[0].0 as f64, closes[closes.len() - 1].0 as f64),
        v: (lo - pad, hi + pad),
    };
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"290\" \
         viewBox=\"0 0 1000 290\" role=\"img\" aria-label=\"{} price and trades\">\n\
         <text class=\"name\" x=\"80\" y=\"16\">{} — close, entries ▲ long ▼ short, exits ○{}</text>\n",
        escape(symbol),
        escape(symbol),
        if levels.is_empty() {
            ""
        } else {
            ", stop-loss and take-profit dashed"
        }
    );
    frame.grid(&mut svg);
    let line: String = drawn
        .iter()
        .map(|&(t, p)| format!("{:.1},{:.1} ", frame.x(t as f64), frame.y(p)))
        .collect();
    svg.push_str(&format!("<polyline class=\"price\" points=\"{line}\"/>\n"));
    for l in levels {
        let y = frame.y(l.price);
        svg.push_str(&format!(
            "<line class=\"{}\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>",
            if l.stop { "stop" } else { "target" },
            frame.x(l.from_ms as f64),
            frame.x(l.to_ms as f64).max(frame.x(l.from_ms as f64) + 2.0),
        ));
    }
    for m in markers {
        let (x, y) = (frame.x(m.time_ms as f64), frame.y(m.price));
        let shape = match (m.entry, m.long) {
            (true, true) => format!(
                "<path class=\"entry-long\" d=\"M{:.1},{:.1}l5,9h-10z\"/>",
                x,
                y - 1.0
            ),
            (true, false) => format!(
                "<path class=\"entry-short\" d=\"M{:.1},{:.1}l5,-9h-10z\"/>",
                x,
                y + 1.0
            ),
            (false, _) => format!("<circle class=\"exit\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\"/>"),
        };
        svg.push_str(&shape);
    }
    svg.push_str("\n</svg>\n");
    svg
}

/// Returns of each calendar month (UTC) of an equity curve, as a table of
/// years by months with the year's total, each cell coloured by its sign
/// and size.
pub fn monthly_returns(points: &[(i64, f64)]) -> String {
    use chrono::Datelike;
    // The last equity of each month, and the one before the first.
    let mut months: Vec<((i32, u32), f64)> = Vec::new();
    for &(t, e) in points {
        let Some(day) = chrono::DateTime::from_timestamp_millis(t) else {
            continue;
        };
        let key = (day.year(), day.month());
        match months.last_mut() {
            Some((k, last)) if *k == key => *last = e,
            _ => months.push((key, e)),
        }
    }
    let Some(&(_, first)) = points.first() else {
        return String::new();
    };
    let mut returns = Vec::with_capacity(months.len());
    let mut before = first;
    for &(key, end) in &months {
        let r = if before > 0.0 {
            (end - before) / before * 100.0
        } else {
            0.0
        };
        returns.push((key, r));
        before = end;
    }
    let cell = |r: Option<f64>| match r {
        None => "<td></td>".to_owned(),
        Some(r) => {
            let strength = (r.abs() / 10.0).min(1.0) * 0.75 + 0.08;
            let colour = if r >= 0.0 { "46,160,67" } else { "215,58,73" };
            format!("<td style=\"background:rgba({colour},{strength:.2})\">{r:+.1}%</td>")
        }
    };
    let mut out = String::from(
        "<table class=\"months\"><tr><th>year</th><th>Jan</th><th>Feb</th><th>Mar</th><th>Apr</th>\
         <th>May</th><th>Jun</th><th>Jul</th><th>Aug</th><th>Sep</th><th>Oct</th><th>Nov</th>\
         <th>Dec</th><th>year</th></tr>\n",
    );
    let mut years: Vec<i32> = returns.iter().map(|((y, _), _)| *y).collect();
    years.dedup();
    for year in years {
        out.push_str(&format!("<tr><th>{year}</th>"));
        let mut total = 1.0;
        for month in 1..=12 {
            let r = returns
                .iter()
                .find(|((y, m), _)| *y == year && *m == month)
                .map(|(_, r)| *r);
            if let Some(r) = r {
                total *= 1.0 + r / 100.0;
            }
            out.push_str(&cell(r));
        }
        out.push_str(&cell(Some((total - 1.0) * 100.0)));
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Trade returns (percent) as a histogram of about 20 bins, losses red,
/// gains green, the count of each bin above it.
pub fn histogram(returns_pct: &[f64]) -> String {
    let finite: Vec<f64> = returns_pct
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    if finite.is_empty() {
        return "<p class=\"muted\">(no trades)</p>\n".to_owned();
    }
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    const BINS: usize = 20;
    let width = (hi - lo) / BINS as f64;
    let mut counts = [0usize; BINS];
    for r in &finite {
        let bin = (((r - lo) / width) as usize).min(BINS - 1);
        counts[bin] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let (left, top, w, h) = (60.0, 36.0, 620.0, 140.0);
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"700\" height=\"210\" \
         viewBox=\"0 0 700 210\" role=\"img\" aria-label=\"distribution of trade returns\">\n\
         <text class=\"name\" x=\"{left}\" y=\"14\">trade returns, % of the position's cost ({} trades)</text>\n",
        finite.len()
    );
    let bar_w = w / BINS as f64;
    for (i, &n) in counts.iter().enumerate() {
        let from = lo + width * i as f64;
        let bar_h = h * n as f64 / most as f64;
        let class = if from + width / 2.0 >= 0.0 {
            "gain"
        } else {
            "loss"
        };
        let x = left + bar_w * i as f64;
        svg.push_str(&format!(
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\"/>",
            x + 1.0,
            top + h - bar_h,
            bar_w - 2.0
        ));
        if n > 0 {
            svg.push_str(&format!(
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
                x + bar_w / 2.0,
                top + h - bar_h - 3.0
            ));
        }
    }
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let x = left + w * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:+.2}%</text>",
            top + h + 16.0
        ));
    }
    svg.push_str(&format!(
        "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>\n</svg>\n",
        left + w,
        y = top + h
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const JAN_1_2024: i64 = 1_704_067_200_000;

    #[test]
    fn months_are_compounded_into_years_and_coloured_by_sign() {
        // 100 → 110 in January, → 99 in February.
        let points = [
            (JAN_1_2024, 100.0),
            (JAN_1_2024 + 30 * DAY, 110.0),
            (JAN_1_2024 + 40 * DAY, 99.0),
        ];
        let table = monthly_returns(&points);
        assert!(table.contains(">+10.0%<"), "{table}");
        assert!(table.contains(">-10.0%<"), "{table}");
        assert!(table.contains(">-1.0%<"), "the year compounds: {table}");
        assert!(table.contains("<th>2024</th>"));
        assert!(table.contains("rgba(46,160,67") && table.contains("rgba(215,58,73"));
    }

    #[test]
    fn trades_are_marked_on_their_price_and_returns_binned() {
        let closes: Vec<(i64, f64)> = (0..10)
            .map(|i| (JAN_1_2024 + i * DAY, 100.0 + i as f64))
            .collect();
        let markers = [
            Marker {
                time_ms: JAN_1_2024 + DAY,
                price: 101.0,
                entry: true,
                long: true,
            },
            Marker {
                time_ms: JAN_1_2024 + 5 * DAY,
                price: 105.0,
                entry: false,
                long: true,
            },
            Marker {
                time_ms: JAN_1_2024 + 6 * DAY,
                price: 106.0,
                entry: true,
                long: false,
            },
        ];
        let svg = price_chart("ETH/BTC", &closes, &markers, &[]);
        assert!(!svg.contains("class=\"stop\"") && !svg.contains("dashed"));
        let levels = Level::of(JAN_1_2024, JAN_1_2024 + 5 * DAY, Some(90.0), Some(120.0));
        let with_levels = price_chart("ETH/BTC", &closes, &markers, &levels);
        assert_eq!(with_levels.matches("class=\"stop\"").count(), 1);
        assert_eq!(with_levels.matches("class=\"target\"").count(), 1);
        assert!(with_levels.contains("stop-loss and take-profit dashed"));
        assert_eq!(Level::of(0, 1, None, Some(f64::NAN)), []);
        assert_eq!(svg.matches("class=\"entry-long\"").count(), 1);
        assert_eq!(svg.matches("class=\"entry-short\"").count(), 1);
        assert_eq!(svg.matches("class=\"exit\"").count(), 1);
        assert!(svg.contains(">2024-01-01 00:00<"), "{svg}");
        let h = histogram(&[-2.0, -1.0, 1.0, 1.5, 3.0, f64::NAN]);
        assert!(h.contains("(5 trades)"), "{h}");
        assert!(h.contains("class=\"loss\"") && h.contains("class=\"gain\""));
        assert!(histogram(&[]).contains("no trades"));
        assert!(!histogram(&[1.0, 1.0]).contains("NaN"));
    }
}
