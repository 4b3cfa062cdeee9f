//! The `--svg` chart: successful requests per second over time (one point per 50 ms bucket),
//! failed requests as red bars, each upgrade as a dashed line at the moment its generation was
//! started, each planned crash as a dark red line and each rollback as a green one. The legend has a band of its own below the plot, so that it never covers data.

use std::io::ErrorKind;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{count, Report};

/// The whole picture, the legend's band included.
const SIZE: (u32, u32) = (1100, 560);
/// The height of the band below the plot that holds the legend.
const LEGEND_BAND: u32 = 40;
/// Where the legend starts from the left (under the plot's y axis).
const LEGEND_LEFT: i32 = 88;
const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
const UPGRADE_COLOR: RGBColor = RGBColor(90, 90, 90);
const CRASH_COLOR: RGBColor = RGBColor(140, 0, 0);
const ROLLBACK_COLOR: RGBColor = RGBColor(0, 150, 60);

/// Creates (or truncates) the chart's file before the drill starts, so that a path that cannot
/// be written is refused at once; the reason, for people.
pub fn prepare(path: &Path) -> Result<(), String> {
    match std::fs::File::create(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Err(format!("cannot create the chart: the directory {} does not exist", dir.display()))
        }
        Err(e) => Err(format!("cannot create the chart: {e}")),
    }
}

/// Writes the chart of `report` to `path`.
pub fn write_svg(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, report).map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    std::fs::write(path, svg)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'c, 'a> = ChartContext<'c, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Failure<'a> = DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>;

/// At most this many upgrades are labelled with their generation (every k-th past it).
const LABELS: usize = 25;

fn draw<'a>(root: &Area<'a>, report: &Report) -> Result<(), Failure<'a>> {
    root.fill(&WHITE)?;
    let (plot, band) = root.split_vertically(SIZE.1 - LEGEND_BAND);
    let buckets = &report.throughput.buckets;
    let width_s = report.throughput.bucket_ms as f64 / 1e3;
    let x_max = (report.duration_ms / 1e3).max(width_s);
    let peak = (0..buckets.len()).map(|i| buckets.ok_rate(i).max(buckets.failed_rate(i))).fold(1.0, f64::max);
    let y_max = peak * 1.2;
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption(report), ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("requests per second (50 ms buckets)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_throughput(&mut chart, report, x_max)?;
    draw_failures(&mut chart, report)?;
    draw_upgrades(&mut chart, report, y_max)?;
    draw_crashes(&mut chart, report, y_max)?;
    draw_legend(&band, report)
}

/// One entry of the legend: its sample, then its text.
enum Sample {
    Line(RGBColor),
    Bar(RGBColor),
    Dashed(RGBColor),
}

/// The legend, in a row across its own band below the plot.
fn draw_legend<'a>(band: &Area<'a>, report: &Report) -> Result<(), Failure<'a>> {
    let mut entries = vec![
        (Sample::Line(OK_COLOR), "succeeded".to_string()),
        (Sample::Bar(RED), format!("failed ({})", count(report.requests.failed, "request", "requests"))),
        (Sample::Dashed(UPGRADE_COLOR), "a new generation started".to_string()),
    ];
    if report.upgrades.iter().any(|u| !u.completed && !u.crashed) {
        entries.push((Sample::Dashed(RED), "its upgrade did not complete".to_string()));
    }
    if !report.crashes.is_empty() {
        entries.push((Sample::Line(CRASH_COLOR), "a generation crashed (x)".to_string()));
    }
    if !report.rollbacks.is_empty() {
        entries.push((Sample::Line(ROLLBACK_COLOR), "rollback: owner again (r)".to_string()));
    }
    let font = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let y = (LEGEND_BAND / 2) as i32;
    let mut x = LEGEND_LEFT;
    for (sample, text) in entries {
        match sample {
            Sample::Line(color) => {
                band.draw(&PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)))?
            }
            Sample::Bar(color) => {
                band.draw(&Rectangle::new([(x, y - 6), (x + 24, y + 6)], color.filled()))?
            }
            Sample::Dashed(color) => {
                for dash in (0..24).step_by(8) {
                    band.draw(&PathElement::new(
                        vec![(x + dash, y), (x + dash + 4, y)],
                        color.stroke_width(1),
                    ))?;
                }
            }
        }
        x += 30;
        let (width, _) = band.estimate_text_size(&text, &font)?;
        band.draw(&Text::new(text, (x, y), font.clone()))?;
        x += width as i32 + 32;
    }
    Ok(())
}

