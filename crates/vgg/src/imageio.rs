//! Images in and out of the network: loading any common format, resizing, and the
//! preprocessing each set of weights was trained with.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, RgbImage};

use crate::{Error, Result};

/// How an RGB image becomes the network's input, which depends on how the weights were trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocessing {
    /// Caffe (Simonyan & Zisserman's VGG19, used by Gatys et al.): channels in BGR order, values
    /// 0–255, minus the per-channel mean `[103.939, 116.779, 123.68]` (B, G, R).
    Caffe,
    /// torchvision: channels in RGB order, values 0–1, minus the ImageNet mean
    /// `[0.485, 0.456, 0.406]`, divided by the standard deviation `[0.229, 0.224, 0.225]`.
    Torchvision,
}

/// Caffe's per-channel mean, in B, G, R order.
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TV_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TV_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocessing {
    /// For network-input channel `c`: (source RGB channel, scale, shift) such that
    /// `input = rgb255 * scale + shift`.
    fn affine(self, c: usize) -> (usize, f32, f32) {
        match self {
            Preprocessing::Caffe => (2 - c, 1.0, -CAFFE_MEAN_BGR[c]),
            Preprocessing::Torchvision => (c, 1.0 / (255.0 * TV_STD[c]), -TV_MEAN[c] / TV_STD[c]),
        }
    }

    /// How many network-input units one step of an 8-bit pixel value is (averaged over
    /// channels): 1 for Caffe. Used to express noise and learning rates in pixel units.
    pub fn units_per_pixel_level(self) -> f32 {
        (0..3).map(|c| self.affine(c).1).sum::<f32>() / 3.0
    }

    /// The image as a network input of shape `(1, 3, H, W)`, `f32`, on `device`.
    pub fn to_tensor(self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let raw = img.as_raw();
        let mut data = vec![0f32; 3 * h * w];
        for c in 0..3 {
            let (src, scale, shift) = self.affine(c);
            for (i, out) in data[c * h * w..(c + 1) * h * w].iter_mut().enumerate() {
                *out = raw[3 * i + src] as f32 * scale + shift;
            }
        }
        Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
    }

    /// A network input of shape `(1, 3, H, W)` (or `(3, H, W)`) back to an 8-bit RGB image,
    /// rounding and clamping to 0–255.
    pub fn to_image(self, x: &Tensor) -> Result<RgbImage> {
        let x = match x.rank() {
            4 if x.dim(0)? == 1 => x.squeeze(0)?,
            3 => x.clone(),
            _ => return Err(Error::Shape(format!("expected an image (1, 3, H, W), got {:?}", x.shape()))),
        };
        let (c, h, w) = x.dims3()?;
        if c != 3 {
            return Err(Error::Shape(format!("expected 3 channels, got {c}")));
        }
        let v = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut raw = vec![0u8; 3 * h * w];
        for c in 0..3 {
            let (dst, scale, shift) = self.affine(c);
            for i in 0..h * w {
                let p = (v[c * h * w + i] - shift) / scale;
                raw[3 * i + dst] = p.round().clamp(0.0, 255.0) as u8;
            }
        }
        RgbImage::from_raw(w as u32, h as u32, raw).ok_or_else(|| Error::Shape("image buffer of the wrong size".into()))
    }
}

