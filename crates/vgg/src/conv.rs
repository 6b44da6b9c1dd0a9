//! The 3×3 convolution of VGG19, forward and input gradient.
//!
//! On the CPU both run through the Winograd kernel of [`crate::winograd`], or for a layer with
//! few channels on one side (conv1_1) directly ([`crate::direct`]), as candle custom ops with
//! bias, ReLU and the backward ReLU mask fused; on any other device through candle's own
//! `conv2d`. The input gradient of a stride-1, padding-1 3×3 convolution is itself such a
//! convolution, with the kernel transposed (in ↔ out channels) and flipped, so one fast path
//! serves both directions, and the kernel gradient (frozen weights) is never computed.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};

use crate::cpu::simd;
use crate::direct::{self, DirectKernel};
use crate::kernel_cache::{Floats, KernelCache, KernelKey};
use crate::products::KernelLayout;
use crate::tape::BitMask;
use crate::weights::ConvKernel;
use crate::winograd::{self, Epilogue, Kernel, Variant};
use crate::{Error, Result};

/// How the convolutions are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvAlgorithm {
    /// Winograd F(4×4, 3×3) on the CPU (4× fewer multiplications than direct; F(2×2, 3×3) for
    /// images of few tiles on AVX-512, see `Variant::fast`), but direct for a layer with at most
    /// 4 channels on one side (conv1_1 and its input gradient: `crate::direct`); candle's
    /// `conv2d` on other devices. The default.
    #[default]
    Fast,
    /// Winograd F(2×2, 3×3) on the CPU (2.25× fewer multiplications, a little more exact).
    Winograd2x2,
    /// candle's `conv2d` everywhere: the reference the fast paths are tested against.
    Candle,
}

impl ConvAlgorithm {
    /// Every algorithm, for listing valid values.
    pub const ALL: [ConvAlgorithm; 3] = [ConvAlgorithm::Fast, ConvAlgorithm::Winograd2x2, ConvAlgorithm::Candle];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Fast => "fast",
            ConvAlgorithm::Winograd2x2 => "winograd2x2",
            ConvAlgorithm::Candle => "candle",
        }
    }

    /// The Winograd variant this algorithm runs on the CPU for images of `h × w` pixels, or
    /// none for candle's `conv2d`.
    fn cpu_variant(self, h: usize, w: usize) -> Option<Variant> {
        match self {
            ConvAlgorithm::Fast => Some(Variant::fast(simd(), h, w)),
            ConvAlgorithm::Winograd2x2 => Some(Variant::F23),
            ConvAlgorithm::Candle => None,
        }
    }

    /// Floats of the Winograd-domain kernel this algorithm builds on the CPU, per weight of a
    /// 3×3 convolution over images of `h × w` pixels, for each direction (forward, input
    /// gradient): 36/9 with F(4×4, 3×3), 16/9 with F(2×2, 3×3), 0 with candle's `conv2d`. For
    /// the memory plan (which thus counts conv1_1's direct kernels, 9/9, as Winograd's: 41 KB
    /// more than they are).
    pub fn kernel_floats_per_weight(self, h: usize, w: usize) -> f64 {
        self.cpu_variant(h, w).map_or(0.0, |v| v.floats(1, 1) as f64 / 9.0)
    }
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConvAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::parse_name(s, &ConvAlgorithm::ALL, ConvAlgorithm::name, "convolution algorithm")
    }
}

/// One 3×3, stride-1, padding-1 convolution with bias: `y = W ⋆ x + b`.
pub struct Conv3x3 {
    weight: ConvKernel,
    bias: Tensor,
    algorithm: ConvAlgorithm,
    // Built on first use only, so unused layers (conv5_2 … conv5_4 for the usual losses) cost
    // no memory beyond their weights; one cell per [`Variant`] (`Variant as usize`), as `Fast`
    // picks the variant by image size.
    cpu_forward: [OnceLock<Arc<Kernel>>; 2],
    cpu_backward: [OnceLock<Arc<Kernel>>; 2],
    /// The direct kernels, forward and input gradient, where [`direct::thin`].
    cpu_direct: [OnceLock<Arc<DirectKernel>>; 2],
    cpu_bias: OnceLock<Arc<Vec<f32>>>,
    weight_grad_input: OnceLock<Tensor>,
    kernel_cache: Option<Arc<KernelCache>>,
}

