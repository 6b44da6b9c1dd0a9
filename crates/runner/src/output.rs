//! Files a run and an experiment leave behind: PNG images, CSV tables, loss plots and contact
//! sheets, each written to a temporary file and renamed into place.

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::fsutil::write_atomic;
use crate::{Error, Result};

/// Encodes an image as PNG, with the best compression and adaptive filtering (outputs are
/// written once and committed or kept, so smaller files are worth the encoding time); `path` only
/// names the file in the error.
pub fn encode_png(img: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Run(format!("cannot encode {}: {e}", path.display())))?;
    Ok(bytes)
}

/// Encodes an image as PNG and writes it atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    write_atomic(path, &encode_png(img, path)?)
}

/// Writes rows of strings as CSV, atomically.
pub fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::Run(format!("cannot write {}: {e}", path.display()));
    w.write_record(header).map_err(bad)?;
    for r in rows {
        w.write_record(r).map_err(bad)?;
    }
    let bytes = w.into_inner().map_err(|e| Error::Run(format!("cannot write {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans, embedded: no system font library is needed at run time.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One line of a log-scale plot.
pub struct Series {
    /// Legend.
    pub name: String,
    /// (x, y) points; non-positive y are skipped (log scale).
    pub points: Vec<(f64, f64)>,
    /// Its colour; `None`: the next of the categorical palette.
    pub color: Option<[u8; 3]>,
}

/// The viridis colour scale at `t` in 0 … 1 (dark purple to yellow), interpolated between five
/// of its stops.
pub fn viridis(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let k = (x.floor() as usize).min(3);
    let f = x - k as f64;
    let c = |i: usize| (STOPS[k][i] + (STOPS[k + 1][i] - STOPS[k][i]) * f).round() as u8;
    [c(0), c(1), c(2)]
}

/// A log-scale line plot of `series` against `x_label`, written as PNG.
pub fn plot_log(path: &Path, title: &str, x_label: &str, series: &[Series], size: (u32, u32)) -> Result<()> {
    plot_log_marked(path, title, x_label, series, &[], size)
}

/// [`plot_log`] with a labelled vertical dashed line at each of `marks` (x, label).
pub fn plot_log_marked(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    marks: &[(f64, String)],
    size: (u32, u32),
) -> Result<()> {
    font();
    let (w, h) = size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw_log(&root, title, x_label, series, marks)
            .map_err(|e| Error::Run(format!("cannot draw {}: {e}", path.display())))?;
        root.present().map_err(|e| Error::Run(format!("cannot draw {}: {e}", path.display())))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| Error::Run("plot buffer".into()))?;
    save_png(&img, path)
}

/// The lowest value a log axis shows: what carries information, not a term's start at (nearly)
/// zero. A tenth of the smallest final value of the series, and at most six decades under the
/// largest value.
fn log_floor(series: &[Series], y_max: f64) -> f64 {
    let finals = series
        .iter()
        .filter_map(|s| s.points.iter().rev().map(|p| p.1).find(|y| *y > 0.0 && y.is_finite()))
        .fold(f64::INFINITY, f64::min);
    (finals / 10.0).min(y_max).max(y_max * 1e-6)
}

fn draw_log<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    series: &[Series],
    marks: &[(f64, String)],
) -> std::result::Result<(), Box<dyn std::error::Error + 'static>>
where
    DB::ErrorType: 'static,
{
    let pts = || series.iter().flat_map(|s| s.points.iter()).filter(|(_, y)| *y > 0.0 && y.is_finite());
    let x_max = pts().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = pts().map(|p| p.1).fold(0.0f64, f64::max);
    let y_min = pts().map(|p| p.1).fold(f64::INFINITY, f64::min).max(log_floor(series, y_max));
    let (y_min, y_max) = if y_min.is_finite() && y_max > 0.0 { (y_min * 0.8, y_max * 1.25) } else { (1e-3, 1.0) };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        // Room for the last x label, centred on the right edge.
        .margin_right(28)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("loss (log)")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .x_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") })
        .label_style(("sans-serif", 12))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = s.color.map_or(Palette99::pick(i).to_rgba(), |[r, g, b]| RGBColor(r, g, b).to_rgba());
        // Values under the axis's floor are drawn on it.
        let data: Vec<(f64, f64)> =
            s.points.iter().filter(|(_, y)| *y > 0.0 && y.is_finite()).map(|&(x, y)| (x, y.max(y_min))).collect();
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    for (x, label) in marks {
        let grey = RGBColor(110, 110, 110);
        let dashes = (0..40).map(|k| {
            let (a, b) = (k as f64 / 40.0, (k as f64 + 0.5) / 40.0);
            let y = |t: f64| y_min * (y_max / y_min).powf(t);
            PathElement::new(vec![(*x, y(a)), (*x, y(b))], grey.stroke_width(1))
        });
        chart.draw_series(dashes)?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*x, y_min * (y_max / y_min).powf(0.04)),
            ("sans-serif", 11).into_font().color(&grey),
        )))?;
    }
    if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// A contact sheet: the images in a grid of `columns`, each scaled to fit `cell` pixels on its
