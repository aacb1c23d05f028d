//! The run's chart as a PNG: train and dev loss against the optimizer step, and the dev generation
//! metric on a secondary axis, drawn by `plotters` on its bitmap backend.

use plotters::chart::DualCoordChartContext;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans, embedded so that text renders on machines without system fonts (plotters' `ab_glyph`
/// feature never looks fonts up). License: Bitstream Vera / DejaVu license, which permits embedding.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family plotters asks for by default (captions, tick labels, legend), so registering this one
/// name covers all text.
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 540);

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const DEV_COLOR: RGBColor = RGBColor(214, 39, 40);
const METRIC_COLOR: RGBColor = RGBColor(44, 160, 44);

/// A chart that could not be drawn, with the path it was meant for.
#[derive(Debug, thiserror::Error)]
#[error("cannot plot {}: {reason}", path.display())]
pub struct PlotError {
    pub path: std::path::PathBuf,
    pub reason: String,
}

/// The chart: loss on the left axis, the dev metric on the right, both against the step.
type Xy = Cartesian2d<RangedCoordf64, RangedCoordf64>;
type Chart<'a, 'b> = DualCoordChartContext<'a, BitMapBackend<'b>, Xy, Xy>;
type DrawResult<'a> = Result<(), Box<dyn std::error::Error + 'a>>;

/// What the run's chart shows; points are (optimizer step, value).
pub struct Curves<'a> {
    /// The caption, e.g. "prefix-tune: runs/e2e".
    pub title: &'a str,
    pub train_loss: &'a [(f64, f64)],
    pub dev_loss: &'a [(f64, f64)],
    /// The dev generation metric (name, points), e.g. ("bleu", ..), drawn on a secondary y axis at the right.
    pub dev_metric: Option<(&'a str, &'a [(f64, f64)])>,
}

/// Writes the chart to `path` (a `.png`). Non-finite points are skipped. Never panics: a failed
/// chart must not end a training run, so errors come back as one line naming the path.
pub fn plot_run(path: &Path, curves: &Curves) -> Result<(), PlotError> {
    let fail = |reason: String| PlotError { path: path.to_path_buf(), reason: reason.replace('\n', " ") };
    // plotters unwraps internally (font table lock, layout); a bug there must not crash the caller.
    match std::panic::catch_unwind(|| draw(path, curves)) {
        Ok(result) => result.map_err(|e| fail(e.to_string())),
        Err(_) => Err(fail("plotters panicked".into())),
    }
}

fn draw<'a>(path: &'a Path, curves: &Curves) -> Result<(), Box<dyn std::error::Error + 'a>> {
    register_font()?;
    let train = finite(curves.train_loss);
    let dev = finite(curves.dev_loss);
    // A metric with no points yet (no evaluation so far) gets no axis, like an absent one.
    let metric = curves.dev_metric.map(|(name, points)| (name, finite(points))).filter(|(_, points)| !points.is_empty());
    let metric_points = metric.as_ref().map_or(&[][..], |(_, points)| points.as_slice());

    let steps = padded(train.iter().chain(&dev).chain(metric_points).map(|p| p.0), 0.0);
    let losses = padded(train.iter().chain(&dev).map(|p| p.1), 0.05);
    let metric_range = padded(metric_points.iter().map(|p| p.1), 0.05);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spaced(curves.title), (FAMILY, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .right_y_label_area_size(if metric.is_some() { 65 } else { 0 })
        .build_cartesian_2d(steps.clone(), losses)?
        // Always set, so the chart has one type; its axis and series are drawn only for a metric.
        .set_secondary_coord(steps.clone(), metric_range);

    chart
        .configure_mesh()
        .x_desc(spaced("optimizer step"))
        .y_desc("loss")
        .axis_desc_style((FAMILY, 16))
        .label_style((FAMILY, 13))
        // Steps are whole numbers: with no more ticks than steps in range, none repeats a label.
        .x_labels((steps.end - steps.start + 1.0).clamp(2.0, 10.0) as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;

    draw_curves(&mut chart, &train, &dev, metric.as_ref().map(|(name, points)| (*name, points.as_slice())))?;
    root.present()?;
    Ok(())
}

/// The curves and their legend; empty curves are skipped so that the legend lists only what is
/// drawn.
fn draw_curves<'a>(chart: &mut Chart<'a, 'a>, train: &[(f64, f64)], dev: &[(f64, f64)], metric: Option<(&str, &[(f64, f64)])>) -> DrawResult<'a> {
    if !train.is_empty() {
        // A lone point makes no line: mark it.
        let marker = if train.len() == 1 { 4 } else { 0 };
        chart
            .draw_series(LineSeries::new(train.iter().copied(), TRAIN_COLOR.stroke_width(2)).point_size(marker))?
            .label(spaced("train loss"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAIN_COLOR.stroke_width(2)));
    }
    if !dev.is_empty() {
        chart
            .draw_series(LineSeries::new(dev.iter().copied(), DEV_COLOR.stroke_width(2)).point_size(4))?
            .label(spaced("dev loss"))
            .legend(|p| legend_marker(p, DEV_COLOR));
    }
    if let Some((name, points)) = metric {
        chart.configure_secondary_axes().y_desc(spaced(name)).axis_desc_style((FAMILY, 16)).label_style((FAMILY, 13)).draw()?;
        chart
            .draw_secondary_series(LineSeries::new(points.iter().copied(), METRIC_COLOR.stroke_width(2)).point_size(4))?
            .label(spaced(&format!("dev {name} (right axis)")))
            .legend(|p| legend_marker(p, METRIC_COLOR));
    }
    if !train.is_empty() || !dev.is_empty() || metric.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    Ok(())
}

/// Registers the embedded font once per process (plotters keeps a global font table).
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError { path: "(embedded font)".into(), reason: "the embedded font is invalid".into() }) }
}