/// The size an image is brought to before it enters the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Keep the image as it is.
    Keep,
    /// Scale so that the longer side has this many pixels, keeping the aspect ratio.
    LongSide(u32),
    /// Exactly this width and height.
    Exact {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

impl Resize {
    /// The (width, height) an image of `(w, h)` gets.
    pub fn target(self, w: u32, h: u32) -> (u32, u32) {
        match self {
            Resize::Keep => (w, h),
            Resize::Exact { width, height } => (width, height),
            Resize::LongSide(n) => {
                if w >= h {
                    (n, ((h as f64 * n as f64 / w as f64).round() as u32).max(1))
                } else {
                    (((w as f64 * n as f64 / h as f64).round() as u32).max(1), n)
                }
            }
        }
    }
}

/// The largest image side read, in pixels.
pub const MAX_SIDE: u32 = 16384;
/// The most pixels an image may have (100 megapixels: 300 MB as 8-bit RGB). Larger images are
/// refused from their header, before anything is decoded.
pub const MAX_PIXELS: u64 = 100_000_000;
/// The largest image file read.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// Loads a PNG or JPEG image as 8-bit RGB. The header is read first: images larger than
/// [`MAX_SIDE`] or [`MAX_PIXELS`] are refused before decoding, and the decoder's allocations
/// are limited. A JPEG without its end-of-image marker (a truncated file) is refused, since the
/// decoder would fill the missing part with grey; truncated PNGs fail in the decoder.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let io = |source| Error::Io { path: path.into(), source };
    let bad = |reason: String| Error::BadImage { path: path.into(), reason };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(bad(format!("{len} bytes, more than the {MAX_FILE_BYTES} read")));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let reader = || image::ImageReader::new(std::io::Cursor::new(&bytes[..])).with_guessed_format().map_err(io);
    let format = reader()?.format();
    match format {
        Some(image::ImageFormat::Png) => {}
        Some(image::ImageFormat::Jpeg) => {
            let end = bytes.iter().rposition(|b| !matches!(b, 0 | b'\r' | b'\n' | b' ' | b'\t')).unwrap_or(0);
            if end < 1 || bytes[end - 1..=end] != [0xFF, 0xD9] {
                return Err(bad("the JPEG ends before its end-of-image marker: the file is truncated".into()));
            }
        }
        _ => return Err(bad("not a PNG or JPEG image".into())),
    }
    let (w, h) = reader()?.into_dimensions().map_err(|source| Error::Image { path: path.into(), source })?;
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(bad(format!(
            "{w}×{h} pixels: larger than the {MAX_SIDE} px per side and {} megapixels read",
            MAX_PIXELS / 1_000_000
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // Decoded RGBA16 at the largest size, with room for the decoder's buffers.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    let mut r = reader()?;
    r.limits(limits);
    let img = r.decode().map_err(|source| Error::Image { path: path.into(), source })?;
    Ok(img.to_rgb8())
}

/// Resizes with a Lanczos filter; an image already at the target size is returned untouched.
pub fn resize(img: &RgbImage, size: Resize) -> RgbImage {
    let (w, h) = size.target(img.width(), img.height());
    if (w, h) == img.dimensions() {
        return img.clone();
    }
    image::imageops::resize(img, w, h, FilterType::Lanczos3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    #[test]
    fn preprocessing_round_trips_pixels() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 90, 7]));
        for p in [Preprocessing::Caffe, Preprocessing::Torchvision] {
            let t = p.to_tensor(&img, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[1, 3, 3, 5]);
            assert_eq!(p.to_image(&t).unwrap(), img);
        }
        let t = Preprocessing::Caffe.to_tensor(&img, &Device::Cpu).unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // channel 0 is blue (7) minus the blue mean
        assert!((v[0] - (7.0 - 103.939)).abs() < 1e-4);
        // channel 2 is red; pixel (1, 0) has red 50
        assert!((v[2 * 15 + 1] - (50.0 - 123.68)).abs() < 1e-4);
    }

    #[test]
    fn resize_targets_keep_aspect() {
        assert_eq!(Resize::LongSide(512).target(1024, 768), (512, 384));
        assert_eq!(Resize::LongSide(100).target(300, 600), (50, 100));
        assert_eq!(Resize::Exact { width: 7, height: 9 }.target(1, 1), (7, 9));
        let img = RgbImage::new(4, 3);
        assert_eq!(resize(&img, Resize::LongSide(4)).dimensions(), (4, 3));
        assert_eq!(resize(&img, Resize::LongSide(8)).dimensions(), (8, 6));
    }

    /// Writes `bytes` as `name` in `dir` (a temporary directory the test owns and removes).
    fn temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for b in bytes {
            c ^= *b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// A PNG whose header says `w`×`h` 1-bit grey, with an empty image: decoding it would
    /// allocate for every pixel, reading its header costs nothing.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            f.extend((data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            f.extend(&body);
            f.extend(crc32(&body).to_be_bytes());
        };
        let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes()[..], &[1, 0, 0, 0, 0]].concat();
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        f
    }

    /// Issue 12: truncated JPEGs were decoded as flat grey; a 20000×20000 1-bit PNG of 48 KB
    /// cost 1.7 GB. Both are refused now, the large one from its header alone.
    #[test]
    fn truncated_and_oversized_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
        assert_eq!(load_rgb(&temp(&dir, "ok.jpg", &jpeg)).unwrap().dimensions(), (64, 48));
        for cut in [1024.min(jpeg.len() - 1), jpeg.len() / 2, jpeg.len() - 2] {
            let e = load_rgb(&temp(&dir, "cut.jpg", &jpeg[..cut])).unwrap_err().to_string();
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(img.as_raw(), 64, 48, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(load_rgb(&temp(&dir, "ok.png", &png)).is_ok());
        let e = load_rgb(&temp(&dir, "cut.png", &png[..png.len() / 2])).unwrap_err();
        assert!(matches!(e, Error::Image { .. }), "the decoder's reason: {e}");
        let t = std::time::Instant::now();
        let e = load_rgb(&temp(&dir, "huge.png", &png_header(20000, 20000))).unwrap_err().to_string();
        assert!(e.contains("20000×20000") && e.contains("larger than"), "{e}");
        let e = load_rgb(&temp(&dir, "wide.png", &png_header(16000, 9000))).unwrap_err().to_string();
        assert!(e.contains("megapixels"), "{e}");
        assert!(t.elapsed().as_millis() < 500, "refused from the header");
        let e = load_rgb(&temp(&dir, "text.png", b"plain text")).unwrap_err().to_string();
        assert!(e.contains("not a PNG or JPEG"), "{e}");
    }
}
