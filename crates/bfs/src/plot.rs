//! The SVG figure of `bfs bench andrew`: on top, the median time of each
//! phase and of the whole run for every server, on a log scale (the compile
//! phase is a hundred times the others); below, BFS's time as a ratio to each
//! baseline, phase by phase, with the line where the two are equal.
//!
//! It draws only what the bench measured. Text goes out as SVG `<text>`
//! elements laid out by plotters' built-in estimate, so no font files are read
//! and none need to be installed (as `pbft bench`'s figure).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use plotters::prelude::*;

const WIDTH_PX: u32 = 1000;
const HEIGHT_PX: u32 = 800;
const TIMES_HEIGHT_PX: u32 = 450;
/// Width of one phase's slot on the x axis; integer, because plotters labels
/// chosen key points only on integer axes.
const SLOT_UNITS: u32 = 100;
/// Part of a slot covered by its bars; the rest separates phases.
const BARS_UNITS: u32 = 80;
/// The shortest time the log axis shows, so that a phase measured as zero
/// still has a bar's foot.
const FLOOR_S: f64 = 1e-4;

/// One server's medians: the phases in `labels`' order, then the total.
pub struct Series<'a> {
    pub server: &'a str,
    pub times: &'a [Duration],
}

/// Writes the figure to `path` as SVG. `labels` names the columns of every
/// series' `times` (the phases and the total); `series[0]` is BFS, the others
/// the baselines it is divided by.
pub fn write_svg(labels: &[&str], series: &[Series], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(TIMES_HEIGHT_PX);
    let bars: Vec<(&str, Vec<f64>)> =
        series.iter().map(|s| (s.server, s.times.iter().map(|d| d.as_secs_f64().max(FLOOR_S)).collect())).collect();
    let max_s = bars.iter().flat_map(|(_, v)| v).copied().fold(FLOOR_S, f64::max);
    draw_bars(&top, labels, &bars, "median time of each phase", "seconds (log scale)", (FLOOR_S, max_s * 4.0), true)?;
    let Some((bfs, baselines)) = series.split_first() else { return Ok(root.present()?) };
    let ratios: Vec<(String, Vec<f64>)> = baselines
        .iter()
        .map(|b| {
            let r = bfs.times.iter().zip(b.times).map(|(x, y)| x.as_secs_f64() / y.as_secs_f64().max(1e-9));
            (format!("{} / {}", bfs.server, b.server), r.collect())
        })
        .collect();
    let ratio_bars: Vec<(&str, Vec<f64>)> = ratios.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let max_ratio = ratio_bars.iter().flat_map(|(_, v)| v).copied().fold(1.0, f64::max);
    draw_bars(&bottom, labels, &ratio_bars, "BFS against each baseline", "ratio", (0.0, max_ratio * 1.3), false)?;
    // The backend also writes on drop, but swallows the error there.
    root.present()?;
    Ok(())
}

/// One bar chart: a slot per label, a bar per series in each slot. On the
/// linear (ratio) chart a line marks 1.0.
fn draw_bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    labels: &[&str],
    bars: &[(&str, Vec<f64>)],
    caption: &str,
    y_desc: &str,
    (low, high): (f64, f64),
    log: bool,
) -> Result<()> {
    let slots = labels.len() as u32;
    let centres = (0..slots).map(|i| i * SLOT_UNITS + SLOT_UNITS / 2).collect();
    let x = (0..slots * SLOT_UNITS).with_key_points(centres);
    let builder = |area| {
        let mut b = ChartBuilder::on(area);
        b.caption(caption, ("sans-serif", 20)).margin(10).x_label_area_size(30).y_label_area_size(60);
        b
    };
    let bar_units = BARS_UNITS / bars.len().max(1) as u32;
    let label_of = |x: &u32| labels.get((x / SLOT_UNITS) as usize).copied().unwrap_or_default().to_string();
    // The two axes have different types; the drawing is the same.
    macro_rules! draw {
        ($chart:expr, $fmt:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&label_of)
                .y_label_formatter(&$fmt)
                .y_desc(y_desc)
                .draw()?;
            for (k, (name, values)) in bars.iter().enumerate() {
                let style = Palette99::pick(k).filled();
                let rects = values.iter().enumerate().map(|(i, &v)| {
                    let left = i as u32 * SLOT_UNITS + (SLOT_UNITS - BARS_UNITS) / 2 + k as u32 * bar_units;
                    Rectangle::new([(left, low), (left + bar_units, v)], style)
                });
                chart
                    .draw_series(rects)?
                    .label(*name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], style));
            }
            if !log {
                let one = [(0, 1.0), (slots * SLOT_UNITS, 1.0)];
                chart.draw_series(std::iter::once(PathElement::new(one, BLACK.stroke_width(1))))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log {
        draw!(builder(area).build_cartesian_2d(x, (low..high).log_scale())?, |s: &f64| format!("{s}"));
    } else {
        draw!(builder(area).build_cartesian_2d(x, low..high)?, |r: &f64| format!("{r:.1}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 6] = ["mkdir", "copy", "stat", "read", "compile", "total"];

    fn ms(v: [u64; 6]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn plot_writes_an_svg_naming_every_phase_and_server() -> Result<()> {
        let (bfs, local, ganesha) =
            (ms([23, 176, 12, 2, 4088, 4322]), ms([30, 25, 4, 2, 3899, 3992]), ms([30, 29, 5, 0, 3682, 3752]));
        let series = [
            Series { server: "bfs", times: &bfs },
            Series { server: "no-replication", times: &local },
            Series { server: "nfs-ganesha", times: &ganesha },
        ];
        let path = std::env::temp_dir().join(format!("bfs-plot-test-{}.svg", std::process::id()));
        write_svg(&LABELS, &series, &path)?;
        let svg = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        assert!(svg.contains("<svg"), "not an SVG: {}", svg.chars().take(80).collect::<String>());
        for label in LABELS.iter().chain(&["bfs", "no-replication", "bfs / no-replication", "bfs / nfs-ganesha"]) {
            assert!(svg.contains(label), "{label} missing from the plot");
        }
        Ok(())
    }

    #[test]
    fn plot_to_a_missing_directory_is_an_error() {
        let t = ms([1, 1, 1, 1, 1, 5]);
        let path = std::env::temp_dir().join(format!("bfs-plot-missing-{}", std::process::id())).join("a.svg");
        assert!(write_svg(&LABELS, &[Series { server: "bfs", times: &t }], &path).is_err());
    }
}