impl Conv3x3 {
    /// A convolution with `weight` of shape `(C_out, C_in, 3, 3)` and `bias` of shape `(C_out)`.
    pub fn new(weight: ConvKernel, bias: Tensor, algorithm: ConvAlgorithm) -> Result<Self> {
        let &[k, _c, kh, kw] = weight.dims() else {
            return Err(Error::Shape(format!("expected a 3×3 kernel, got {:?}", weight.dims())));
        };
        if (kh, kw) != (3, 3) || bias.dims() != [k] {
            return Err(Error::Shape(format!(
                "expected a 3×3 kernel and a bias of {k}, got {:?} and {:?}",
                weight.dims(),
                bias.dims()
            )));
        }
        Ok(Self {
            weight,
            bias: bias.to_dtype(DType::F32)?.contiguous()?,
            algorithm,
            cpu_forward: Default::default(),
            cpu_backward: Default::default(),
            cpu_direct: Default::default(),
            cpu_bias: OnceLock::new(),
            weight_grad_input: OnceLock::new(),
            kernel_cache: None,
        })
    }

    /// Takes its Winograd-domain kernels from `cache` and writes there those it transforms.
    pub fn with_kernel_cache(mut self, cache: Arc<KernelCache>) -> Self {
        self.kernel_cache = Some(cache);
        self
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The Winograd variant for `x` `(N, C, H, W)`, or none where candle's `conv2d` runs.
    fn variant(&self, x: &Tensor) -> Result<Option<Variant>> {
        if !x.device().is_cpu() {
            return Ok(None);
        }
        let (_, _, h, w) = x.dims4()?;
        Ok(self.algorithm.cpu_variant(h, w))
    }

    /// The CPU kernel of one direction for `x` `(N, C, H, W)` (`backward`: the input gradient,
    /// `x` the output's gradient), or none where candle's `conv2d` runs.
    fn cpu_kernel(&self, x: &Tensor, backward: bool) -> Result<Option<CpuKernel>> {
        let Some(v) = self.variant(x)? else {
            return Ok(None);
        };
        if self.algorithm == ConvAlgorithm::Fast && direct::thin(self.in_channels(), self.out_channels()) {
            return Ok(Some(CpuKernel::Direct(self.direct_kernel(backward)?)));
        }
        Ok(Some(CpuKernel::Winograd(self.kernel(v, backward)?)))
    }

    /// The (output, input) channels of one direction's kernel: the input gradient's maps the
    /// output channels back to the input ones.
    fn kernel_dims(&self, backward: bool) -> (usize, usize) {
        if backward {
            (self.in_channels(), self.out_channels())
        } else {
            (self.out_channels(), self.in_channels())
        }
    }

    fn direct_kernel(&self, backward: bool) -> Result<Arc<DirectKernel>> {
        let cell = &self.cpu_direct[usize::from(backward)];
        if let Some(k) = cell.get() {
            return Ok(k.clone());
        }
        let (k, c) = self.kernel_dims(backward);
        let kernel = self.weight.with_f32(|w| DirectKernel::new(w, k, c, backward))?;
        Ok(cell.get_or_init(|| Arc::new(kernel)).clone())
    }

    fn kernel(&self, v: Variant, backward: bool) -> Result<Arc<Kernel>> {
        let cells = if backward { &self.cpu_backward } else { &self.cpu_forward };
        let cell = &cells[v as usize];
        if let Some(k) = cell.get() {
            return Ok(k.clone());
        }
        let (k, c) = self.kernel_dims(backward);
        // In the layout the products of this process's instruction set read.
        let layout = KernelLayout::of(simd());
        // The weights where they lie: a copy per kernel was about 100 MB of fresh memory per run.
        // Where the cache has the kernel, the weights' floats are only hashed, a part at a time
        // where they are quantized ([`ConvKernel::hash`]).
        let build = || self.weight.with_f32(|w| winograd::transform(v, layout, w, k, c, backward));
        let u = match &self.kernel_cache {
            Some(cache) => {
                let key = KernelKey {
                    tile: v.tile(),
                    input_grad: backward,
                    layout,
                    k,
                    c,
                    len: v.floats(k, c),
                    weights: self.weight.hash()?,
                };
                cache.get_or_build(&key, build)?
            }
            None => Floats::Owned(build()?),
        };
        Ok(cell.get_or_init(|| Arc::new(Kernel::new(u, k, c, v, layout))).clone())
    }

    /// Bytes of Winograd-domain kernels built so far.
    pub fn transformed_bytes(&self) -> usize {
        self.cpu_forward.iter().chain(&self.cpu_backward).filter_map(|c| c.get()).map(|k| k.bytes()).sum()
    }

    /// `relu(W ⋆ x + b)` when `relu`, else `W ⋆ x + b`; `x` is `(N, C_in, H, W)`, the result
    /// `(N, C_out, H, W)`.
    pub fn forward_with(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        match self.cpu_kernel(x, false)? {
            Some(kernel) => {
                let bias = match self.cpu_bias.get() {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(self.bias.to_vec1::<f32>()?);
                        self.cpu_bias.get_or_init(|| b).clone()
                    }
                };
                let op = CpuConvOp { kernel, bias: Some(bias), relu, mask: None };
                Ok(x.contiguous()?.apply_op1_no_bwd(&op)?)
            }
            None => {
                let _tf32 = Tf32::enable(x.device());
                let y = x.conv2d_with_algo(&self.weight.tensor()?, 1, 1, 1, 1, cudnn_algorithm())?;
                let y = y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?;
                Ok(if relu { y.relu()? } else { y })
            }
        }
    }

