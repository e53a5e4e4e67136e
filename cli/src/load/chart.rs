//! The report's chart: throughput and latency per second of the run, as SVG.

use plotters::prelude::*;

use super::stats::{Report, SecondReport};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;

/// Draws two panels over the run's seconds: answers per second (successes and errors),
/// and the p50 and p99 latency of the requests that finished in each second.
pub fn svg(report: &Report) -> Result<String, String> {
    let mut out = String::new();
    draw(report, &mut out).map_err(|e| format!("drawing the chart: {e}"))?;
    Ok(out)
}

type Points = Vec<(f64, f64)>;

/// One panel: two lines over the run's seconds, with a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    seconds: f64,
    lines: [(&str, RGBColor, Points); 2],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let top = lines
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(unit)
        .draw()?;
    for (label, color, points) in lines {
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw(report: &Report, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "flotilla load: {} arrivals/s offered, mix {}",
            report.run.rate, report.run.scenario
        ),
        ("sans-serif", 18),
    )?;
    let panels = root.split_evenly((2, 1));
    let t = &report.timeline;
    let seconds = (t.len().max(1)) as f64;
    // Each second's value is drawn at its middle.
    let series = |f: &dyn Fn(&SecondReport) -> Option<f64>| -> Points {
        t.iter()
            .filter_map(|s| f(s).map(|y| (s.second as f64 + 0.5, y)))
            .collect()
    };
    panel(
        &panels[0],
        "throughput (answers per second)",
        "requests/s",
        seconds,
        [
            ("ok", BLUE, series(&|s| Some(s.ok as f64))),
            ("errors", RED, series(&|s| Some(s.errors as f64))),
        ],
    )?;
    panel(
        &panels[1],
        "latency from the intended start (ms)",
        "ms",
        seconds,
        [
            ("p50", GREEN, series(&|s| s.p50_ms)),
            ("p99", MAGENTA, series(&|s| s.p99_ms)),
        ],
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::stats::{Outcome, Recorder, Run};
    use super::*;

    #[test]
    fn the_chart_is_an_svg_with_both_panels() {
        let mut r = Recorder::default();
        for i in 0..30u64 {
            let outcome = if i % 10 == 0 {
                Outcome::Unexpected(503)
            } else {
                Outcome::Ok(200)
            };
            r.request(
                "GET /api/products",
                outcome,
                Duration::from_millis(5 + i),
                Duration::from_millis(i * 100),
            );
        }
        let drawn = svg(&r.report(Run::example(), Duration::from_secs(3))).unwrap();
        assert!(drawn.starts_with("<svg"), "{}", &drawn[..80]);
        assert!(drawn.contains("throughput") && drawn.contains("latency"));
        assert!(drawn.contains("<polyline"));
        // An empty run still draws (empty axes).
        let empty = Recorder::default().report(Run::example(), Duration::from_secs(1));
        assert!(svg(&empty).is_ok());
    }
}
