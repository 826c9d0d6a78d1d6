//! Products of layers with few units (from [`MIN_UNITS`] to [`MAX_UNITS`]) on small batches, such as the
//! hidden layer of 784-30-10 on batches of 10: its forward product `Z = b + X·Wᵀ` and its
//! update `W ← α·W + β·δᵀ·X`.
//!
//! `gemm` handles these shapes poorly: a unit count that is not a multiple of its 16-lane
//! registers makes it copy (pack) all the weights, 784 × 30 of them, at every call, and its
//! kernel walks a 10-deep inner dimension with more bookkeeping than arithmetic. Here the
//! weights are read where they are: the layer's weights are column-major while training
//! ([`super::fitter`]), so `Wᵀ` is `inputs × units` with each input's units contiguous — one or
//! two AVX-512 registers, the tail masked.
//!
//! Every element is computed by a fixed sequence of fused multiply-adds that depends on the
//! shape alone (`z = b; z = fma(x_i, w_i, z)` for i in order; `s = 0; s = fma(x_r, δ_r, s)` for
//! r in order, then `w = fma(β, s, α·w)`), so results are the same whatever the thread count —
//! and the same with either set of kernels: the portable code in the tests computes the same
//! bits with `f32::mul_add`. Used where the product is too small to be shared among threads
//! ([`super::matmul`]) and the CPU has AVX-512 or AVX2 with FMA (chosen at run time; elsewhere
//! `gemm` computes it). The AVX2 kernels take the units in bands of 16 (two 8-lane registers).
//! Against `gemm`'s AVX2 kernels on a Zen 3 (AMD EPYC, no AVX-512), best epochs of alternated
//! runs of `train --config N --epochs 3 --bench` on a noisy host: 1 thread 311k → 329k
//! samples/s (medians of 18 pairs, 17 faster), 2 threads 355k → 395k (6 pairs, 5 faster). Alone
//! on hot data the forward kernel was 1.4× `gemm`'s and the update 0.9×. On a Zen 4 the AVX-512
//! kernels are the faster (an AVX2 version ran N at 359k samples/s there, against 397k).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};

/// The most units (columns of `Wᵀ`) a narrow product handles: two 16-lane registers.
pub const MAX_UNITS: usize = 32;
/// The fewest: a single unit's products are matrix–vector products, which `gemm` computes
/// along the inputs, 5–12× faster than the AVX2 kernels' one lane in eight (on 784 inputs and
/// 10 rows, on a Zen 3). The AVX-512 kernels, one lane in sixteen, follow the same rule.
pub const MIN_UNITS: usize = 2;

/// A set of kernels; which one runs is chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// Two 16-lane registers cover the units.
    Avx512,
    /// The units in bands of 16, two 8-lane registers each.
    Avx2,
}

impl Kernels {
    /// Every set, the widest first.
    const ALL: [Kernels; 2] = [Kernels::Avx512, Kernels::Avx2];

    /// Whether this CPU runs them.
    fn run_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("fma")
                && match self {
                    Kernels::Avx512 => has!("avx512f"),
                    Kernels::Avx2 => has!("avx2"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }
}

/// The widest kernels this CPU runs.
fn kernels() -> Option<Kernels> {
    Kernels::ALL.into_iter().find(|k| k.run_here())
}

/// A row-major matrix the kernels read or write: its first element and its row stride. Held
/// as `*mut` whatever the matrix; the kernels write only through `out` and `wt` of an update.
#[derive(Clone, Copy)]
struct Rows {
    ptr: *mut f32,
    ld: usize,
}

impl Rows {
    fn new(ptr: *const f32, ld: usize) -> Self {
        Rows {
            ptr: ptr.cast_mut(),
            ld,
        }
    }

    /// Row `r`, column `c` onwards.
    ///
    /// # Safety
    /// Inside the matrix.
    unsafe fn at(self, r: usize, c: usize) -> *mut f32 {
        // SAFETY: the caller's guarantee.
        unsafe { self.ptr.add(r * self.ld + c) }
    }

