//! The SVG figure of `pbft bench`: median latency of each workload, replicated
//! beside unreplicated, and below it one panel per workload of throughput
//! against the number of closed-loop clients.
//!
//! It draws only what the bench measured: one bar per row, one line per row's
//! sweep. Text goes out as SVG `<text>` elements laid out by plotters' built-in
//! estimate, so no font files are read and none need to be installed.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::bench::{configuration, Row};

const WIDTH_PX: u32 = 1200;
const HEIGHT_PX: u32 = 900;
const LATENCY_HEIGHT_PX: u32 = 450;
/// Width of one workload's slot on the latency chart's x axis. The axis is
/// integer because plotters labels chosen key points only on integer axes
/// (`with_key_points` over f64 has no label formatter).
const SLOT_UNITS: u32 = 100;
/// Part of a slot covered by its bars; the rest separates workloads.
const BARS_UNITS: u32 = 80;

/// Writes the figure for `rows` to `path` as SVG.
pub fn write_svg(rows: &[Row], path: &Path) -> Result<()> {
    let workloads = distinct(rows.iter().map(|r| r.workload));
    let configurations = distinct(rows.iter().map(|r| r.replicas));
    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(LATENCY_HEIGHT_PX);
    draw_latency(&top, rows, &workloads, &configurations)?;
    let panels = bottom.split_evenly((1, workloads.len().max(1)));
    for (panel, workload) in panels.iter().zip(&workloads) {
        draw_throughput(panel, rows, workload, &configurations)?;
    }
    // The backend also writes on drop, but swallows the error there.
    root.present()?;
    Ok(())
}

/// The values in first-seen order, so the figure follows the bench's order.
fn distinct<T: PartialEq>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// Each configuration keeps one colour in every chart, so one legend serves all.
fn colour(configurations: &[usize], replicas: usize) -> PaletteColor<Palette99> {
    Palette99::pick(configurations.iter().position(|&c| c == replicas).unwrap_or(0))
}

fn draw_latency(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    rows: &[Row],
    workloads: &[&'static str],
    configurations: &[usize],
) -> Result<()> {
    let max_us = rows.iter().map(|r| r.fig.p50_us).fold(0.0, f64::max);
    let slots = workloads.len() as u32;
    // One axis label under the centre of each workload's slot.
    let centres = (0..slots).map(|i| i * SLOT_UNITS + SLOT_UNITS / 2).collect();
    let x = (0..slots * SLOT_UNITS).with_key_points(centres);
    let mut chart = ChartBuilder::on(area)
        .caption("median latency, one client", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        // The headroom above the tallest bar is where the legend goes.
        .build_cartesian_2d(x, 0.0..(max_us * 1.25).max(1.0))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| workloads.get((x / SLOT_UNITS) as usize).copied().unwrap_or_default().to_string())
        .y_label_formatter(&|us| format!("{us:.0}"))
        .y_desc("p50 latency (us)")
        .draw()?;
    let bar_units = BARS_UNITS / configurations.len().max(1) as u32;
    for (slot, &replicas) in configurations.iter().enumerate() {
        let style = colour(configurations, replicas).filled();
        let bars = rows.iter().filter(|r| r.replicas == replicas).filter_map(|r| {
            let i = workloads.iter().position(|w| *w == r.workload)? as u32;
            let left = i * SLOT_UNITS + (SLOT_UNITS - BARS_UNITS) / 2 + slot as u32 * bar_units;
            Some(Rectangle::new([(left, 0.0), (left + bar_units, r.fig.p50_us)], style))
        });
        chart
            .draw_series(bars)?
            .label(configuration(replicas))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_throughput(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    rows: &[Row],
    workload: &str,
    configurations: &[usize],
) -> Result<()> {
    let points = rows.iter().flat_map(|r| &r.fig.sweep);
    let max_clients = points.clone().map(|&(c, _)| c).max().unwrap_or(1);
    let min_clients = points.clone().map(|&(c, _)| c).min().unwrap_or(1);
    // One y scale for every panel, so panels compare at a glance.
    let max_ops = points.map(|&(_, ops)| ops).fold(0.0, f64::max);
    let counts = distinct(rows.iter().flat_map(|r| r.fig.sweep.iter().map(|&(c, _)| c)));
    // Labels at the measured counts only; the margin keeps a one-count sweep's
    // range from being empty.
    let x = (min_clients.saturating_sub(1)..max_clients + 1).with_key_points(counts);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{workload}: throughput"), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(x, 0.0..(max_ops * 1.1).max(1.0))?;
    chart.configure_mesh().x_desc("clients").y_label_formatter(&|ops| format!("{ops:.0}")).y_desc("ops/s").draw()?;
    for &replicas in configurations {
        let style = colour(configurations, replicas).stroke_width(2);
        let Some(row) = rows.iter().find(|r| r.replicas == replicas && r.workload == workload) else { continue };
        let mut sweep = row.fig.sweep.clone();
        // `--clients` may list counts in any order; a line must run left to right.
        sweep.sort_by_key(|&(clients, _)| clients);
        chart.draw_series(LineSeries::new(sweep.iter().copied(), style))?;
        chart.draw_series(sweep.iter().map(|&p| Circle::new(p, 3, style.filled())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Figures;

    fn row(replicas: usize, workload: &'static str, p50_us: f64, sweep: Vec<(u32, f64)>) -> Row {
        Row { replicas, workload, fig: Figures { p50_us, sweep, ..Default::default() } }
    }

    fn rows() -> Vec<Row> {
        vec![
            row(4, "0/0 rw", 310.0, vec![(1, 3000.0), (4, 9000.0), (16, 12000.0)]),
            row(4, "4/0 rw", 520.0, vec![(1, 1900.0), (4, 5000.0), (16, 6100.0)]),
            row(1, "0/0 rw", 90.0, vec![(1, 11000.0), (4, 30000.0), (16, 41000.0)]),
            row(1, "4/0 rw", 150.0, vec![(1, 6500.0), (4, 17000.0), (16, 21000.0)]),
        ]
    }

    #[test]
    fn plot_writes_an_svg_naming_every_workload() -> Result<()> {
        let path = std::env::temp_dir().join(format!("pbft-plot-test-{}.svg", std::process::id()));
        write_svg(&rows(), &path)?;
        let svg = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        let body = if svg.starts_with("<?xml") { &svg[svg.find("?>").map_or(0, |i| i + 2)..] } else { &svg[..] };
        assert!(body.trim_start().starts_with("<svg"), "not an SVG: {}", svg.chars().take(80).collect::<String>());
        for label in ["0/0 rw", "4/0 rw", "replicated (n = 4)", "unreplicated"] {
            assert!(svg.contains(label), "{label} missing from the plot");
        }
        Ok(())
    }

    #[test]
    fn plot_to_a_missing_directory_is_an_error() {
        let path = std::env::temp_dir().join(format!("pbft-plot-missing-{}", std::process::id())).join("bench.svg");
        assert!(write_svg(&rows(), &path).is_err());
    }
}
