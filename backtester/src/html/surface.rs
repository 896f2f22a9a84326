//! A parameter grid's surface: a figure for every combination as a
//! heat-coloured table of one parameter across and another down (the
//! best over any others), the chosen combination marked.

use super::escape;

/// One combination of a grid: its parameters (name, value) in declaration
/// order and the figure drawn for it (`None`: it could not run).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub params: Vec<(String, String)>,
    pub value: Option<f64>,
}

/// The distinct values of parameter `i` over `points`, in the order they
/// first appear (a grid lists them in its own order), numbers sorted.
fn values(points: &[Point], i: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for p in points {
        if let Some((_, v)) = p.params.get(i)
            && !seen.contains(v)
        {
            seen.push(v.clone());
        }
    }
    if seen.iter().all(|v| v.parse::<f64>().is_ok()) {
        seen.sort_by(|a, b| {
            let (a, b) = (a.parse::<f64>(), b.parse::<f64>());
            a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0))
        });
    }
    seen
}

/// A background colour for `value` on a scale whose largest magnitude is
/// `scale`: green above zero, red below, paler nearer zero.
fn colour(value: f64, scale: f64) -> String {
    let strength = if scale > 0.0 {
        (value.abs() / scale).min(1.0)
    } else {
        0.0
    };
    let alpha = 0.12 + 0.6 * strength;
    if value >= 0.0 {
        format!("rgba(46,160,67,{alpha:.2})")
    } else {
        format!("rgba(215,58,73,{alpha:.2})")
    }
}