    /// The matrix from row `r`, column `c` on.
    ///
    /// # Safety
    /// Inside the matrix.
    unsafe fn offset(self, r: usize, c: usize) -> Self {
        Rows {
            // SAFETY: the caller's guarantee.
            ptr: unsafe { self.at(r, c) },
            ..self
        }
    }
}

/// `rows`, `inputs`, `units` of a product.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    inputs: usize,
    units: usize,
}

/// `dst = alpha·dst + beta·(lhs · rhs)` (with `bias`: `dst = bias + lhs · rhs`, `alpha` and
/// `beta` 1) when it is one of the two narrow forms and the kernels run here; `false` (and `dst`
/// untouched) otherwise.
///
/// - forward: `dst` (rows × units) and `lhs` (rows × inputs) have contiguous rows, `rhs` is
///   `Wᵀ` (inputs × units) with contiguous rows, `bias` given;
/// - update: `dst` is `W` (units × inputs) with contiguous columns, `lhs` is `δᵀ` (units ×
///   rows) with contiguous columns, `rhs` (rows × inputs) has contiguous rows, no bias. With
///   `alpha == 0` the old contents of `dst` are not read.
///
/// # Panics
/// When the shapes do not chain: an internal invariant, never reachable from user input.
pub fn product(
    alpha: f32,
    dst: &mut ArrayViewMut2<f32>,
    beta: f32,
    lhs: &ArrayView2<f32>,
    rhs: &ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
) -> bool {
    product_with(kernels(), alpha, dst, beta, lhs, rhs, bias)
}