/// long side, with its label underneath; written as PNG to `path`.
pub fn contact_sheet(path: &Path, items: &[(RgbImage, String)], columns: usize, cell: u32) -> Result<()> {
    save_png(&render_contact_sheet(items, columns, cell)?, path)
}

/// The image of [`contact_sheet`], not written.
pub fn render_contact_sheet(items: &[(RgbImage, String)], columns: usize, cell: u32) -> Result<RgbImage> {
    font();
    let columns = columns.clamp(1, items.len().max(1));
    let rows = items.len().div_ceil(columns).max(1);
    let thumbs: Vec<RgbImage> = items.iter().map(|(img, _)| fit(img, cell)).collect();
    // Rows are as tall as the tallest thumbnail, so landscape images leave no gap above labels.
    let cell_h = thumbs.iter().map(|t| t.height()).max().unwrap_or(cell);
    let label_h = 34u32;
    let pad = 8u32;
    let (cw, ch) = (cell + pad, cell_h + label_h + pad);
    let (w, h) = (columns as u32 * cw + pad, rows as u32 * ch + pad);
    let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (i, thumb) in thumbs.iter().enumerate() {
        let (x0, y0) = ((i % columns) as u32 * cw + pad, (i / columns) as u32 * ch + pad);
        let (ox, oy) = ((cell - thumb.width()) / 2, (cell_h - thumb.height()) / 2);
        image::imageops::overlay(&mut canvas, thumb, (x0 + ox) as i64, (y0 + oy) as i64);
    }
    for (i, (_, label)) in items.iter().enumerate() {
        let (x0, y0) = ((i % columns) as u32 * cw + pad, (i / columns) as u32 * ch + pad + cell_h + 4);
        let size = if label.len() > 2 * cell as usize / 9 { 11 } else { 14 };
        let max_chars = (cell as usize * 2) / size as usize;
        for (line, text) in wrap(label, max_chars).iter().take(2).enumerate() {
            draw_text(&mut canvas, text, (x0 as f32, (y0 + line as u32 * (size + 2)) as f32), size as f32);
        }
    }
    Ok(canvas)
}

/// Draws `text` in black DejaVu Sans of `size` px with its top-left corner at `at`, each glyph
/// placed by its advance, kerning and side bearing.
pub fn draw_text(img: &mut RgbImage, text: &str, at: (f32, f32), size: f32) {
    use ab_glyph::{point, Font, FontRef, ScaleFont};
    let Ok(font) = FontRef::try_from_slice(dejavu::sans::regular()) else { return };
    let scaled = font.as_scaled(size);
    let mut pen = at.0;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(size, point(pen, at.1 + scaled.ascent()));
        if let Some(outline) = font.outline_glyph(glyph) {
            let b = outline.px_bounds();
            outline.draw(|x, y, cover| {
                let (px, py) = (b.min.x as i64 + i64::from(x), b.min.y as i64 + i64::from(y));
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    for ch in &mut p.0 {
                        *ch = (f32::from(*ch) * (1.0 - cover.min(1.0))).round() as u8;
                    }
                }
            });
        }
        pen += scaled.h_advance(id);
    }
}

fn fit(img: &RgbImage, cell: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = cell as f64 / w.max(h) as f64;
    let (nw, nh) = (((w as f64 * s).round() as u32).clamp(1, cell), ((h as f64 * s).round() as u32).clamp(1, cell));
    image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
}

fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_inclusive([' ', '+', ',']) {
        let cur = lines.last_mut().expect("one line");
        if !cur.is_empty() && cur.len() + word.len() > max {
            lines.push(word.trim_start().to_string());
        } else {
            cur.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels were drawn with each glyph at its ink's left edge (plotters' layout), so "1_"
    /// showed a gap of several pixels: the underscore now follows the digit's advance.
    #[test]
    fn labels_have_no_gaps_between_glyphs() {
        let mut img = RgbImage::from_pixel(80, 24, Rgb([255, 255, 255]));
        draw_text(&mut img, "u1_2", (2.0, 2.0), 14.0);
        let ink: Vec<bool> =
            (0..img.width()).map(|x| (0..img.height()).any(|y| img.get_pixel(x, y)[0] < 160)).collect();
        let first = ink.iter().position(|&i| i).unwrap();
        let last = ink.iter().rposition(|&i| i).unwrap();
        let widest_gap = ink[first..=last].split(|&i| i).map(<[bool]>::len).max().unwrap_or(0);
        assert!(widest_gap <= 2, "a gap of {widest_gap} px inside the label: {ink:?}");
        assert!(last - first > 20, "the label is drawn");
    }
}
