//! The training-curve PNG: training loss per epoch (left), validation NDCG@10 / HR@10 under
//! both protocols per evaluation (middle) and, per `--metrics_k` cut-off, the test NDCG@k and
//! coverage@k of full ranking (right).
//!
//! Text needs a TrueType font: `$SASREC_FONT`, else DejaVu Sans from the usual system places
//! (Debian's `fonts-dejavu-core`, installed by scripts/setup.sh). Without one the plot is
//! skipped with a warning; training never fails because of it.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{failed, Result};
use crate::evaluate::PartMetrics;
use crate::state::LoopState;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var("SASREC_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the curves of `state` into `path` (written atomically, as every run-directory file).
pub fn draw(path: &Path, title: &str, state: &LoopState) -> Result<()> {
    if !font_ready() {
        return Err(failed!(
            "no TrueType font found (set SASREC_FONT or install fonts-dejavu-core)"
        ));
    }
    sasrec_shared::io::write_atomic_path(path, |tmp| render(tmp, title, state))?;
    Ok(())
}

/// plotters' errors, typed by its backend, as trait objects.
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Renders the PNG into `tmp`: the training loss, validation, then the test cut-offs.
fn render(tmp: &Path, title: &str, state: &LoopState) -> DrawResult {
    let root = BitMapBackend::new(tmp, (1800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((1, 3));
    draw_loss(&panels[0], state)?;
    draw_validation(&panels[1], state)?;
    draw_cutoffs(&panels[2], state)?;
    root.present()?;
    Ok(())
}

/// A chart of metrics in [0, 1] over the epochs of `state`.
fn metric_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    state: &LoopState,
) -> Result<MetricChart<'a, 'b>, Box<dyn std::error::Error>> {
    let n = state.losses.len().max(2) as f64;
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n, 0f64..1f64)?;
    c.configure_mesh().x_desc("epoch").y_desc("metric").draw()?;
    Ok(c)
}

/// The chart type of [`metric_chart`].
type MetricChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend box of a chart.
fn draw_legend<'a: 'b, 'b>(c: &mut MetricChart<'b, 'a>) -> DrawResult {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The training loss per epoch.
fn draw_loss(area: &DrawingArea<BitMapBackend, Shift>, state: &LoopState) -> DrawResult {
    let n = state.losses.len().max(2) as f64;
    let (lo, hi) = state
        .losses
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo <= hi {
        (lo * 0.95, hi * 1.05 + 1e-9)
    } else {
        (0.0, 1.0)
    };
    let mut c = ChartBuilder::on(area)
        .caption("training loss", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64..n, lo..hi)?;
    c.configure_mesh().x_desc("epoch").y_desc("loss").draw()?;
    c.draw_series(LineSeries::new(
        state
            .losses
            .iter()
            .enumerate()
            .map(|(i, &l)| ((i + 1) as f64, l)),
        &BLUE,
    ))?;
    Ok(())
}

/// Validation NDCG@10 and HR@10 under both protocols at each evaluated epoch.
fn draw_validation(area: &DrawingArea<BitMapBackend, Shift>, state: &LoopState) -> DrawResult {
    let mut c = metric_chart(area, "validation", state)?;
    type Pick = fn(&PartMetrics) -> f64;
    let series: [(Pick, &str, RGBColor); 4] = [
        (|m| m.sampled.ndcg, "NDCG@10 (sampled)", RED),
        (|m| m.sampled.hr, "HR@10 (sampled)", MAGENTA),
        (|m| m.full.ndcg, "NDCG@10 (full ranking)", GREEN),
        (|m| m.full.hr, "HR@10 (full ranking)", CYAN),
    ];
    for (pick, label, color) in series {
        let pts: Vec<(f64, f64)> = state
            .evals
            .iter()
            .map(|e| (e.epoch as f64, pick(&e.valid)))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), &color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    draw_legend(&mut c)
}

/// Test NDCG@k (solid) and coverage@k (dashed) of full ranking at each cut-off of the
/// evaluations that report cut-offs.
fn draw_cutoffs(area: &DrawingArea<BitMapBackend, Shift>, state: &LoopState) -> DrawResult {
    let mut c = metric_chart(area, "test, full ranking, per cut-off", state)?;
    let ks: Vec<usize> = state
        .evals
        .last()
        .map(|e| e.test.cutoffs.iter().map(|x| x.k).collect())
        .unwrap_or_default();
    for (i, &k) in ks.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = |pick: fn(&crate::evaluate::Cutoff) -> f64| -> Vec<(f64, f64)> {
            state
                .evals
                .iter()
                .filter_map(|e| {
                    let at = e.test.cutoffs.iter().find(|x| x.k == k)?;
                    Some((e.epoch as f64, pick(at)))
                })
                .collect()
        };
        c.draw_series(LineSeries::new(points(|x| x.full.ndcg), color))?
            .label(format!("NDCG@{k}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        c.draw_series(DashedLineSeries::new(
            points(|x| x.lists.coverage),
            6,
            4,
            color.into(),
        ))?
        .label(format!("coverage@{k}"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y)], color));
    }
    draw_legend(&mut c)
}