/// [`product`] with the given kernels (`None`, or a set this CPU does not run: `false`).
fn product_with(
    kernels: Option<Kernels>,
    alpha: f32,
    dst: &mut ArrayViewMut2<f32>,
    beta: f32,
    lhs: &ArrayView2<f32>,
    rhs: &ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
) -> bool {
    assert_eq!(lhs.ncols(), rhs.nrows(), "inner dimensions differ");
    assert_eq!(dst.dim(), (lhs.nrows(), rhs.ncols()), "destination shape");
    let Some(kernels) = kernels.filter(|k| k.run_here() && !dst.is_empty() && lhs.ncols() > 0)
    else {
        return false;
    };
    let (ds, ls, rs) = (dst.strides(), lhs.strides(), rhs.strides());
    let ld = |s: isize| usize::try_from(s).ok();
    // Contiguous along an axis: stride 1, or a single element (ndarray gives such an axis of a
    // slice the stride 0).
    let unit = |len: usize, stride: isize| len <= 1 || stride == 1;
    match bias {
        Some(b)
            if alpha == 1.0
                && beta == 1.0
                && b.len() == dst.ncols()
                && (MIN_UNITS..=MAX_UNITS).contains(&dst.ncols())
                && unit(dst.ncols(), ds[1])
                && unit(lhs.ncols(), ls[1])
                && unit(rhs.ncols(), rs[1]) =>
        {
            let (Some(ldo), Some(ldx), Some(ldw), Some(b)) =
                (ld(ds[0]), ld(ls[0]), ld(rs[0]), b.as_slice())
            else {
                return false;
            };
            let x = Rows::new(lhs.as_ptr(), ldx);
            let wt = Rows::new(rhs.as_ptr(), ldw);
            let out = Rows::new(dst.as_mut_ptr(), ldo);
            let (rows, inputs, units) = (lhs.nrows(), lhs.ncols(), dst.ncols());
            let dims = Dims {
                rows,
                inputs,
                units,
            };
            // SAFETY: the kernels run here (`run_here`); the
            // strides are non-negative and each handle addresses a matrix of the shape `dims`
            // gives it (x: rows × inputs, wt: inputs × units, out: rows × units).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match kernels {
                    Kernels::Avx512 => avx512::forward(x, wt, b.as_ptr(), out, dims),
                    Kernels::Avx2 => avx2::forward(x, wt, b.as_ptr(), out, dims),
                }
            }
            true
        }
        None if (MIN_UNITS..=MAX_UNITS).contains(&dst.nrows())
            && unit(dst.nrows(), ds[0])
            && unit(lhs.nrows(), ls[0])
            && unit(rhs.ncols(), rs[1]) =>
        {
            let (Some(ldw), Some(ldd), Some(ldx)) = (ld(ds[1]), ld(ls[1]), ld(rs[0])) else {
                return false;
            };
            // Wᵀ (inputs × units), δ (rows × units) and x (rows × inputs), all row-major.
            let wt = Rows::new(dst.as_mut_ptr(), ldw);
            let d = Rows::new(lhs.as_ptr(), ldd);
            let x = Rows::new(rhs.as_ptr(), ldx);
            let (rows, inputs, units) = (rhs.nrows(), rhs.ncols(), dst.nrows());
            let dims = Dims {
                rows,
                inputs,
                units,
            };
            // SAFETY: as above (wt: inputs × units, d: rows × units, x: rows × inputs).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match kernels {
                    Kernels::Avx512 => avx512::update((alpha, beta), wt, d, x, dims),
                    Kernels::Avx2 => avx2::update((alpha, beta), wt, d, x, dims),
                }
            }
            true
        }
        _ => false,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Dims, Rows};
    use std::arch::x86_64::*;

    /// Rows at once in the forward product, inputs at once in the update: 12 independent
    /// accumulators, enough to cover the multiply-add's latency.
    const STEP: usize = 6;

    /// Lane masks of the two registers for `units` (≤ 32) units.
    fn masks(units: usize) -> [__mmask16; 2] {
        let bits = |n: usize| if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
        [bits(units), bits(units.saturating_sub(16))]
    }

    /// `out[r, u] = bias[u]`, then `out[r, u] = fma(x[r, i], wt[i, u], out[r, u])` for i in
    /// order.
    ///
    /// # Safety
    /// AVX-512F and FMA are available; `x` is `rows × inputs`, `wt` is `inputs × units`,
    /// `bias` holds `units` values, `out` is `rows × units`, `units ≤ 32`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn forward(x: Rows, wt: Rows, bias: *const f32, out: Rows, dims: Dims) {
        // Groups of STEP rows, then the rest as one group (single rows would wait on their
        // two accumulators' latency).
        let mut r = 0;
        // SAFETY: the caller's guarantees, for rows r.. of x and out.
        unsafe {
            while r < dims.rows {
                let (x, out) = (x.offset(r, 0), out.offset(r, 0));
                r += match dims.rows - r {
                    1 => forward_rows::<1>(x, wt, bias, out, dims),
                    2 => forward_rows::<2>(x, wt, bias, out, dims),
                    3 => forward_rows::<3>(x, wt, bias, out, dims),
                    4 => forward_rows::<4>(x, wt, bias, out, dims),
                    5 => forward_rows::<5>(x, wt, bias, out, dims),
                    _ => forward_rows::<STEP>(x, wt, bias, out, dims),
                };
            }
        }
    }

    /// [`forward`] for the first `R` rows; returns `R`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn forward_rows<const R: usize>(
        x: Rows,
        wt: Rows,
        bias: *const f32,
        out: Rows,
        dims: Dims,
    ) -> usize {
        let m = masks(dims.units);
        // SAFETY (the whole body): every access is inside the matrices the caller described:
        // rows < R of x and out, inputs < `inputs` of x and wt, lanes masked to `units`.
        unsafe {
            let b = [
                _mm512_maskz_loadu_ps(m[0], bias),
                _mm512_maskz_loadu_ps(m[1], bias.wrapping_add(16)),
            ];
            let mut acc = [b; R];
            for i in 0..dims.inputs {
                let w = wt.at(i, 0);
                let w = [
                    _mm512_maskz_loadu_ps(m[0], w),
                    _mm512_maskz_loadu_ps(m[1], w.wrapping_add(16)),
                ];
                for (r, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(*x.at(r, i));
                    a[0] = _mm512_fmadd_ps(v, w[0], a[0]);
                    a[1] = _mm512_fmadd_ps(v, w[1], a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = out.at(r, 0);
                _mm512_mask_storeu_ps(o, m[0], a[0]);
                _mm512_mask_storeu_ps(o.wrapping_add(16), m[1], a[1]);
            }
        }
        R
    }

    /// `s = 0; s = fma(x[r, i], d[r, u], s)` for r in order, then
    /// `wt[i, u] = fma(beta, s, alpha·wt[i, u])` (`0` for `alpha·wt` when `alpha == 0`).
    ///
    /// # Safety
    /// AVX-512F and FMA are available; `wt` is `inputs × units`, `d` is `rows × units`, `x` is
    /// `rows × inputs`, `units ≤ 32`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn update((alpha, beta): (f32, f32), wt: Rows, d: Rows, x: Rows, dims: Dims) {
        let mut i = 0;
        // SAFETY: the caller's guarantees, for inputs i.. of wt and x.
        unsafe {
            while i < dims.inputs {
                let (wt, x) = (wt.offset(i, 0), x.offset(0, i));
                i += if dims.inputs - i >= STEP {
                    update_inputs::<STEP>((alpha, beta), wt, d, x, dims)
                } else {
                    update_inputs::<1>((alpha, beta), wt, d, x, dims)
                };
            }
        }
    }

    /// [`update`] for the first `I` inputs; returns `I`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn update_inputs<const I: usize>(
        (alpha, beta): (f32, f32),
        wt: Rows,
        d: Rows,
        x: Rows,
        dims: Dims,
    ) -> usize {
        let m = masks(dims.units);
        // SAFETY (the whole body): inputs < I of wt and x, rows < `rows` of d and x, lanes
        // masked to `units`.
        unsafe {
            // The old weights are loaded first: they come from L2, and loaded last they held
            // up the stores.
            let (a, b) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
            let mut old = [[_mm512_setzero_ps(); 2]; I];
            if alpha != 0.0 {
                for (j, o) in old.iter_mut().enumerate() {
                    let w = wt.at(j, 0);
                    for (h, (o, &mask)) in o.iter_mut().zip(&m).enumerate() {
                        *o = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mask, w.wrapping_add(16 * h)));
                    }
                }
            }
            let mut acc = [[_mm512_setzero_ps(); 2]; I];
            for r in 0..dims.rows {
                let dr = d.at(r, 0);
                let dv = [
                    _mm512_maskz_loadu_ps(m[0], dr),
                    _mm512_maskz_loadu_ps(m[1], dr.wrapping_add(16)),
                ];
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(*x.at(r, j));
                    a[0] = _mm512_fmadd_ps(v, dv[0], a[0]);
                    a[1] = _mm512_fmadd_ps(v, dv[1], a[1]);
                }
            }
            for (j, (s, old)) in acc.iter().zip(&old).enumerate() {
                let w = wt.at(j, 0);
                for (h, &mask) in m.iter().enumerate() {
                    let p = w.wrapping_add(16 * h);
                    let new = _mm512_fmadd_ps(b, s[h], old[h]);
                    if mask == 0xFFFF {
                        _mm512_storeu_ps(p, new);
                    } else {
                        _mm512_mask_storeu_ps(p, mask, new);
                    }
                }
            }
        }
        I
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Dims, Rows};
    use std::arch::x86_64::*;

    /// Rows at once in the forward product, inputs at once in the update: 12 accumulators (two
    /// registers each), which with the two registers of δ or `Wᵀ` and a broadcast fill the 16.
    const STEP: usize = 6;
    /// Units per band: each band is a pass of its own over the inputs.
    const BAND: usize = 16;

    /// The lanes of a band's two registers that hold units, for `width` (≤ 16) units.
    #[derive(Clone, Copy)]
    struct Lanes {
        mask: [__m256i; 2],
        count: [usize; 2],
    }

    impl Lanes {
        #[target_feature(enable = "avx2")]
        fn new(width: usize) -> Self {
            let count = [width.min(8), width.saturating_sub(8).min(8)];
            let mask = count.map(|n| {
                let n = n as i32;
                _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                )
            });
            Lanes { mask, count }
        }

        /// The band's units from `p` (the lanes past them read as 0).
        ///
        /// # Safety
        /// AVX2 is available; `p` holds the band's units.
        #[target_feature(enable = "avx2")]
        unsafe fn load(self, p: *const f32) -> [__m256; 2] {
            // SAFETY: masked loads read the units only.
            unsafe {
                [
                    _mm256_maskload_ps(p, self.mask[0]),
                    _mm256_maskload_ps(p.wrapping_add(8), self.mask[1]),
                ]
            }
        }

        /// Writes the band's units to `p`, and nothing past them. A partial register goes
        /// through the stack: with masked stores instead, the kernels ran 1.3–1.6× slower on a
        /// Zen 3.
        ///
        /// # Safety
        /// AVX2 is available; `p` holds the band's units.
        #[target_feature(enable = "avx2")]
        unsafe fn store(self, p: *mut f32, v: [__m256; 2]) {
            // SAFETY: `count[h]` lanes of register h are written, inside the band.
            unsafe {
                for (h, (v, &n)) in v.iter().zip(&self.count).enumerate() {
                    let p = p.wrapping_add(8 * h);
                    if n == 8 {
                        _mm256_storeu_ps(p, *v);
                    } else if n > 0 {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                        std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n);
                    }
                }
            }
        }
    }

    /// As [`super::avx512::forward`], band by band.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `x` is `rows × inputs`, `wt` is `inputs × units`, `bias`
    /// holds `units` values, `out` is `rows × units`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(x: Rows, wt: Rows, bias: *const f32, out: Rows, dims: Dims) {
        // SAFETY: the caller's guarantees, for units c.. and rows r.. .
        unsafe {
            for c in (0..dims.units).step_by(BAND) {
                let lanes = Lanes::new((dims.units - c).min(BAND));
                let (wt, out, bias) = (wt.offset(0, c), out.offset(0, c), bias.add(c));
                let mut r = 0;
                while r < dims.rows {
                    let (x, out) = (x.offset(r, 0), out.offset(r, 0));
                    let band = (x, wt, bias, out, lanes, dims.inputs);
                    r += match dims.rows - r {
                        1 => forward_rows::<1>(band),
                        2 => forward_rows::<2>(band),
                        3 => forward_rows::<3>(band),
                        4 => forward_rows::<4>(band),
                        5 => forward_rows::<5>(band),
                        _ => forward_rows::<STEP>(band),
                    };
                }
            }
        }
    }

    /// [`forward`] for the first `R` rows of one band; returns `R`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_rows<const R: usize>(
        (x, wt, bias, out, lanes, inputs): (Rows, Rows, *const f32, Rows, Lanes, usize),
    ) -> usize {
        // SAFETY (the whole body): rows < R of x and out, inputs < `inputs` of x and wt, the
        // band's units only.
        unsafe {
            let mut acc = [lanes.load(bias); R];
            for i in 0..inputs {
                let w = lanes.load(wt.at(i, 0));
                for (r, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_set1_ps(*x.at(r, i));
                    a[0] = _mm256_fmadd_ps(v, w[0], a[0]);
                    a[1] = _mm256_fmadd_ps(v, w[1], a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                lanes.store(out.at(r, 0), *a);
            }
        }
        R
    }

    /// As [`super::avx512::update`], band by band.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `wt` is `inputs × units`, `d` is `rows × units`, `x` is
    /// `rows × inputs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn update((alpha, beta): (f32, f32), wt: Rows, d: Rows, x: Rows, dims: Dims) {
        // SAFETY: the caller's guarantees, for units c.. and inputs i.. .
        unsafe {
            for c in (0..dims.units).step_by(BAND) {
                let lanes = Lanes::new((dims.units - c).min(BAND));
                let (wt, d) = (wt.offset(0, c), d.offset(0, c));
                let mut i = 0;
                while i < dims.inputs {
                    let (wt, x) = (wt.offset(i, 0), x.offset(0, i));
                    let band = ((alpha, beta), wt, d, x, lanes, dims.rows);
                    i += if dims.inputs - i >= STEP {
                        update_inputs::<STEP>(band)
                    } else {
                        update_inputs::<1>(band)
                    };
                }
            }
        }
    }

    /// [`update`] for the first `I` inputs of one band; returns `I`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn update_inputs<const I: usize>(
        ((alpha, beta), wt, d, x, lanes, rows): ((f32, f32), Rows, Rows, Rows, Lanes, usize),
    ) -> usize {
        // SAFETY (the whole body): inputs < I of wt and x, rows < `rows` of d and x, the
        // band's units only.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; I];
            for r in 0..rows {
                let dv = lanes.load(d.at(r, 0));
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_set1_ps(*x.at(r, j));
                    a[0] = _mm256_fmadd_ps(v, dv[0], a[0]);
                    a[1] = _mm256_fmadd_ps(v, dv[1], a[1]);
                }
            }
            // The old weights are loaded last: loaded first, as the AVX-512 kernel does, they
            // would not fit in the registers beside the accumulators.
            let (a, b) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
            for (j, s) in acc.iter().enumerate() {
                let w = wt.at(j, 0);
                let old = if alpha == 0.0 {
                    [_mm256_setzero_ps(); 2]
                } else {
                    lanes.load(w).map(|w| _mm256_mul_ps(a, w))
                };
                let new = [0, 1].map(|h| _mm256_fmadd_ps(b, s[h], old[h]));
                lanes.store(w, new);
            }
        }
        I
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, shape: (usize, usize), f: bool) -> Array2<f32> {
        let a = Array2::from_shape_fn(shape.set_f(f), |_| rng.random_range(-1.0f32..1.0));
        assert_eq!(a.is_standard_layout(), !f || shape.0 <= 1 || shape.1 <= 1);
        a
    }

    /// The narrow forms computed element by element with `f32::mul_add`, in the order the
    /// module header gives.
    fn forward_portable(x: &Array2<f32>, wt: &Array2<f32>, bias: &Array1<f32>) -> Array2<f32> {
        Array2::from_shape_fn((x.nrows(), wt.ncols()), |(r, u)| {
            (0..x.ncols()).fold(bias[u], |z, i| x[[r, i]].mul_add(wt[[i, u]], z))
        })
    }

    fn update_portable(
        alpha: f32,
        w: &Array2<f32>,
        beta: f32,
        d: &Array2<f32>,
        x: &Array2<f32>,
    ) -> Array2<f32> {
        Array2::from_shape_fn(w.dim(), |(u, i)| {
            let s = (0..x.nrows()).fold(0f32, |s, r| x[[r, i]].mul_add(d[[r, u]], s));
            let old = if alpha == 0.0 { 0.0 } else { alpha * w[[u, i]] };
            beta.mul_add(s, old)
        })
    }

    /// Every kernel set this CPU runs (an AVX-512 CPU runs the AVX2 kernels too).
    fn runnable() -> Vec<Kernels> {
        Kernels::ALL.into_iter().filter(|k| k.run_here()).collect()
    }

    #[test]
    fn the_kernels_match_the_portable_order_bit_for_bit_and_a_plain_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let sets = runnable();
        assert_eq!(kernels(), sets.first().copied(), "the widest set is chosen");
        if sets.is_empty() {
            eprintln!(
                "the narrow kernels do not run on this CPU: only the portable order is checked"
            );
        }
        // One unit (left to gemm); units within one 8- or 16-lane register, across two, across the AVX2 kernels' bands
        // of 16, and all 32; rows and inputs around the kernels' steps.
        for (rows, inputs, units) in [
            (10, 784, 30),
            (1, 5, 1),
            (1, 5, 2),
            (7, 13, 16),
            (13, 20, 17),
            (3, 9, 8),
            (5, 7, 9),
            (6, 6, 32),
            (11, 8, 24),
            (2, 25, 3),
        ] {
            let x = random(&mut rng, (rows, inputs), false);
            // W column-major (units × inputs), so Wᵀ has contiguous rows; two more units of
            // padding after each input's, which no kernel may write.
            let padded = random(&mut rng, (units + 2, inputs), true);
            let w = padded.slice(s![..units, ..]);
            let bias = random(&mut rng, (1, units), false).row(0).to_owned();
            let want = forward_portable(&x, &w.t().to_owned(), &bias);
            let plain = x.dot(&w.t()) + &bias;
            assert!(want.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-3));
            let d = random(&mut rng, (rows, units), false);
            let (xv, wt, dt) = (x.view(), w.t(), d.t());
            let mut z = Array2::from_elem((rows, units + 2), f32::NAN);
            let done = product(
                1.0,
                &mut z.slice_mut(s![.., ..units]),
                1.0,
                &xv,
                &wt,
                Some(bias.view()),
            );
            let takes = kernels().is_some() && units >= MIN_UNITS;
            assert_eq!(
                done, takes,
                "the forward form is taken exactly where kernels run, from MIN_UNITS units"
            );
            for &k in sets.iter().filter(|_| units >= MIN_UNITS) {
                let mut z = Array2::from_elem((rows, units + 2), f32::NAN);
                let mut inner = z.slice_mut(s![.., ..units]);
                assert!(product_with(
                    Some(k),
                    1.0,
                    &mut inner,
                    1.0,
                    &xv,
                    &wt,
                    Some(bias.view())
                ));
                assert_eq!(
                    z.slice(s![.., ..units]).mapv(f32::to_bits),
                    want.mapv(f32::to_bits),
                    "{k:?} {rows}×{inputs}×{units}"
                );
                assert!(z.slice(s![.., units..]).iter().all(|v| v.is_nan()));
            }
            for alpha in [0.0, 0.99] {
                let want = update_portable(alpha, &w.to_owned(), -0.3, &d, &x);
                let plain = &w * alpha - d.t().dot(&x) * 0.3;
                assert!(want.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-3));
                let mut got = padded.clone();
                if alpha == 0.0 {
                    got.slice_mut(s![..units, ..]).fill(f32::NAN);
                }
                let done = product(
                    alpha,
                    &mut got.slice_mut(s![..units, ..]),
                    -0.3,
                    &dt,
                    &xv,
                    None,
                );
                assert_eq!(done, takes);
                for &k in sets.iter().filter(|_| units >= MIN_UNITS) {
                    let mut got = padded.clone();
                    if alpha == 0.0 {
                        got.slice_mut(s![..units, ..]).fill(f32::NAN);
                    }
                    let mut inner = got.slice_mut(s![..units, ..]);
                    assert!(product_with(
                        Some(k),
                        alpha,
                        &mut inner,
                        -0.3,
                        &dt,
                        &xv,
                        None
                    ));
                    assert_eq!(
                        got.slice(s![..units, ..]).mapv(f32::to_bits),
                        want.mapv(f32::to_bits),
                        "{k:?} {rows}×{inputs}×{units} α={alpha}"
                    );
                    assert_eq!(
                        got.slice(s![units.., ..]).mapv(f32::to_bits),
                        padded.slice(s![units.., ..]).mapv(f32::to_bits),
                        "{k:?}: the padding is untouched"
                    );
                }
            }
        }
    }

    #[test]
    fn other_shapes_and_layouts_are_left_to_gemm() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let x = random(&mut rng, (4, 8), false);
        let bias = Array1::zeros(33);
        // Too many units; Wᵀ without contiguous rows (W row-major).
        let wide = random(&mut rng, (33, 8), true);
        let row_major = random(&mut rng, (5, 8), false);
        let mut z = Array2::zeros((4, 33));
        assert!(!product(
            1.0,
            &mut z.view_mut(),
            1.0,
            &x.view(),
            &wide.t(),
            Some(bias.view())
        ));
        let mut z = Array2::zeros((4, 5));
        let b5 = Array1::zeros(5);
        assert!(!product(
            1.0,
            &mut z.view_mut(),
            1.0,
            &x.view(),
            &row_major.t(),
            Some(b5.view())
        ));
        assert!(z.iter().all(|&v| v == 0.0), "untouched");
        // An update into row-major weights.
        let d = random(&mut rng, (4, 5), false);
        let mut w = row_major.clone();
        assert!(!product(
            1.0,
            &mut w.view_mut(),
            1.0,
            &d.t(),
            &x.view(),
            None
        ));
        assert_eq!(w, row_major);
    }
}
