//! Plots the command line writes: SVG drawn by hand (a few dozen elements,
//! no plotting dependency), kept out of the retrieval library.

use std::fmt::Write as _;

use engram_rag::certify::ScoreFunction;
use engram_rag::eval::ConformalRow;

/// An SVG of empirical against target coverage, one line per score
/// function, with the diagonal.
pub fn coverage_svg(curve: &[ConformalRow]) -> String {
    const W: f64 = 520.0;
    const H: f64 = 420.0;
    const M: f64 = 60.0;
    let (lo, hi) = (0.45, 1.0);
    let x = |v: f64| M + (v - lo) / (hi - lo) * (W - 2.0 * M);
    let y = |v: f64| H - M - (v - lo) / (hi - lo) * (H - 2.0 * M);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 4"/>"##,
        x(lo),
        y(lo),
        x(hi),
        y(hi)
    );
    for tick in [0.5, 0.6, 0.7, 0.8, 0.9, 1.0] {
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{tick:.1}</text>"#, x(tick), H - M + 18.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{tick:.1}</text>"#, M - 6.0, y(tick) + 4.0);
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{M}" y="{M}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - 2.0 * M,
        H - 2.0 * M
    );
    let _ =
        writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">target coverage 1 − α</text>"#, W / 2.0, H - 18.0);
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">empirical coverage</text>"#,
        H / 2.0,
        H / 2.0
    );
    let mut functions: Vec<ScoreFunction> = Vec::new();
    for row in curve {
        if !functions.contains(&row.score_function) {
            functions.push(row.score_function);
        }
    }
    for (i, function) in functions.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = curve
            .iter()
            .filter(|r| r.score_function == *function)
            .map(|r| format!("{:.1},{:.1}", x(r.target), y(r.coverage.clamp(lo, hi))))
            .collect();
        let _ =
            writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, points.join(" "));
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            M + 10.0,
            M + 18.0 + 16.0 * i as f64,
            function.as_str()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(score_function: ScoreFunction, alpha: f64, coverage: f64) -> ConformalRow {
        ConformalRow {
            score_function,
            alpha,
            target: 1.0 - alpha,
            coverage,
            coverage_sd: 0.01,
            spread: [coverage - 0.02, coverage + 0.02],
            first_split: (coverage, [coverage - 0.03, coverage + 0.03]),
            median_set: 3.0,
            p90_set: 5.0,
            unbounded_splits: 0,
        }
    }

    #[test]
    fn the_coverage_plot_is_one_svg_with_a_line_per_score_function() {
        let curve: Vec<ConformalRow> = ScoreFunction::ALL
            .iter()
            .flat_map(|f| [row(*f, 0.05, 0.96), row(*f, 0.1, 0.91), row(*f, 0.5, 0.3)])
            .collect();
        let svg = coverage_svg(&curve);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<polyline").count(), ScoreFunction::ALL.len());
        assert_eq!(svg.matches("<circle").count(), curve.len());
        for function in ScoreFunction::ALL {
            assert!(svg.contains(&format!(">{}</text>", function.as_str())), "{}", function.as_str());
        }
        // Every element is closed: self-closing, or closed on its own line.
        for line in svg.lines().skip(1).filter(|l| *l != "</svg>") {
            assert!(line.ends_with("/>") || line.ends_with("</text>"), "{line}");
        }
        // A coverage below the axis is drawn on it, not outside the frame.
        assert!(svg.contains(&format!(",{:.1}", 420.0 - 60.0)), "{svg}");
    }

    #[test]
    fn an_empty_curve_still_draws_the_axes() {
        let svg = coverage_svg(&[]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 0);
        assert!(svg.contains("target coverage"));
    }
}
