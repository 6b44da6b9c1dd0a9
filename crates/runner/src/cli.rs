//! Command-line arguments made from the parameter declaration: every run parameter is a flag
//! of `runner transfer` (`style_weight` → `--style-weight`), with its help, valid values and
//! default from `runner::params::PARAMS`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use runner::params::{self, PARAMS};
use runner::spec::{self, Experiment, Limits, Overrides};

/// Flags shared by spec runs and transfers.
#[derive(Args)]
pub struct CommonArgs {
    /// Print the checked plan as a spec (it runs as it is) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Run again even runs whose outputs are complete.
    #[arg(long)]
    pub force: bool,
}

/// How many runs `--batch` evaluates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchWidth {
    /// As many as the memory plan allows, at most [`BatchWidth::AUTO_MAX`].
    Auto,
    /// This many (at least 1).
    Runs(usize),
}

impl BatchWidth {
    /// The most runs `auto` puts in one batch.
    pub const AUTO_MAX: usize = 16;
}

impl std::str::FromStr for BatchWidth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            _ => match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Runs(n)),
                _ => Err(format!("`{s}` is neither a number of runs (1 or more) nor `auto`")),
            },
        }
    }
}

/// `runner transfer CONTENT STYLE [STYLE…] -o OUT [--PARAM VALUE…]`.
pub struct TransferArgs {
    content: String,
    styles: Vec<String>,
    output: PathBuf,
    blend: Option<String>,
    params: Vec<(&'static str, String)>,
    /// Run even when the estimated peak memory exceeds the memory available.
    pub no_memory_check: bool,
    /// Dry run and force.
    pub common: CommonArgs,
}

/// The flag of a parameter.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// The parameters that are flags (content and style are the positional arguments).
fn flag_params() -> impl Iterator<Item = &'static params::Param> {
    PARAMS.iter().filter(|p| p.key != "content" && p.key != "style")
}

impl Args for TransferArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = CommonArgs::augment_args(cmd)
            .arg(Arg::new("content").required(true).value_name("CONTENT").help("Content image: a manifest name (tubingen) or a path"))
            .arg(
                Arg::new("style")
                    .required(true)
                    .num_args(1..)
                    .value_name("STYLE")
                    .help("Style images: manifest names or paths; several blend"),
            )
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .required(true)
                    .value_name("OUT")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("The output image (.png or .jpg); losses.csv, loss.png, run.toml go to the folder OUT without its extension"),
            )
            .arg(
                Arg::new("no-memory-check")
                    .long("no-memory-check")
                    .action(ArgAction::SetTrue)
                    .help("Run even when the estimated peak memory exceeds the memory available"),
            )
            .arg(
                Arg::new("style-blend-weights")
                    .long("style-blend-weights")
                    .value_name("W1,W2,…")
                    .help("Blend weights of the style images, one per style (neural-style's -style_blend_weights)"),
            );
        for p in flag_params() {
            let default = (p.default)().map(|v| v.to_string()).unwrap_or_else(|| "unset".into());
            let help = format!("{} [{}; default {}]", p.summary(), (p.describe)(), default);
            let arg =
                Arg::new(p.key).long(flag(p.key)).value_name("VALUE").allow_hyphen_values(true).action(ArgAction::Set);
            cmd = cmd.arg(arg.help(help).help_heading(p.group));
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TransferArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let text = |id: &str| m.get_one::<String>(id).cloned();
        Ok(TransferArgs {
            content: text("content").unwrap_or_default(),
            styles: m.get_many::<String>("style").map(|v| v.cloned().collect()).unwrap_or_default(),
            output: m.get_one::<PathBuf>("output").cloned().unwrap_or_default(),
            blend: text("style-blend-weights"),
            no_memory_check: m.get_flag("no-memory-check"),
            params: flag_params().filter_map(|p| text(p.key).map(|v| (p.key, v))).collect(),
            common: CommonArgs::from_arg_matches(m)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl TransferArgs {
    /// The one-run experiment these arguments describe, and the output image's path.
    pub fn plan(&self) -> anyhow::Result<(Experiment, PathBuf)> {
        let ext = self.output.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            bail!("-o {}: the output must end in .png, .jpg or .jpeg", self.output.display());
        }
        let stem = self.output.file_stem().and_then(|s| s.to_str()).unwrap_or("transfer");
        let name: String =
            stem.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
        let weights: Vec<f64> = match &self.blend {
            None => vec![1.0; self.styles.len()],
            Some(b) => b
                .split(',')
                .map(|w| {
                    w.trim().parse::<f64>().with_context(|| format!("--style-blend-weights: `{w}` is not a number"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        if weights.len() != self.styles.len() {
            bail!("--style-blend-weights: {} weights for {} style images", weights.len(), self.styles.len());
        }
        let mut overrides = Overrides::default();
        overrides.set_value("content", "CONTENT", toml::Value::String(self.content.clone()));
        let styles = self
            .styles
            .iter()
            .zip(&weights)
            .map(|(s, w)| {
                let mut t = toml::Table::new();
                t.insert("image".into(), toml::Value::String(s.clone()));
                t.insert("weight".into(), toml::Value::Float(*w));
                toml::Value::Table(t)
            })
            .collect();
        overrides.set_value("style", "STYLE", toml::Value::Array(styles));
        for (key, value) in &self.params {
            overrides.set(key, value);
        }
        let text = format!("name = {}\n", toml::Value::String(name));
        let exp = spec::parse(&text, "runner transfer", &overrides, &Limits::default())?;
        Ok((exp, self.output.clone()))
    }
}

/// Writes the run's `output.png` as `out` (PNG or JPEG by extension), atomically.
pub fn write_final_image(png: &Path, out: &Path) -> anyhow::Result<()> {
    let is_png = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let bytes = if is_png {
        std::fs::read(png).with_context(|| png.display().to_string())?
    } else {
        let img = vgg::imageio::load_rgb(png)?;
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .encode_image(&img)
            .with_context(|| format!("encoding {}", out.display()))?;
        bytes
    };
    runner::fsutil::write_atomic(out, &bytes)?;
    Ok(())
}