/// A short line with a circle: the legend entry of a series drawn with point markers. (Not a
/// `DynElement`: plotters would then demand a `'static` backend.)
fn legend_marker<'a, DB: DrawingBackend + 'a>((x, y): (i32, i32), color: RGBColor) -> impl IntoDynElement<'a, DB, (i32, i32)> {
    EmptyElement::at((x, y)) + PathElement::new([(0, 0), (20, 0)], color.stroke_width(2)) + Circle::new((10, 0), 4, color.stroke_width(2))
}

/// plotters' ab_glyph renderer drops each glyph's left side bearing, which all but closes the gap
/// between words (plotters issue #576); an en space instead of a space restores it.
fn spaced(text: &str) -> String {
    text.replace(' ', "\u{2002}")
}

/// Points with both coordinates finite: NaN or infinite values (a diverged step) would break the
/// axis ranges.
fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
}

/// The range of `values` widened by `margin` of its span; an empty or zero-height range (no points,
/// one point, a constant curve) is widened to a non-empty one, which plotters needs.
fn padded(values: impl Iterator<Item = f64>, margin: f64) -> Range<f64> {
    // Clamped so that the span stays finite (plotters loops forever on an infinite one); points
    // beyond the limit are clipped.
    let limit = f64::MAX / 4.0;
    let (lo, hi) = values.map(|v| v.clamp(-limit, limit)).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo { (hi - lo) * margin } else { (lo.abs() * 0.1).max(1.0) };
    lo - pad..hi + pad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plots into a fresh temp dir and checks the file: a PNG of the chart's size, and not blank
    /// (a white canvas encodes to about 9 KB; axes, grid and text take it past 30 KB).
    fn plot(name: &str, curves: &Curves) {
        let dir = std::env::temp_dir().join(format!("prefix-tune-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        plot_run(&path, curves).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // PNG signature, then the IHDR chunk: length, "IHDR", width and height (big endian).
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), SIZE);
        assert!(bytes.len() > 20_000, "{name}: PNG of only {} bytes", bytes.len());
    }

    #[test]
    fn full_run_with_metric() {
        let train: Vec<_> = (0..200).map(|s| (s as f64 * 5.0, 3.0 / (1.0 + s as f64 / 20.0) + 0.1 * (s as f64).sin())).collect();
        let mut dev: Vec<_> = (1..=5).map(|i| (i as f64 * 200.0, 2.0 / i as f64 + 0.5)).collect();
        dev.push((1100.0, f64::NAN));
        let bleu: Vec<_> = (1..=5).map(|i| (i as f64 * 200.0, 10.0 * i as f64)).collect();
        plot("full", &Curves { title: "prefix-tune: runs/e2e", train_loss: &train, dev_loss: &dev, dev_metric: Some(("bleu", &bleu)) });
    }

    #[test]
    fn single_point() {
        plot("single", &Curves { title: "one step", train_loss: &[(7.0, 2.5)], dev_loss: &[(7.0, 2.5)], dev_metric: Some(("bleu", &[(7.0, 0.0)])) });
    }

    #[test]
    fn empty_dev_curves_and_constant_loss() {
        let train = [(100.0, 1.0), (101.0, 1.0), (102.0, f64::INFINITY)];
        plot("empty-dev", &Curves { title: "no dev set", train_loss: &train, dev_loss: &[], dev_metric: Some(("rouge", &[])) });
    }

    #[test]
    fn nothing_to_draw() {
        plot("nothing", &Curves { title: "", train_loss: &[], dev_loss: &[], dev_metric: None });
    }

    #[test]
    fn extreme_values() {
        // Spans that overflow f64 once made plotters loop forever.
        let train = [(-1e300, 1e300), (1e300, -1e300), (f64::MAX, f64::MIN), (0.5, 1e-300)];
        let metric = [(0.0, f64::MAX), (1.0, f64::MAX)];
        plot("extreme", &Curves { title: "extremes", train_loss: &train, dev_loss: &[(0.0, 1.0)], dev_metric: Some(("bleu", &metric)) });
    }

    #[test]
    fn error_names_the_path() {
        let curves = Curves { title: "", train_loss: &[], dev_loss: &[], dev_metric: None };
        let err = plot_run(Path::new("/nonexistent-dir/chart.png"), &curves).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-dir/chart.png") && !err.contains('\n'), "{err}");
    }
}
