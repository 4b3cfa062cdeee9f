//! The `--svg` chart: successful requests per second over time (one point per 50 ms bucket),
//! failed requests as red bars, each upgrade as a dashed line at the moment its generation was
//! started.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Report;

const SIZE: (u32, u32) = (1100, 520);
const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
const UPGRADE_COLOR: RGBColor = RGBColor(90, 90, 90);

/// Writes the chart of `report` to `path`.
pub fn write_svg(path: &Path, report: &Report) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw(&root, report).map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'c, 'a> = ChartContext<'c, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Failure<'a> = DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>;

/// At most this many upgrades are labelled with their generation (every k-th past it).
const LABELS: usize = 25;

fn draw<'a>(root: &Area<'a>, report: &Report) -> Result<(), Failure<'a>> {
    root.fill(&WHITE)?;
    let buckets = &report.throughput.buckets;
    let width_s = report.throughput.bucket_ms as f64 / 1e3;
    let x_max = (report.duration_ms / 1e3).max(width_s);
    let peak = (0..buckets.len()).map(|i| buckets.ok_rate(i).max(buckets.failed_rate(i))).fold(1.0, f64::max);
    let y_max = peak * 1.2;
    let mut chart = ChartBuilder::on(root)
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}

/// Successful requests per second, one point per bucket.
fn draw_throughput<'a>(chart: &mut Chart<'_, 'a>, report: &Report, x_max: f64) -> Result<(), Failure<'a>> {
    let buckets = &report.throughput.buckets;
    let width_s = report.throughput.bucket_ms as f64 / 1e3;
    // The last bucket is cut short by the end of the load: leave it out.
    let whole = ((x_max / width_s) as usize).min(buckets.len());
    let ok = (0..whole).map(|i| ((i as f64 + 0.5) * width_s, buckets.ok_rate(i)));
    chart
        .draw_series(AreaSeries::new(ok, 0.0, OK_COLOR.mix(0.15)).border_style(OK_COLOR.stroke_width(2)))?
        .label("succeeded")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], OK_COLOR.stroke_width(2)));
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
    chart
        .draw_series(bars)?
        .label(format!("failed ({})", report.requests.failed))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RED.filled()));
    Ok(())
}

/// A dashed line where each generation was started (red if its upgrade did not complete),
/// labelled with its number.
fn draw_upgrades<'a>(chart: &mut Chart<'_, 'a>, report: &Report, y_max: f64) -> Result<(), Failure<'a>> {
    let every = report.upgrades.len().div_ceil(LABELS).max(1);
    for (i, upgrade) in report.upgrades.iter().enumerate() {
        let x = upgrade.started_at_ms / 1e3;
        let color = if upgrade.completed { UPGRADE_COLOR } else { RED };
        let line = [(x, 0.0), (x, y_max * 0.94)];
        chart.draw_series(DashedLineSeries::new(line, 4, 4, color.stroke_width(1)))?;
        if (i + 1) % every == 0 {
            let font = ("sans-serif", 12).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Top));
            let label = Text::new(format!("g{}", upgrade.generation), (x, y_max * 0.985), font);
            chart.draw_series(std::iter::once(label))?;
        }
    }
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("a new generation started (dashed)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], UPGRADE_COLOR.stroke_width(1)));
    Ok(())
}

fn caption(report: &Report) -> String {
    let r = &report.requests;
    format!(
        "tableroll drill: {} upgrades, {} clients, {} requests, {} failed ({})",
        report.upgrades.len(),
        report.settings.clients,
        r.sent,
        r.failed,
        report.result
    )
}
