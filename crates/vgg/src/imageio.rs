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

/// Loads an image of any common format (PNG, JPEG) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|source| Error::Io { path: path.into(), source })?
        .with_guessed_format()
        .map_err(|source| Error::Io { path: path.into(), source })?
        .decode()
        .map_err(|source| Error::Image { path: path.into(), source })?;
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
}
