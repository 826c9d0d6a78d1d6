//! The serving forward pass: every output row is computed by exactly the same sequence of
//! floating-point operations whatever the other rows of the batch, how many there are, and
//! where the row sits. That is what lets predictions be batched across requests (one pass
//! streams the weights once for all their rows) while each request gets the bits it would get
//! alone. General GEMM kernels do not promise it: they pick other code paths for one row and
//! for many, and block the inner dimension by the shape.
//!
//! Each output is `bias + Σ_k x_k·w_k`, summed as 8 interleaved partial sums over the inner
//! dimension (one fused multiply-add each), reduced in a fixed tree, then the `k mod 8` tail in
//! order. Tiles of 4 rows × 2 units share loads; a row outside a group of 4 takes 8 units at
//! once (8 independent sums: with 1 or 2 each multiply-add would wait on the one before). The
//! edge tiles (and the portable path) perform the identical per-element operations. Where the
//! CPU has AVX-512, passes of 2 or more rows hold two rows per 512-bit register (each half the
//! same 8 partial sums and reduction), and an odd last row takes the AVX2 one-row path. The
//! kernels are chosen at run time; elsewhere the portable code computes the same values with
//! `f32::mul_add` (exactly rounded, so all of them agree bit for bit).
//!
//! Runs on the calling thread; allocates one buffer per layer per call (and, for AVX-512, one
//! packed copy of each group's rows).

use super::Network;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

const LANES: usize = 8;
const TILE_ROWS: usize = 4;
const TILE_UNITS: usize = 2;
/// Units per tile for a row outside a group of `TILE_ROWS`.
const WIDE_UNITS: usize = 8;

impl Network<f32> {
    /// Output activations for the rows of `x` (`rows × inputs`), row by row independent of the
    /// batch (see the module header).
    ///
    /// # Panics
    /// When `x` does not have the network's input width (callers check it first).
    pub fn predict_rows(&self, x: ArrayView2<f32>) -> Array2<f32> {
        assert_eq!(x.ncols(), self.inputs(), "input width");
        let x = x.as_standard_layout();
        let mut acts: Option<Array2<f32>> = None;
        for layer in self.layers() {
            let input = acts.as_ref().map_or(x.view(), |a| a.view());
            let mut out = Array2::<f32>::zeros((input.nrows(), layer.units()));
            dense_rows(
                input,
                layer.weights.view(),
                layer.bias.as_slice().expect("biases are contiguous"),
                &mut out.view_mut(),
            );
            layer.activation.forward(&mut out.view_mut());
            acts = Some(out);
        }
        acts.expect("a network has at least one layer")
    }
}

/// `out[r, j] = bias[j] + x[r, :]·w[j, :]` for standard-layout `x` (rows × k), `w` (units × k).
fn dense_rows(x: ArrayView2<f32>, w: ArrayView2<f32>, bias: &[f32], out: &mut ArrayViewMut2<f32>) {
    let w = w.as_standard_layout();
    let (rows, k) = x.dim();
    let units = w.nrows();
    let xs = x.as_slice().expect("standard layout");
    let ws = w.as_slice().expect("standard layout");
    let os = out.as_slice_mut().expect("a fresh array is contiguous");
    #[cfg(target_arch = "x86_64")]
    if rows >= 2
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports the features the kernel is compiled for (checked above).
        unsafe { avx512::dense(xs, ws, bias, os, rows, units, k) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the kernel is compiled for (checked above).
        unsafe { avx2::dense(xs, ws, bias, os, rows, units, k) };
        return;
    }
    portable::dense(xs, ws, bias, os, rows, units, k);
}

mod portable {
    use super::LANES;

    /// One output: the lane sums, the fixed reduction, the tail, the bias — in this order in
    /// every kernel.
    fn dot(x: &[f32], w: &[f32]) -> f32 {
        let k = x.len();
        let body = k - k % LANES;
        let mut acc = [0f32; LANES];
        for c in (0..body).step_by(LANES) {
            for l in 0..LANES {
                acc[l] = x[c + l].mul_add(w[c + l], acc[l]);
            }
        }
        let mut s = reduce(acc);
        for i in body..k {
            s = x[i].mul_add(w[i], s);
        }
        s
    }

    /// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): the tree the AVX2 reduction computes.
    pub(super) fn reduce(a: [f32; LANES]) -> f32 {
        let h = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        let q = [h[0] + h[2], h[1] + h[3]];
        q[0] + q[1]
    }

