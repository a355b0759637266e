//! The PNG chart of a result (plotters): throughput per case (median bar, min–max whisker) above,
//! RTT p50 and p99 per case below. Drawn from the result's JSON, so an earlier result can be
//! drawn again. Text uses DejaVu Sans read at run time (Debian `fonts-dejavu-core`, installed by
//! scripts/bench and scripts/test-all; `$BENCH_FONT` names another TTF).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const FONT_FILES: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1400, 1100);

/// Registers the font once; `Err` says why there is none.
pub(crate) fn load_font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::env::var("BENCH_FONT").ok().filter(|p| !p.is_empty()).or_else(|| {
                FONT_FILES.iter().find(|p| Path::new(p).is_file()).map(|p| p.to_string())
            });
            let Some(path) = path else {
                return Err(format!(
                    "no font for the chart: install fonts-dejavu-core ({}) or set BENCH_FONT",
                    FONT_FILES[0]
                ));
            };
            let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a usable TrueType font"))
        })
        .clone()
}

/// One case's figures.
struct Bar {
    label: String,
    color: RGBColor,
    min: f64,
    median: f64,
    max: f64,
    vs_raw: f64,
    p50: f64,
    p99: f64,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn color(id: &str) -> RGBColor {
    match id {
        _ if id.starts_with("raw") => RGBColor(140, 140, 140),
        _ if id.starts_with("ssh") => RGBColor(230, 140, 40),
        _ if id.starts_with("rathole") => RGBColor(70, 160, 90),
        _ => RGBColor(40, 100, 200),
    }
}

fn bars(js: &Value) -> Vec<Bar> {
    let cases = js["cases"].as_array().cloned().unwrap_or_default();
    cases
        .iter()
        .map(|c| {
            let t = &c["throughput_mib_s"];
            let route = c["route"].as_str().unwrap_or("");
            let from = route.split(" → ").next().unwrap_or(route);
            Bar {
                label: format!("{} ({from})", c["label"].as_str().unwrap_or("?")),
                color: color(c["id"].as_str().unwrap_or("")),
                min: f(&t["min"]),
                median: f(&t["median"]),
                max: f(&t["max"]),
                vs_raw: f(&t["median_vs_raw_same_route"]),
                p50: f(&c["rtt_us"]["p50_median"]),
                p99: f(&c["rtt_us"]["p99_median"]),
            }
        })
        .collect()
}

type Error = Box<dyn std::error::Error>;

/// Draws the chart of result `js` into `out`.
pub(crate) fn draw(js: &Value, out: &Path) -> Result<(), Error> {
    load_font()?;
    let bars = bars(js);
    if bars.is_empty() {
        return Err("no cases in the result".into());
    }
    let root = BitMapBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "peerup NAT-lab benchmark, {}, commit {}{}: {} cores, {:.0} MiB × {} rounds",
        js["date"].as_str().and_then(|d| d.get(..10)).unwrap_or("?"),
        js["commit"].as_str().unwrap_or("?"),
        if js["smoke"] == true { " (SMOKE run)" } else { "" },
        js["cores"],
        f(&js["payload_bytes"]) / (1u64 << 20) as f64,
        js["rounds"],
    );
    let root = root.titled(&title, (FONT, 26))?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 52 / 100);
    throughput(&top, &bars)?;
    latency(&bottom, &bars, js["rtt_round_trips"].as_u64().unwrap_or(0))?;
    root.present()?;
    Ok(())
}

/// Case `i` (first case at the top) on a segmented axis that counts from the bottom.
fn row(n: usize, i: usize) -> SegmentValue<usize> {
    SegmentValue::CenterOf(n - 1 - i)
}

fn label_style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

/// One horizontal bar panel: a row per case (labelled), the x axis from 0 to a little past `top`.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    top: f64,
    bars: &[Bar],
    x_desc: &str,
) -> Result<Panel<'a, 'b>, Error> {
    let n = bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(420)
        .build_cartesian_2d(0.0..top * 1.22, (0..n - 1).into_segmented())?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) if *k < n => labels[n - 1 - k].clone(),
            _ => String::new(),
        })
        .x_desc(x_desc)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 16))
        .draw()?;
    Ok(chart)
}

type Panel<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordusize>>,
>;

fn throughput(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    bars: &[Bar],
) -> Result<(), Error> {
    let n = bars.len();
    let top =
        bars.iter().map(|b| b.max.max(b.median)).filter(|x| x.is_finite()).fold(1.0, f64::max);
    let caption = "Throughput, MiB/s: median, whiskers min–max over the rounds";
    let mut chart = panel(area, caption, top, bars, "MiB/s")?;
    for (i, b) in bars.iter().enumerate().filter(|(_, b)| b.median.is_finite()) {
        chart.draw_series(
            Histogram::horizontal(&chart)
                .style(b.color.filled())
                .margin(10)
                .data([(SegmentValue::Exact(n - 1 - i), b.median)]),
        )?;
        if b.min.is_finite() && b.max.is_finite() && b.max > b.min {
            chart.draw_series([ErrorBar::new_horizontal(
                row(n, i),
                b.min,
                b.median,
                b.max,
                BLACK.stroke_width(2),
                14,
            )])?;
        }
        let text = if b.vs_raw.is_finite() {
            format!("{:.0}  ({:.2}× raw)", b.median, b.vs_raw)
        } else {
            format!("{:.0}", b.median)
        };
        let x = b.max.max(b.median) + top * 0.015;
        chart.draw_series([Text::new(text, (x, row(n, i)), label_style(16))])?;
    }
    Ok(())
}

fn latency(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    bars: &[Bar],
    round_trips: u64,
) -> Result<(), Error> {
    let n = bars.len();
    let top = bars.iter().map(|b| b.p99.max(b.p50)).filter(|x| x.is_finite()).fold(1.0, f64::max);
    let caption = format!(
        "Round-trip time of a 1-byte request, µs ({round_trips} round trips): p50 dark, p99 light"
    );
    let mut chart = panel(area, &caption, top, bars, "µs")?;
    for (i, b) in bars.iter().enumerate() {
        let at = SegmentValue::Exact(n - 1 - i);
        // An opaque light shade, so the grid does not show through.
        let shade = |c: u8| c + ((255 - c) as f64 * 0.65) as u8;
        let light = RGBColor(shade(b.color.0), shade(b.color.1), shade(b.color.2));
        if b.p99.is_finite() {
            chart.draw_series(
                Histogram::horizontal(&chart).style(light.filled()).margin(8).data([(at, b.p99)]),
            )?;
        }
        if b.p50.is_finite() {
            chart.draw_series(
                Histogram::horizontal(&chart)
                    .style(b.color.filled())
                    .margin(16)
                    .data([(SegmentValue::Exact(n - 1 - i), b.p50)]),
            )?;
        }
        if b.p50.is_finite() || b.p99.is_finite() {
            let x = b.p99.max(b.p50) + top * 0.01;
            let text = format!("{:.0} / {:.0}", b.p50, b.p99);
            chart.draw_series([Text::new(text, (x, row(n, i)), label_style(16))])?;
        }
    }
    Ok(())
}