    /// Gradient with respect to the input `x` of `Σ grad_out ⊙ f(x)`, where `f` is this
    /// convolution, followed by a ReLU when `relu` (where that ReLU's output was positive) is
    /// given: `W' ⋆ (grad_out ⊙ [relu > 0])` with `W'` the transposed, flipped kernel.
    /// `grad_out` is `(N, C_out, H, W)`; the result `(N, C_in, H, W)`.
    pub fn input_grad(&self, grad_out: &Tensor, relu: Option<&Rectified>) -> Result<Tensor> {
        match self.cpu_kernel(grad_out, true)? {
            Some(kernel) => {
                let computed;
                let mask = match relu {
                    Some(Rectified::Mask(m)) => Some(m),
                    Some(Rectified::Output(r)) => {
                        computed = BitMask::positive(r)?;
                        Some(&computed)
                    }
                    None => None,
                };
                if let Some(m) = mask.filter(|m| m.dims() != grad_out.dims()) {
                    return Err(Error::Shape(format!("mask {:?} for a gradient {:?}", m.dims(), grad_out.dims())));
                }
                let op = CpuConvOp { kernel, bias: None, relu: false, mask };
                Ok(grad_out.contiguous()?.apply_op1_no_bwd(&op)?)
            }
            None => {
                let g = match relu {
                    Some(Rectified::Output(r)) => (grad_out * r.gt(0f32)?.to_dtype(DType::F32)?)?,
                    Some(Rectified::Mask(m)) => (grad_out * m.to_tensor(grad_out.device())?)?,
                    None => grad_out.clone(),
                };
                let wt = match self.weight_grad_input.get() {
                    Some(w) => w.clone(),
                    None => {
                        let w = self.weight.tensor()?.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?.contiguous()?;
                        self.weight_grad_input.get_or_init(|| w).clone()
                    }
                };
                let _tf32 = Tf32::enable(g.device());
                Ok(g.conv2d_with_algo(&wt, 1, 1, 1, 1, cudnn_algorithm())?)
            }
        }
    }
}

/// What the backward pass knows of a ReLU: its output (on a GPU, where it is kept as computed)
/// or, on the CPU, only where it was positive.
pub enum Rectified {
    /// The ReLU's output, `(N, C, H, W)`.
    Output(Tensor),
    /// Where the ReLU's output was positive.
    Mask(BitMask),
}

impl Rectified {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Rectified::Output(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Rectified::Mask(m) => m.bytes(),
        }
    }
}

impl Module for Conv3x3 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, false).map_err(candle_core::Error::wrap)
    }
}

