//! `runner report`: the figure documents (`docs/ablations.md`, `docs/controls.md`) and their
//! figures from their experiments' results.
//!
//! The prose of document `DOC` lives in `docs/DOC.template.md`; this fills its placeholders from
//! the results: `{{meta EXP}}` (size, iterations, runs, time), `{{grid EXP}}` (a contact sheet,
//! written to `docs/DOC/EXP.png`), `{{curves EXP}}` (`docs/DOC/EXP_curves.png`), `{{table EXP}}`
//! (final losses, iterations, evaluations, seconds), `{{stages EXP}}` (each stage of each run:
//! size, steps, evaluations, seconds), `{{crop EXP RUN}}` (a full-resolution crop of a run's
//! output, `docs/DOC/EXP_RUN_crop.png`) and `{{total}}` (the time of everything).

use std::path::{Path, PathBuf};

use crate::output::{encode_png, plot_log, render_contact_sheet, Series};
use crate::{Error, Result};

/// The ablation experiments, in the order of the report.
pub const ABLATIONS: [&str; 6] = ["style_transfer", "content_recon", "style_recon", "init", "content_layer", "ratio"];

/// The experiments of Gatys et al. 2017's controls, in the order of the report.
pub const CONTROLS: [&str; 4] = ["style_loss", "colour", "scale", "spatial"];

/// The high-resolution experiments, in the order of the report.
pub const HIGHRES: [&str; 2] = ["multiscale", "highres"];

/// A document made of experiments' figures.
#[derive(Clone, Copy, Debug)]
pub struct Document {
    /// Its name: `docs/NAME.md` from `docs/NAME.template.md`, figures in `docs/NAME/`.
    pub name: &'static str,
    /// Its experiments.
    pub experiments: &'static [&'static str],
    /// The script that produces their results.
    pub script: &'static str,
}

/// Every document `runner report` builds.
pub const DOCUMENTS: [Document; 3] = [
    Document { name: "ablations", experiments: &ABLATIONS, script: "scripts/ablations.sh" },
    Document { name: "controls", experiments: &CONTROLS, script: "scripts/controls.sh" },
    Document { name: "highres", experiments: &HIGHRES, script: "scripts/highres.sh" },
];

/// The side of a committed full-resolution crop.
const CROP: (u32, u32) = (448, 280);

/// Long side of each image in the committed contact sheets, at most.
const SHEET_CELL: u32 = 192;
/// Committed figures stay under this size: a sheet whose PNG is larger is redrawn with smaller
/// cells (textured style transfers compress poorly, so the limit depends on the images).
const SHEET_MAX_BYTES: usize = 300 * 1024;
/// The smallest cell the size limit may shrink a sheet to.
const SHEET_MIN_CELL: u32 = 128;

/// The contact sheet's PNG with the largest cell (from [`SHEET_CELL`] down by 8 px) that fits
/// [`SHEET_MAX_BYTES`], or the smallest allowed one.
fn sheet_png(path: &Path, items: &[(image::RgbImage, String)], columns: usize) -> Result<Vec<u8>> {
    let mut cell = SHEET_CELL;
    loop {
        let png = encode_png(&render_contact_sheet(items, columns, cell)?, path)?;
        if png.len() <= SHEET_MAX_BYTES || cell <= SHEET_MIN_CELL {
            return Ok(png);
        }
        cell -= 8;
    }
}

struct RunRow {
    name: String,
    label: String,
    status: String,
    total: String,
    content: String,
    style: String,
    iterations: String,
    evals: String,
    seconds: f64,
    s_per_eval: String,
    device: String,
    size: (u32, u32),
    curve: Vec<(f64, f64)>,
}

fn read_experiment(results: &Path, exp: &str, script: &str) -> Result<Vec<RunRow>> {
    let dir = results.join(exp);
    let path = dir.join("summary.csv");
    let mut r = csv::Reader::from_path(&path).map_err(|e| {
        Error::Run(format!("{}: {e}; run {script} (or runner experiments/{exp}.toml) first", path.display()))
    })?;
    let headers = r.headers().map_err(|e| Error::Run(format!("{}: {e}", path.display())))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
        let get = |name: &str| col(name).and_then(|i| rec.get(i)).unwrap_or("").to_string();
        let name = get("name");
        let run_dir = dir.join(&name);
        let record: toml::Table =
            std::fs::read_to_string(run_dir.join("run.toml")).ok().and_then(|t| t.parse().ok()).unwrap_or_default();
        let int = |k: &str| record.get(k).and_then(|v| v.as_integer()).unwrap_or(0) as u32;
        let curve: Vec<(f64, f64)> =
            crate::record::read_curve(&run_dir.join("losses.csv")).iter().map(|p| (p.iteration, p.total)).collect();
        rows.push(RunRow {
            label: record.get("label").and_then(|v| v.as_str()).unwrap_or(&name).to_string(),
            status: get("status"),
            total: get("final_total"),
            content: get("final_content"),
            style: get("final_style"),
            iterations: get("iterations"),
            evals: get("evals"),
            seconds: get("seconds").parse().unwrap_or(0.0),
            s_per_eval: get("s_per_eval"),
            device: get("device"),
            size: (int("width"), int("height")),
            curve,
            name,
        });
    }
    if rows.is_empty() {
        return Err(Error::Run(format!("{}: no runs", path.display())));
    }
    Ok(rows)
}

