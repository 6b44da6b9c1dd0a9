//! The vectors the CPU convolution computes with: one trait, [`Vector`], over a lane count and
//! the few operations the Winograd transforms ([`crate::winograd`]) and products
//! ([`crate::products`]) use, for AVX-512 ([`Zmm`]), AVX2 ([`Ymm`]), a portable group of 8
//! ([`Portable`]) and one lane (`f32`).
//!
//! Every lane of every type does the same IEEE operation as `f32` does (no fused
//! multiply-add but [`Vector::fma`]), so a value's bits never depend on which type, or where in
//! a group, computed it. Written with the sets' intrinsics rather than as arrays that LLVM
//! vectorises: from `[f32; 16]` arrays it built each input vector of the transforms from scalar
//! and 128-bit pieces (`vmovss`, `vinsertf32x4`, `vpermt2pd`: 56, 36 and 36 of them in the
//! output transform's loop on AVX-512).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of [`Vector::LANES`] floats.
///
/// # Safety
/// The methods of [`Zmm`] and [`Ymm`] use AVX-512F and AVX2+FMA: they may only run on a CPU
/// that has the set, inlined into code compiled for it (`#[target_feature]`). Loads and stores
/// need `LANES` readable or writable floats at the pointer.
pub(crate) trait Vector: Copy {
    /// Floats a vector holds.
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// Lane l from `p[l]` where bit l of `bits` is set, else +0 (`LANES` readable floats at `p`
    /// all the same).
    unsafe fn load_where(p: *const f32, bits: u32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(x: f32) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// `a · b + c`, rounded once.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `self > b ? self : b` in every lane (x86's `max`): with `b` = 0, the ReLU, NaN and −0 to
    /// +0.
    unsafe fn max(self, b: Self) -> Self;
}

impl Vector for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: one readable float at p, by the caller.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn load_where(p: *const f32, bits: u32) -> Self {
        // SAFETY: one readable float at p, by the caller.
        if bits & 1 == 1 {
            unsafe { p.read_unaligned() }
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: one writable float at p, by the caller.
        unsafe { p.write_unaligned(self) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self * b
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        if self > b {
            self
        } else {
            b
        }
    }
}

/// Eight lanes as an array, lane by lane: for CPUs without AVX2 and other architectures, where
/// LLVM vectorises it with what the target has.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Portable {
    #[inline(always)]
    fn zip(self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|l| f(self.0[l], b.0[l])))
    }
}

impl Vector for Portable {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: 8 readable floats at p, by the caller.
        Portable(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_where(p: *const f32, bits: u32) -> Self {
        // SAFETY: 8 readable floats at p, by the caller.
        let x = unsafe { p.cast::<[f32; 8]>().read_unaligned() };
        Portable(std::array::from_fn(|l| if (bits >> l) & 1 == 1 { x[l] } else { 0.0 }))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: 8 writable floats at p, by the caller.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.zip(b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self.zip(b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.zip(b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], c.0[l])))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.zip(b, |x, y| if x > y { x } else { y })
    }
}

/// AVX-512's vector.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Zmm(__m512);