/// The cuDNN forward algorithm for every convolution (`cudnn` feature): implicit precomputed
/// GEMM, unless `NST_CUDNN_ALGO` names another (`implicit_gemm`, `gemm`, `direct`, `fft`,
/// `fft_tiling`, `winograd`, `winograd_nonfused`) or `heuristic` (cuDNN's choice, searched at
/// every call by candle). Measured on an H200 (docs/performance.md): at 512×512 one evaluation
/// takes 11.8 ms with implicit precomputed GEMM against 23.2 ms with the per-call heuristic.
fn cudnn_algorithm() -> Option<candle_core::conv::CudnnFwdAlgo> {
    use candle_core::conv::CudnnFwdAlgo as A;
    static ALGO: OnceLock<Option<A>> = OnceLock::new();
    *ALGO.get_or_init(|| match std::env::var("NST_CUDNN_ALGO").as_deref() {
        Ok("heuristic") => None,
        Ok("implicit_gemm") => Some(A::ImplicitGemm),
        Ok("gemm") => Some(A::Gemm),
        Ok("direct") => Some(A::Direct),
        Ok("fft") => Some(A::Fft),
        Ok("fft_tiling") => Some(A::FftTiling),
        Ok("winograd") => Some(A::Winograd),
        Ok("winograd_nonfused") => Some(A::WinogradNonFused),
        _ => Some(A::ImplicitPrecompGemm),
    })
}

/// While alive, candle's float32 matrix products on a CUDA device may use TF32 tensor cores
/// (unless `NST_CUDA_TF32=0`): only around the convolutions (their im2col product), as PyTorch's
/// default `torch.backends.cudnn.allow_tf32 = True` does; Gram matrices and L-BFGS dot products
/// stay in full float32, as PyTorch's `torch.backends.cuda.matmul.allow_tf32 = False` keeps them.
struct Tf32 {
    previous: Option<bool>,
}

/// Whether convolutions on CUDA may use TF32 (PyTorch's default, about 2x faster): yes unless
/// the environment sets `NST_CUDA_TF32=0`.
pub fn tf32_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NST_CUDA_TF32").is_none_or(|v| v != "0"))
}

impl Tf32 {
    fn enable(device: &candle_core::Device) -> Self {
        if !device.is_cuda() || !tf32_enabled() {
            return Self { previous: None };
        }
        let previous = candle_core::cuda::gemm_reduced_precision_f32();
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
        Self { previous: Some(previous) }
    }
}

impl Drop for Tf32 {
    fn drop(&mut self) {
        if let Some(p) = self.previous {
            candle_core::cuda::set_gemm_reduced_precision_f32(p);
        }
    }
}

/// A convolution's kernel on the CPU: in the Winograd domain, or laid out for the direct one.
enum CpuKernel {
    Winograd(Arc<Kernel>),
    Direct(Arc<DirectKernel>),
}

/// The CPU convolution as a candle op on `(N, C, H, W)` `f32` tensors; the optional mask (one
/// bit per input value) zeroes inputs first.
struct CpuConvOp<'m> {
    kernel: CpuKernel,
    bias: Option<Arc<Vec<f32>>>,
    relu: bool,
    mask: Option<&'m BitMask>,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("cpu conv: {what} must be f32, got another type") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("cpu conv: {what} must be contiguous"),
    }
}

impl CpuConvOp<'_> {
    fn run(&self, x: &[f32], lx: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = lx.shape().dims4()?;
        if c != self.kernel_in() {
            candle_core::bail!("cpu conv: input has {c} channels, the kernel expects {}", self.kernel_in())
        }
        let k = self.kernel_out();
        let epi = Epilogue { bias: self.bias.as_deref().map(|b| b.as_slice()), relu: self.relu };
        let mask = self.mask.map(|m| m.bits());
        let out = match &self.kernel {
            CpuKernel::Winograd(k) => winograd::conv(k, x, mask, n, h, w, epi),
            CpuKernel::Direct(k) => direct::conv(simd(), k, x, mask, (n, h, w), epi),
        };
        Ok((CpuStorage::F32(out), Shape::from((n, k, h, w))))
    }

    fn kernel_in(&self) -> usize {
        self.kernel_dims().1
    }

    fn kernel_out(&self) -> usize {
        self.kernel_dims().0
    }

    fn kernel_dims(&self) -> (usize, usize) {
        match &self.kernel {
            CpuKernel::Winograd(k) => winograd::kernel_dims(k),
            CpuKernel::Direct(k) => k.dims(),
        }
    }
}

impl CustomOp1 for CpuConvOp<'_> {
    fn name(&self) -> &'static str {
        "cpu-conv3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(f32_slice(s, l, "input")?, l)
    }
}
