//! The training-curve PNG: training loss per epoch (left) and validation NDCG@10 / HR@10 under
//! both protocols per evaluation (right).
//!
//! Text needs a TrueType font: `$SASREC_FONT`, else DejaVu Sans from the usual system places
//! (Debian's `fonts-dejavu-core`, installed by scripts/setup.sh). Without one the plot is
//! skipped with a warning; training never fails because of it.

use std::path::Path;
use std::sync::OnceLock;

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

/// Renders the PNG into `tmp`: the training loss on the left, validation on the right.
fn render(tmp: &Path, title: &str, state: &LoopState) -> DrawResult {
    let root = BitMapBackend::new(tmp, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(600);
    draw_loss(&left, state)?;
    draw_validation(&right, state)?;
    root.present()?;
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
    let n = state.losses.len().max(2) as f64;
    let mut c = ChartBuilder::on(area)
        .caption("validation", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n, 0f64..1f64)?;
    c.configure_mesh().x_desc("epoch").y_desc("metric").draw()?;
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
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