// SAFETY (every method): AVX-512F, and the floats at the pointer, by the caller.
#[cfg(target_arch = "x86_64")]
impl Vector for Zmm {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Zmm(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Zmm(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_where(p: *const f32, bits: u32) -> Self {
        Zmm(unsafe { _mm512_maskz_loadu_ps(bits as u16, p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Zmm(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Zmm(unsafe { _mm512_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Zmm(unsafe { _mm512_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Zmm(unsafe { _mm512_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Zmm(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // `vmaxps` returns its second operand unless the first is greater.
        Zmm(unsafe { _mm512_max_ps(self.0, b.0) })
    }
}

/// AVX2's vector.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Ymm(__m256);

// SAFETY (every method): AVX2 and FMA, and the floats at the pointer, by the caller.
#[cfg(target_arch = "x86_64")]
impl Vector for Ymm {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Ymm(unsafe { _mm256_setzero_ps() })
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Ymm(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_where(p: *const f32, bits: u32) -> Self {
        // Lane l all ones where bit l is set, all zeros elsewhere: the load ANDed with it.
        unsafe {
            let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            let set = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane_bits);
            let mask = _mm256_cmpeq_epi32(set, lane_bits);
            Ymm(_mm256_and_ps(_mm256_loadu_ps(p), _mm256_castsi256_ps(mask)))
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Ymm(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Ymm(unsafe { _mm256_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Ymm(unsafe { _mm256_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Ymm(unsafe { _mm256_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Ymm(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // `vmaxps` returns its second operand unless the first is greater.
        Ymm(unsafe { _mm256_max_ps(self.0, b.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane's operation in `f32`, on the lanes of three inputs.
    type Op = fn(f32, f32, f32) -> f32;

    /// Every type's operations against `f32`'s, bit for bit, on values that include ±0, NaN,
    /// infinities and subnormals.
    fn same_bits_as_f32<V: Vector>() {
        let xs = [0.0f32, -0.0, 1.5, -2.25, f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, -3e38, 7.0, 0.1, -0.3];
        let n = V::LANES;
        for shift in 0..xs.len() {
            let a: Vec<f32> = (0..n).map(|l| xs[(l + shift) % xs.len()]).collect();
            let b: Vec<f32> = (0..n).map(|l| xs[(l * 5 + shift + 1) % xs.len()]).collect();
            let c: Vec<f32> = (0..n).map(|l| xs[(l * 7 + shift + 3) % xs.len()]).collect();
            // SAFETY: the caller runs this only for a type whose set the CPU has; every load
            // and store is of n floats from or into vectors of n.
            unsafe {
                let (va, vb, vc) = (V::load(a.as_ptr()), V::load(b.as_ptr()), V::load(c.as_ptr()));
                let ops: [(&str, V, Op); 5] = [
                    ("add", va.add(vb), |x, y, _| x + y),
                    ("sub", va.sub(vb), |x, y, _| x - y),
                    ("mul", va.mul(vb), |x, y, _| x * y),
                    ("fma", V::fma(va, vb, vc), |x, y, z| x.mul_add(y, z)),
                    ("max", va.max(vb), |x, y, _| if x > y { x } else { y }),
                ];
                let bits = 0xA5C3_u32.rotate_left(shift as u32);
                let picked = V::load_where(a.as_ptr(), bits);
                let mut out = vec![0f32; n];
                picked.store(out.as_mut_ptr());
                for l in 0..n {
                    let w = if (bits >> l) & 1 == 1 { a[l] } else { 0.0 };
                    assert!(out[l].to_bits() == w.to_bits(), "load_where lane {l} of {n}: {} against {w}", out[l]);
                }
                for (name, got, want) in ops {
                    let mut out = vec![0f32; n];
                    got.store(out.as_mut_ptr());
                    for l in 0..n {
                        let w = want(a[l], b[l], c[l]);
                        assert!(
                            out[l].to_bits() == w.to_bits() || (out[l].is_nan() && w.is_nan()),
                            "{name} lane {l} of {n}: {} against {w} ({}, {}, {})",
                            out[l],
                            a[l],
                            b[l],
                            c[l]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_vector_computes_as_f32_does() {
        same_bits_as_f32::<f32>();
        same_bits_as_f32::<Portable>();
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2() {
                same_bits_as_f32::<Ymm>();
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512() {
                same_bits_as_f32::<Zmm>();
            }
            use crate::cpu::Simd;
            if Simd::detected() >= Simd::Avx2 {
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { avx2() };
            }
            if Simd::detected() >= Simd::Avx512 {
                // SAFETY: the CPU has AVX-512F.
                unsafe { avx512() };
            }
        }
    }
}