/// Successful requests per second, one point per bucket.
fn draw_throughput<'a>(chart: &mut Chart<'_, 'a>, report: &Report, x_max: f64) -> Result<(), Failure<'a>> {
    let buckets = &report.throughput.buckets;
    let width_s = report.throughput.bucket_ms as f64 / 1e3;
    // The last bucket is cut short by the end of the load: leave it out.
    let whole = ((x_max / width_s) as usize).min(buckets.len());
    let ok = (0..whole).map(|i| ((i as f64 + 0.5) * width_s, buckets.ok_rate(i)));
    chart.draw_series(AreaSeries::new(ok, 0.0, OK_COLOR.mix(0.15)).border_style(OK_COLOR.stroke_width(2)))?;
    Ok(())
}

/// Failed requests per second, as red bars over their buckets.
fn draw_failures<'a>(chart: &mut Chart<'_, 'a>, report: &Report) -> Result<(), Failure<'a>> {
    let buckets = &report.throughput.buckets;
    let width_s = report.throughput.bucket_ms as f64 / 1e3;
    let bars = (0..buckets.len()).filter(|&i| buckets.failed[i] > 0).map(|i| {
        let x = i as f64 * width_s;
        Rectangle::new([(x, 0.0), (x + width_s, buckets.failed_rate(i))], RED.mix(0.75).filled())
    });
    chart.draw_series(bars)?;
    Ok(())
}

/// A dashed line where each generation was started (red if its upgrade did not complete),
/// labelled with its number.
fn draw_upgrades<'a>(chart: &mut Chart<'_, 'a>, report: &Report, y_max: f64) -> Result<(), Failure<'a>> {
    let every = report.upgrades.len().div_ceil(LABELS).max(1);
    for (i, upgrade) in report.upgrades.iter().enumerate() {
        let x = upgrade.started_at_ms / 1e3;
        // A crashed generation's own upgrade is not expected to complete: its crash is marked.
        let color = if upgrade.completed || upgrade.crashed { UPGRADE_COLOR } else { RED };
        let line = [(x, 0.0), (x, y_max * 0.94)];
        chart.draw_series(DashedLineSeries::new(line, 4, 4, color.stroke_width(1)))?;
        if (i + 1) % every == 0 {
            let font = ("sans-serif", 12).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Top));
            let label = Text::new(format!("g{}", upgrade.generation), (x, y_max * 0.985), font);
            chart.draw_series(std::iter::once(label))?;
        }
    }
    Ok(())
}

/// A line at each planned crash, labelled `xN` on its left, and one at each rollback, labelled
/// `rN` on its right (N the generation that crashed, or that is the owner again).
fn draw_crashes<'a>(chart: &mut Chart<'_, 'a>, report: &Report, y_max: f64) -> Result<(), Failure<'a>> {
    let crashes =
        report.crashes.iter().map(|c| (c.at_ms, format!("x{}", c.generation), CRASH_COLOR, HPos::Right));
    let rollbacks =
        report.rollbacks.iter().map(|r| (r.at_ms, format!("r{}", r.generation), ROLLBACK_COLOR, HPos::Left));
    for (at_ms, label, color, side) in crashes.chain(rollbacks) {
        let x = at_ms / 1e3;
        chart.draw_series(LineSeries::new([(x, 0.0), (x, y_max * 0.9)], color.stroke_width(2)))?;
        let font = ("sans-serif", 12).into_font().color(&color).pos(Pos::new(side, VPos::Top));
        chart.draw_series(std::iter::once(Text::new(label, (x, y_max * 0.93), font)))?;
    }
    Ok(())
}

fn caption(report: &Report) -> String {
    let r = &report.requests;
    format!(
        "tableroll drill: {}, {}, {}, {} failed ({})",
        count(report.upgrades.len() as u64, "upgrade", "upgrades"),
        count(report.settings.clients, "client", "clients"),
        count(r.sent, "request", "requests"),
        r.failed,
        report.result
    )
}