    pub(super) fn dense(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        rows: usize,
        units: usize,
        k: usize,
    ) {
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            for j in 0..units {
                out[r * units + j] = dot(xr, &w[j * k..(j + 1) * k]) + bias[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, TILE_ROWS, TILE_UNITS, WIDE_UNITS};
    use std::arch::x86_64::*;

    /// The fixed reduction of [`super::portable::reduce`], in registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn reduce(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let h = _mm_add_ps(lo, hi); // [l0+l4, l1+l5, l2+l6, l3+l7]
        let q = _mm_add_ps(h, _mm_movehl_ps(h, h)); // [h0+h2, h1+h3, ..]
        let s = _mm_add_ss(q, _mm_shuffle_ps::<0b01>(q, q)); // q0 + q1
        _mm_cvtss_f32(s)
    }

    /// An `R × U` tile of outputs: rows `x[r]`, units `w[u]`, all of length `k`.
    ///
    /// # Safety
    /// Every slice in `x` and `w` holds at least `k` values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const U: usize>(
        x: [&[f32]; R],
        w: [&[f32]; U],
        k: usize,
    ) -> [[f32; U]; R] {
        let body = k - k % LANES;
        let mut acc = [[_mm256_setzero_ps(); U]; R];
        let mut c = 0;
        while c < body {
            // No closures here: they would not inherit the target features, and every
            // intrinsic would become a call.
            let mut wv = [_mm256_setzero_ps(); U];
            for u in 0..U {
                // SAFETY: c + LANES <= body <= k <= every slice's length.
                wv[u] = unsafe { _mm256_loadu_ps(w[u].as_ptr().add(c)) };
            }
            for r in 0..R {
                // SAFETY: as above.
                let xv = unsafe { _mm256_loadu_ps(x[r].as_ptr().add(c)) };
                for u in 0..U {
                    acc[r][u] = _mm256_fmadd_ps(xv, wv[u], acc[r][u]);
                }
            }
            c += LANES;
        }
        let mut out = [[0f32; U]; R];
        for r in 0..R {
            for u in 0..U {
                let mut s = reduce(acc[r][u]);
                for i in body..k {
                    s = x[r][i].mul_add(w[u][i], s);
                }
                out[r][u] = s;
            }
        }
        out
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA; `x` is `rows × k`, `w` is `units × k`, `out` is
    /// `rows × units`, `bias` has `units` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dense(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        rows: usize,
        units: usize,
        k: usize,
    ) {
        let xrow = |r: usize| &x[r * k..(r + 1) * k];
        let wrow = |j: usize| &w[j * k..(j + 1) * k];
        let full = rows - rows % TILE_ROWS;
        // Groups of 4 rows: units outer, rows inner, so a pair of weight rows stays in L1 while
        // every group of the batch passes over it (the weights are streamed once per batch).
        let mut j = 0;
        while j < units {
            let nu = TILE_UNITS.min(units - j);
            for r in (0..full).step_by(TILE_ROWS) {
                let xs = std::array::from_fn(|i| xrow(r + i));
                // SAFETY: every slice has exactly k values.
                unsafe {
                    if nu == TILE_UNITS {
                        let t = tile::<TILE_ROWS, TILE_UNITS>(xs, [wrow(j), wrow(j + 1)], k);
                        store(out, units, bias, r, j, &t);
                    } else {
                        let t = tile::<TILE_ROWS, 1>(xs, [wrow(j)], k);
                        store(out, units, bias, r, j, &t);
                    }
                }
            }
            j += nu;
        }
        // The rows left over (a one-row request is all of them): one row against 8 units at a
        // time, so that 8 independent sums hide the multiply-add latency that 2 would not; the
        // last 1–7 units in one tile too (one at a time, each would wait on its own sum: on
        // 784-30-10 the 6 left over took as long as the 24 before them).
        for r in full..rows {
            let xs = [xrow(r)];
            let mut j = 0;
            // SAFETY: every slice has exactly k values.
            unsafe {
                while j + WIDE_UNITS <= units {
                    lone::<WIDE_UNITS>(xs, w, bias, out, r, j, units, k);
                    j += WIDE_UNITS;
                }
                match units - j {
                    0 => {}
                    1 => lone::<1>(xs, w, bias, out, r, j, units, k),
                    2 => lone::<2>(xs, w, bias, out, r, j, units, k),
                    3 => lone::<3>(xs, w, bias, out, r, j, units, k),
                    4 => lone::<4>(xs, w, bias, out, r, j, units, k),
                    5 => lone::<5>(xs, w, bias, out, r, j, units, k),
                    6 => lone::<6>(xs, w, bias, out, r, j, units, k),
                    _ => lone::<7>(xs, w, bias, out, r, j, units, k),
                }
            }
        }
    }