fn minutes(s: f64) -> String {
    if s >= 90.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

fn table(rows: &[RunRow]) -> String {
    let mut t = String::from(
        "| run | status | final total | final content | final style | iterations | evaluations | seconds | s/eval |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            r.label, r.status, r.total, r.content, r.style, r.iterations, r.evals, r.seconds, r.s_per_eval
        );
    }
    t
}

/// One stage of a run, from its `losses.csv`.
struct StageRow {
    side: u32,
    steps: usize,
    evals: usize,
    seconds: f64,
    total: f64,
}

/// The stages of the run in `run_dir`: its rows grouped by `scale`, each stage's counts taken
/// from the end of the one before.
fn read_stages(run_dir: &Path) -> Vec<StageRow> {
    let Ok(mut r) = csv::Reader::from_path(run_dir.join("losses.csv")) else { return Vec::new() };
    let Ok(headers) = r.headers().cloned() else { return Vec::new() };
    let col = |k: &str| headers.iter().position(|h| h == k);
    let (Some(it), Some(sc), Some(ev), Some(se), Some(to)) =
        (col("iteration"), col("scale"), col("evals"), col("seconds"), col("total"))
    else {
        return Vec::new();
    };
    // (the stage with cumulative counts, its first iteration)
    let mut stages: Vec<(StageRow, usize)> = Vec::new();
    for rec in r.records().map_while(|x| x.ok()) {
        let num = |i: usize| rec.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let (iteration, side) = (num(it) as usize, num(sc) as u32);
        if stages.last().is_none_or(|(s, _)| s.side != side) {
            stages.push((StageRow { side, steps: 0, evals: 0, seconds: 0.0, total: 0.0 }, iteration));
        }
        if let Some((s, first)) = stages.last_mut() {
            (s.steps, s.evals, s.seconds, s.total) =
                (iteration.saturating_sub(*first), num(ev) as usize, num(se), num(to));
        }
    }
    // Cumulative counts to per-stage ones.
    let mut out: Vec<StageRow> = Vec::new();
    let (mut e0, mut s0) = (0usize, 0f64);
    for (s, _) in stages {
        out.push(StageRow { evals: s.evals.saturating_sub(e0), seconds: s.seconds - s0, ..s });
        (e0, s0) = (s.evals, s.seconds);
    }
    out
}

fn stages_table(dir: &Path, rows: &[RunRow]) -> String {
    let mut t =
        String::from("| run | stage | steps | evaluations | seconds | total at its end |\n|---|---|---|---|---|---|\n");
    for r in rows {
        for s in read_stages(&dir.join(&r.name)) {
            t += &format!(
                "| {} | {} px | {} | {} | {:.0} | {:.4e} |\n",
                r.label, s.side, s.steps, s.evals, s.seconds, s.total
            );
        }
    }
    t
}

/// Writes the centre `CROP` of run `run`'s output at full resolution into `fig`.
fn write_crop(run_dir: &Path, fig: &Path) -> Result<()> {
    let img = vgg::imageio::load_rgb(&run_dir.join("output.png"))?;
    let (w, h) = (CROP.0.min(img.width()), CROP.1.min(img.height()));
    let crop = image::imageops::crop_imm(&img, (img.width() - w) / 2, (img.height() - h) / 2, w, h).to_image();
    crate::fsutil::write_atomic(fig, &encode_png(&crop, fig)?)
}

