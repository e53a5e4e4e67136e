//! The report's charts, as SVG: throughput and latency per second of a run, and a
//! sweep's rates, time to `CONFIRMED` and CPU against the offered rate.

use plotters::prelude::*;

use super::stats::{Report, SecondReport};
use super::sweep::SweepReport;

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

/// What a panel's horizontal axis shows: its name and its end (it starts at 0).
struct XAxis<'a> {
    desc: &'a str,
    end: f64,
    /// Mark each point (a sweep has a few steps, a run a point per second).
    markers: bool,
}

/// One panel: lines over the x axis, with a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    x: &XAxis<'_>,
    lines: Vec<(&str, RGBColor, Points)>,
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
        .build_cartesian_2d(0f64..x.end, 0f64..top)?;
    chart.configure_mesh().x_desc(x.desc).y_desc(unit).draw()?;
    for (label, color, points) in lines {
        let style = color.stroke_width(2);
        if x.markers {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
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

/// A drawing area of an SVG written into a string.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A white SVG canvas `panels` panels high, drawn into `out`, with `title` on top: the
/// whole (to present once drawn) and its panels, top to bottom.
fn canvas<'a>(
    out: &'a mut String,
    panels: u32,
    title: &str,
) -> Result<(Area<'a>, Vec<Area<'a>>), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT / 2 * panels)).into_drawing_area();
    root.fill(&WHITE)?;
    let titled = root.titled(title, ("sans-serif", 18))?;
    let split = titled.split_evenly((panels as usize, 1));
    Ok((root, split))
}

fn draw(report: &Report, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let title = format!(
        "flotilla load: {} arrivals/s offered, mix {}",
        report.run.rate, report.run.scenario
    );
    let (root, panels) = canvas(out, 2, &title)?;
    let t = &report.timeline;
    let x = XAxis {
        desc: "seconds",
        end: (t.len().max(1)) as f64,
        markers: false,
    };
    // Each second's value is drawn at its middle.
    let series = |f: &dyn Fn(&SecondReport) -> Option<f64>| -> Points {
        t.iter()
            .filter_map(|s| f(s).map(|y| (s.second as f64 + 0.5, y)))
            .collect()
    };
    let mut throughput = vec![
        ("ok", BLUE, series(&|s| Some(s.ok as f64))),
        ("errors", RED, series(&|s| Some(s.errors as f64))),
    ];
    let mut latency = vec![
        ("p50", GREEN, series(&|s| s.p50_ms)),
        ("p99", MAGENTA, series(&|s| s.p99_ms)),
    ];
    if report.saga.is_some() {
        throughput.push(("CONFIRMED", BLACK, series(&|s| Some(s.confirmed as f64))));
        latency.push((
            "p99 accepted → CONFIRMED",
            BLACK,
            series(&|s| s.to_confirmed_p99_ms),
        ));
    }
    panel(
        &panels[0],
        "throughput (answers per second)",
        "requests/s",
        &x,
        throughput,
    )?;
    panel(
        &panels[1],
        "latency from the intended start (ms)",
        "ms",
        &x,
        latency,
    )?;
    root.present()?;
    Ok(())
}

/// Draws a sweep in three panels against the offered rate: the rates achieved (arrivals
/// sent, orders accepted, sagas ended, orders `CONFIRMED`, and the offered rate itself
/// as the line to reach), the p50 and p99 time from acceptance to `CONFIRMED`, and the
/// CPU used (the machine's busy cores, the system's processes, the servers).
pub fn sweep_svg(report: &SweepReport) -> Result<String, String> {
    let mut out = String::new();
    draw_sweep(report, &mut out).map_err(|e| format!("drawing the sweep chart: {e}"))?;
    Ok(out)
}

fn draw_sweep(report: &SweepReport, out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let title = format!(
        "flotilla load --sweep: mix {}, {}s per step, {} cores",
        report.scenario, report.duration_s, report.cores
    );
    let (root, panels) = canvas(out, 3, &title)?;
    let steps = &report.steps;
    let x = XAxis {
        desc: "offered arrivals/s",
        end: steps.iter().map(|s| s.offered).fold(1.0, f64::max) * 1.05,
        markers: true,
    };
    let series = |f: &dyn Fn(&super::sweep::StepReport) -> Option<f64>| -> Points {
        steps
            .iter()
            .filter_map(|s| f(s).map(|y| (s.offered, y)))
            .collect()
    };
    panel(
        &panels[0],
        "achieved against offered (per second)",
        "per second",
        &x,
        vec![
            (
                "offered",
                RGBColor(160, 160, 160),
                series(&|s| Some(s.offered)),
            ),
            ("arrivals sent", BLUE, series(&|s| Some(s.achieved))),
            ("orders accepted", CYAN, series(&|s| Some(s.accepted_rate))),
            ("sagas ended", GREEN, series(&|s| Some(s.settled_rate))),
            ("CONFIRMED", BLACK, series(&|s| Some(s.confirmed_rate))),
        ],
    )?;
    panel(
        &panels[1],
        "time from accepted to CONFIRMED (ms, server-side)",
        "ms",
        &x,
        vec![
            ("p50", GREEN, series(&|s| s.to_confirmed_ms.p50)),
            ("p99", MAGENTA, series(&|s| s.to_confirmed_ms.p99)),
        ],
    )?;
    panel(
        &panels[2],
        "CPU (cores busy)",
        "cores",
        &x,
        vec![
            (
                "machine",
                RED,
                series(&|s| s.cpu.machine_busy.map(|b| b * s.cpu.cores as f64)),
            ),
            (
                "system's processes",
                BLUE,
                series(&|s| Some(s.cpu.system_cores)),
            ),
            ("servers", CYAN, series(&|s| Some(s.cpu.servers_cores))),
            ("load generator", GREEN, series(&|s| s.cpu.generator_cores)),
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

    #[test]
    fn a_run_that_followed_orders_draws_their_line() {
        let mut r = Recorder::default();
        r.follow_orders(Duration::from_secs(60));
        r.settled(
            true,
            Some(Duration::from_millis(200)),
            Duration::from_secs(1),
        );
        let drawn = svg(&r.report(Run::example(), Duration::from_secs(2))).unwrap();
        assert!(drawn.contains("accepted → CONFIRMED"));
    }

    #[test]
    fn the_sweep_chart_has_its_three_panels() {
        let drawn = sweep_svg(&SweepReport::example()).unwrap();
        assert!(drawn.starts_with("<svg"));
        for says in ["achieved against offered", "to CONFIRMED", "CPU", "<circle"] {
            assert!(drawn.contains(says), "{says}");
        }
        let mut empty = SweepReport::example();
        empty.steps.clear();
        assert!(sweep_svg(&empty).is_ok());
    }
}