    /// Row `r` (`x[0]`) against units `j..j + U`.
    ///
    /// # Safety
    /// As [`dense`], with units `j..j + U` in `w`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn lone<const U: usize>(
        x: [&[f32]; 1],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        r: usize,
        j: usize,
        units: usize,
        k: usize,
    ) {
        let ws = std::array::from_fn(|u| &w[(j + u) * k..(j + u + 1) * k]);
        // SAFETY: every slice has exactly k values.
        let t = unsafe { tile::<1, U>(x, ws, k) };
        store(out, units, bias, r, j, &t);
    }

    pub(super) fn store<const R: usize, const U: usize>(
        out: &mut [f32],
        units: usize,
        bias: &[f32],
        r: usize,
        j: usize,
        t: &[[f32; U]; R],
    ) {
        for (i, row) in t.iter().enumerate() {
            for (u, &v) in row.iter().enumerate() {
                out[(r + i) * units + j + u] = v + bias[j + u];
            }
        }
    }
}

/// Two rows per 512-bit register: lanes 0–7 hold one row's 8 partial sums, lanes 8–15 the
/// next row's, each against the same 8 weights broadcast to both halves. Every output is
/// summed lane for lane as in the AVX2 kernel, then each half goes through the same reduction,
/// so the two kernels agree bit for bit; only twice the sums run per instruction.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, avx2};
    use std::arch::x86_64::*;

    /// Rows per full group: 4 pairs, with 4 units 16 accumulators (the smaller groups take
    /// more units, so at least 8 independent sums hide the multiply-add latency).
    const PAIRS: usize = 4;

    /// Rows `2p` and `2p+1`, chunk by chunk: `[x[2p][c..c+8], x[2p+1][c..c+8]]` for each
    /// chunk `c` of the body (the `k mod 8` tail stays in `x`).
    fn pack(x: &[f32], first: usize, pairs: usize, k: usize) -> Vec<f32> {
        let body = k - k % LANES;
        let mut packed = Vec::with_capacity(pairs * 2 * body);
        for p in 0..pairs {
            let a = &x[(first + 2 * p) * k..][..body];
            let b = &x[(first + 2 * p + 1) * k..][..body];
            for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
                packed.extend_from_slice(ca);
                packed.extend_from_slice(cb);
            }
        }
        packed
    }

    /// A `2P × U` tile: row pairs `xp[p]` (packed, `2·body` values), their rows `x[2p]`,
    /// `x[2p+1]` for the tail, units `w[u]`.
    ///
    /// # Safety
    /// Every `xp` slice holds `2·body` values, every `x` and `w` slice `k`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile<const P: usize, const U: usize>(
        xp: [&[f32]; P],
        x: [[&[f32]; 2]; P],
        w: [&[f32]; U],
        k: usize,
    ) -> [[[f32; U]; 2]; P] {
        let body = k - k % LANES;
        let mut acc = [[_mm512_setzero_ps(); U]; P];
        let mut c = 0;
        while c < body {
            let mut wv = [_mm512_setzero_ps(); U];
            for u in 0..U {
                // SAFETY: c + LANES <= body <= k <= every w slice's length.
                let v = unsafe { _mm256_loadu_pd(w[u].as_ptr().add(c).cast()) };
                wv[u] = _mm512_castpd_ps(_mm512_broadcast_f64x4(v));
            }
            for p in 0..P {
                // SAFETY: 2c + 16 <= 2·body, the packed slice's length.
                let xv = unsafe { _mm512_loadu_ps(xp[p].as_ptr().add(2 * c)) };
                for u in 0..U {
                    acc[p][u] = _mm512_fmadd_ps(xv, wv[u], acc[p][u]);
                }
            }
            c += LANES;
        }
        let mut out = [[[0f32; U]; 2]; P];
        for p in 0..P {
            for u in 0..U {
                let v = _mm512_castps_pd(acc[p][u]);
                let halves = [
                    _mm256_castpd_ps(_mm512_castpd512_pd256(v)),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(v)),
                ];
                for h in 0..2 {
                    let mut s = avx2::reduce(halves[h]);
                    for i in body..k {
                        s = x[p][h][i].mul_add(w[u][i], s);
                    }
                    out[p][h][u] = s;
                }
            }
        }
        out
    }

    /// Rows `first..first + 2P` against every unit.
    ///
    /// # Safety
    /// As [`dense`], with those rows in `x`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn group<const P: usize, const U: usize>(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        first: usize,
        units: usize,
        k: usize,
    ) {
        let packed = pack(x, first, P, k);
        let body = k - k % LANES;
        let xp: [&[f32]; P] = std::array::from_fn(|p| &packed[p * 2 * body..(p + 1) * 2 * body]);
        let xr: [[&[f32]; 2]; P] = std::array::from_fn(|p| {
            let r = first + 2 * p;
            [&x[r * k..(r + 1) * k], &x[(r + 1) * k..(r + 2) * k]]
        });
        let wrow = |j: usize| &w[j * k..(j + 1) * k];
        let mut j = 0;
        // SAFETY: every slice has the length `tile` needs.
        unsafe {
            while j + U <= units {
                let t = tile::<P, U>(xp, xr, std::array::from_fn(|u| wrow(j + u)), k);
                for (p, pair) in t.iter().enumerate() {
                    avx2::store(out, units, bias, first + 2 * p, j, pair);
                }
                j += U;
            }
            while j < units {
                let t = tile::<P, 1>(xp, xr, [wrow(j)], k);
                for (p, pair) in t.iter().enumerate() {
                    avx2::store(out, units, bias, first + 2 * p, j, pair);
                }
                j += 1;
            }
        }
    }

    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA; `x` is `rows × k`, `w` is `units × k`, `out`
    /// is `rows × units`, `bias` has `units` values.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn dense(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        rows: usize,
        units: usize,
        k: usize,
    ) {
        // Groups of 8 rows, then of 4 and 2; each group's rows stay in L1 while the weights
        // pass over them. An odd last row takes the AVX2 kernel's one-row path.
        let mut r = 0;
        // SAFETY: the caller's guarantees, for rows r.. of x and out.
        unsafe {
            while r + 2 * PAIRS <= rows {
                group::<PAIRS, 4>(x, w, bias, out, r, units, k);
                r += 2 * PAIRS;
            }
            if r + 4 <= rows {
                group::<2, 4>(x, w, bias, out, r, units, k);
                r += 4;
            }
            if r + 2 <= rows {
                group::<1, 8>(x, w, bias, out, r, units, k);
                r += 2;
            }
            if r < rows {
                avx2::dense(
                    &x[r * k..],
                    w,
                    bias,
                    &mut out[r * units..],
                    rows - r,
                    units,
                    k,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
    }

    #[test]
    fn each_row_is_the_same_whatever_the_batch_and_matches_the_portable_path() {
        // Inner widths with and without a tail, unit counts with and without an odd edge;
        // rows for every group size of the AVX-512 kernel (8, 4, 2) and an odd one.
        const ROWS: usize = 23;
        for (k, units) in [(19, 7), (784, 256), (8, 3), (3, 1), (40, 10)] {
            let x = random(ROWS, k, 1);
            let w = random(units, k, 2);
            let bias: Vec<f32> = random(1, units, 3).iter().copied().collect();
            let mut all = Array2::<f32>::zeros((ROWS, units));
            dense_rows(x.view(), w.view(), &bias, &mut all.view_mut());
            // Every kernel over all the rows, as bits.
            type Kernel = unsafe fn(&[f32], &[f32], &[f32], &mut [f32], usize, usize, usize);
            let (xs, ws) = (x.as_slice().unwrap(), w.as_slice().unwrap());
            let bits_of = |kernel: Kernel| {
                let mut out = vec![0f32; ROWS * units];
                // SAFETY: the caller checked the kernel's features; the shapes are as given.
                unsafe { kernel(xs, ws, &bias, &mut out, ROWS, units, k) };
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let portable = bits_of(portable::dense);
            assert_eq!(
                all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                portable,
                "k={k} units={units}"
            );
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                assert_eq!(bits_of(avx2::dense), portable, "AVX2, k={k} units={units}");
            }
            for start in 0..ROWS {
                for len in [1, 2, 3, 5, 8, 13] {
                    if start + len > ROWS {
                        continue;
                    }
                    let part = x.slice(ndarray::s![start..start + len, ..]);
                    let mut some = Array2::<f32>::zeros((len, units));
                    dense_rows(part, w.view(), &bias, &mut some.view_mut());
                    let want = all.slice(ndarray::s![start..start + len, ..]);
                    assert_eq!(some.mapv(f32::to_bits), want.mapv(f32::to_bits));
                }
            }
            let reference = x.mapv(f64::from).dot(&w.mapv(f64::from).t());
            for ((r, j), &v) in all.indexed_iter() {
                let want = reference[(r, j)] + f64::from(bias[j]);
                assert!(
                    (f64::from(v) - want).abs() < 1e-4,
                    "({r}, {j}): {v} vs {want}"
                );
            }
        }
    }
}