/// Builds `docs/DOC.md` and `docs/DOC/*.png` from `results/`.
pub fn build(results: &Path, docs: &Path, doc: &Document) -> Result<()> {
    let template_path = docs.join(format!("{}.template.md", doc.name));
    let template = std::fs::read_to_string(&template_path).map_err(Error::io(&template_path))?;
    let fig_dir: PathBuf = docs.join(doc.name);
    let mut out = template.clone();
    let mut total_seconds = 0.0;
    let mut missing = Vec::new();
    for &exp in doc.experiments {
        let rows = match read_experiment(results, exp, doc.script) {
            Ok(r) => r,
            Err(e) => {
                missing.push(e.to_string());
                continue;
            }
        };
        let seconds: f64 = rows.iter().map(|r| r.seconds).sum();
        total_seconds += seconds;
        let items: Vec<(image::RgbImage, String)> = rows
            .iter()
            .filter_map(|r| {
                let img = vgg::imageio::load_rgb(&results.join(exp).join(&r.name).join("output.png")).ok()?;
                Some((img, r.label.clone()))
            })
            .collect();
        let n = items.len();
        let columns = if n <= 5 { n } else { n.div_ceil(2) };
        let sheet = fig_dir.join(format!("{exp}.png"));
        crate::fsutil::write_atomic(&sheet, &sheet_png(&sheet, &items, columns.max(1))?)?;
        let series: Vec<Series> =
            rows.iter().map(|r| Series { name: r.label.clone(), points: r.curve.clone(), color: None }).collect();
        plot_log(
            &fig_dir.join(format!("{exp}_curves.png")),
            &format!("{exp}: total loss"),
            "iteration",
            &series,
            (720, 420),
        )?;
        let (w, h) = rows[0].size;
        let iterations = if rows.len() == 1 {
            format!("{} iterations", rows[0].iterations)
        } else if rows.iter().all(|r| r.iterations == rows[0].iterations) {
            format!("{} iterations each", rows[0].iterations)
        } else {
            "iterations as in the table".to_string()
        };
        let runs = if rows.len() == 1 { "1 run".to_string() } else { format!("{} runs", rows.len()) };
        let meta = format!(
            "{runs} at {w}×{h} px, {iterations}, {} of optimisation in all on {}.",
            minutes(seconds),
            rows[0].device
        );
        out = out
            .replace(&format!("{{{{meta {exp}}}}}"), &meta)
            .replace(&format!("{{{{grid {exp}}}}}"), &format!("![{exp}: final images]({}/{exp}.png)", doc.name))
            .replace(&format!("{{{{curves {exp}}}}}"), &format!("![{exp}: loss curves]({}/{exp}_curves.png)", doc.name))
            .replace(&format!("{{{{table {exp}}}}}"), &table(&rows))
            .replace(&format!("{{{{stages {exp}}}}}"), &stages_table(&results.join(exp), &rows));
        for r in &rows {
            let key = format!("{{{{crop {exp} {}}}}}", r.name);
            if out.contains(&key) {
                let name = format!("{exp}_{}_crop.png", r.name);
                write_crop(&results.join(exp).join(&r.name), &fig_dir.join(&name))?;
                let alt = format!(
                    "![{exp} {}: a {}×{} px crop at full resolution]({}/{name})",
                    r.label, CROP.0, CROP.1, doc.name
                );
                out = out.replace(&key, &alt);
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::Run(format!("missing results:\n  {}", missing.join("\n  "))));
    }
    out = out.replace("{{total}}", &minutes(total_seconds));
    let header = format!(
        "<!-- Generated by `runner report` from results/ and docs/{}.template.md: edit the template. -->\n",
        doc.name
    );
    crate::fsutil::write_atomic(&docs.join(format!("{}.md", doc.name)), format!("{header}{out}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_sheet_of_incompressible_images_shrinks_to_the_size_limit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let items: Vec<(image::RgbImage, String)> = (0..6)
            .map(|i| {
                let img = image::RgbImage::from_fn(384, 288, |_, _| image::Rgb(rng.random()));
                (img, format!("noise {i}"))
            })
            .collect();
        let path = Path::new("noise.png");
        let full = encode_png(&render_contact_sheet(&items, 3, SHEET_CELL).unwrap(), path).unwrap();
        assert!(full.len() > SHEET_MAX_BYTES, "the test needs a sheet over the limit: {} bytes", full.len());
        let png = sheet_png(path, &items, 3).unwrap();
        assert!(png.len() <= SHEET_MAX_BYTES, "{} bytes", png.len());
        let sheet = image::load_from_memory(&png).unwrap();
        let min_width = render_contact_sheet(&items, 3, SHEET_MIN_CELL).unwrap().width();
        assert!(sheet.width() < image::load_from_memory(&full).unwrap().width() && sheet.width() >= min_width);
    }
}