/// The heat table of `points`' `figure` (its name, e.g. "Sharpe"): the
/// two parameters with the most values across and down (one parameter: a
/// single row), each cell the best figure over the other parameters. The
/// combination `chosen` (an index into `points`) is outlined and starred.
/// Empty when no parameter varies.
pub fn heatmap(points: &[Point], figure: &str, chosen: Option<usize>) -> String {
    let names: Vec<&str> = points
        .first()
        .map(|p| p.params.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let mut varying: Vec<(usize, Vec<String>)> = (0..names.len())
        .map(|i| (i, values(points, i)))
        .filter(|(_, v)| v.len() > 1)
        .collect();
    if varying.is_empty() {
        return String::new();
    }
    // The two with the most values, in declaration order.
    let others = varying.len() > 2;
    varying.sort_by_key(|(i, v)| (std::cmp::Reverse(v.len()), *i));
    varying.truncate(2);
    varying.sort_by_key(|(i, _)| *i);
    let (across, down) = match varying.as_slice() {
        [a, d] => (a.clone(), Some(d.clone())),
        [a] => (a.clone(), None),
        _ => return String::new(),
    };
    let rows: Vec<Option<String>> = match &down {
        Some((_, values)) => values.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    let cell_of = |p: &Point| -> (usize, usize) {
        let col = across.1.iter().position(|v| *v == p.params[across.0].1);
        let row = match &down {
            Some((i, values)) => values.iter().position(|v| *v == p.params[*i].1),
            None => Some(0),
        };
        (row.unwrap_or(0), col.unwrap_or(0))
    };
    // Each cell: the best figure of the combinations in it, and whether
    // the chosen one is there.
    let mut cells: Vec<Vec<(Option<f64>, bool)>> =
        vec![vec![(None, false); across.1.len()]; rows.len()];
    for (k, p) in points.iter().enumerate() {
        let (r, c) = cell_of(p);
        let cell = &mut cells[r][c];
        if let Some(v) = p.value.filter(|v| v.is_finite()) {
            cell.0 = Some(cell.0.map_or(v, |best: f64| best.max(v)));
        }
        cell.1 |= chosen == Some(k);
    }
    let scale = cells
        .iter()
        .flatten()
        .filter_map(|c| c.0)
        .fold(0.0_f64, |m, v| m.max(v.abs()));
    let mut html = format!(
        "<table class=\"surface\"><caption>{} by {}{}{}{}</caption>\n<tr><th>{}</th>",
        escape(figure),
        escape(names[across.0]),
        down.as_ref().map_or(String::new(), |(i, _)| format!(
            " (across) and {} (down)",
            escape(names[*i])
        )),
        if others {
            "; each cell the best over the other parameters"
        } else {
            ""
        },
        if chosen.is_some() { "; ★ chosen" } else { "" },
        down.as_ref().map_or(String::new(), |(i, _)| format!(
            "{} \\ {}",
            escape(names[*i]),
            escape(names[across.0])
        )),
    );
    for v in &across.1 {
        html.push_str(&format!("<th>{}</th>", escape(v)));
    }
    html.push_str("</tr>\n");
    for (row, label) in cells.iter().zip(&rows) {
        html.push_str(&format!(
            "<tr><th>{}</th>",
            escape(label.as_deref().unwrap_or(names[across.0]))
        ));
        for (value, is_chosen) in row {
            let text = value.map_or("—".to_owned(), |v| format!("{v:.2}"));
            let style = value.map_or(String::new(), |v| {
                format!(" style=\"background:{}\"", colour(v, scale))
            });
            let (class, star) = if *is_chosen {
                (" class=\"chosen\"", "★ ")
            } else {
                ("", "")
            };
            html.push_str(&format!("<td{class}{style}>{star}{text}</td>"));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(fast: &str, slow: &str, size: &str, value: Option<f64>) -> Point {
        Point {
            params: vec![
                ("fast".into(), fast.into()),
                ("slow".into(), slow.into()),
                ("size".into(), size.into()),
            ],
            value,
        }
    }

    #[test]
    fn two_parameters_make_a_table_with_every_cell_and_the_chosen_one_starred() {
        let mut points = Vec::new();
        for slow in ["60", "30"] {
            for fast in ["5", "10", "15"] {
                let v =
                    fast.parse::<f64>().unwrap_or(0.0) - slow.parse::<f64>().unwrap_or(0.0) / 10.0;
                points.push(point(fast, slow, "0.2", Some(v)));
            }
        }
        points[1].value = None; // fast=10 slow=60 could not run
        let html = heatmap(&points, "Sharpe", Some(2));
        assert!(
            html.contains("Sharpe by fast (across) and slow (down)"),
            "{html}"
        );
        assert!(!html.contains("best over the other"), "{html}");
        // Rows sorted as numbers: slow 30 before 60.
        let (thirty, sixty) = (html.find("<th>30</th>"), html.find("<th>60</th>"));
        assert!(thirty < sixty && thirty.is_some(), "{html}");
        assert_eq!(html.matches("<td").count(), 6);
        assert_eq!(html.matches("class=\"chosen\"").count(), 1);
        assert!(html.contains("★ 9.00"), "{html}");
        assert!(html.contains(">—<"), "a cell that could not run: {html}");
        assert!(html.contains("rgba(215,58,73") && html.contains("rgba(46,160,67"));
    }

    #[test]
    fn three_varying_parameters_show_the_best_of_the_third_and_one_makes_a_row() {
        let points = vec![
            point("5", "30", "0.1", Some(1.0)),
            point("5", "30", "0.2", Some(3.0)),
            point("10", "30", "0.1", Some(-1.0)),
            point("10", "30", "0.2", Some(-2.0)),
            point("5", "60", "0.1", Some(0.5)),
            point("10", "60", "0.2", Some(0.25)),
        ];
        let html = heatmap(&points, "Sharpe", None);
        assert!(
            html.contains("each cell the best over the other parameters"),
            "{html}"
        );
        assert!(
            html.contains(">3.00<") && html.contains(">-1.00<"),
            "{html}"
        );
        assert!(!html.contains("chosen"), "{html}");

        let row = heatmap(
            &[
                point("5", "30", "0.1", Some(1.0)),
                point("10", "30", "0.1", Some(2.0)),
            ],
            "Sharpe",
            Some(1),
        );
        assert!(row.contains("Sharpe by fast"), "{row}");
        assert_eq!(row.matches("<td").count(), 2);
        assert!(row.contains("★ 2.00"), "{row}");
        assert_eq!(
            heatmap(&[point("5", "30", "0.1", Some(1.0))], "Sharpe", Some(0)),
            ""
        );
    }
}
