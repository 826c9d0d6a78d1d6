//! Matrix products: one helper over the `gemm` crate, which is 1.5–4× faster than ndarray's
//! default backend on the small and skinny products of mini-batch training (ECOSYSTEM.md).
//!
//! Operands are any strided ndarray views, so transposes cost nothing (`w.t()`).
//!
//! Threads: gemm's own threading gains at most 1.3× on training shapes here (and slows the small
//! ones), so large products are instead cut into output panels, each computed single-threaded,
//! shared among the training run's team ([`super::team`]). The panels depend on the shape
//! alone — never on the thread count — so every element is computed by the same call whatever
//! the thread count, and results are bit-identical with 1 or N threads.

use super::{Scalar, team};
use gemm::Parallelism;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use std::sync::{Mutex, PoisonError};

/// How many threads a product may use. `1` computes on the calling thread; more shares the
/// panels with the team the calling thread leads ([`team::with_team`]), if it leads one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

/// Products with fewer multiply-adds than this are not split (splitting costs more than it saves).
const SPLIT_WORK: usize = 1 << 20;
/// The most panels a product is cut into, and the narrowest panel.
const MAX_PANELS: usize = 4;
const MIN_PANEL: usize = 64;

/// Panel width along `dim` for a product of `work` multiply-adds (a function of the shape only).
fn panel_width(dim: usize, work: usize) -> usize {
    if work < SPLIT_WORK {
        return dim;
    }
    dim.div_ceil(MAX_PANELS).next_multiple_of(16).max(MIN_PANEL)
}

/// `dst = alpha·dst + beta·(lhs · rhs)`. With `alpha == 0` the old contents of `dst` are not read.
///
/// # Panics
/// When the shapes do not chain: an internal invariant, never reachable from user input.
pub fn gemm<F: Scalar>(
    alpha: F,
    dst: &mut ArrayViewMut2<F>,
    beta: F,
    lhs: &ArrayView2<F>,
    rhs: &ArrayView2<F>,
    threads: Threads,
) {
    let (m, k) = lhs.dim();
    let (k2, n) = rhs.dim();
    assert_eq!(k, k2, "inner dimensions differ");
    assert_eq!(dst.dim(), (m, n), "destination shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.mapv_inplace(|v| v * alpha);
        return;
    }
    // Split the larger output dimension into panels; `rows` says which one.
    let rows = m > n;
    let width = panel_width(if rows { m } else { n }, m * n * k);
    if width >= if rows { m } else { n } {
        return gemm_one(alpha, dst, beta, lhs, rhs);
    }
    let panels: Vec<(ArrayViewMut2<F>, ArrayView2<F>, ArrayView2<F>)> = if rows {
        dst.axis_chunks_iter_mut(Axis(0), width)
            .zip(lhs.axis_chunks_iter(Axis(0), width))
            .map(|(d, l)| (d, l, rhs.view()))
            .collect()
    } else {
        dst.axis_chunks_iter_mut(Axis(1), width)
            .zip(rhs.axis_chunks_iter(Axis(1), width))
            .map(|(d, r)| (d, lhs.view(), r))
            .collect()
    };
    if threads.0 > 1 && team::leading() {
        let panels: Vec<Mutex<_>> = panels.into_iter().map(Mutex::new).collect();
        team::for_each_part(panels.len(), &|i| {
            let mut panel = panels[i].lock().unwrap_or_else(PoisonError::into_inner);
            let (d, l, r) = &mut *panel;
            gemm_one(alpha, d, beta, l, r);
        });
    } else {
        for (mut d, l, r) in panels {
            gemm_one(alpha, &mut d, beta, &l, &r);
        }
    }
}

/// One single-threaded gemm call on checked, non-empty shapes.
fn gemm_one<F: Scalar>(
    alpha: F,
    dst: &mut ArrayViewMut2<F>,
    beta: F,
    lhs: &ArrayView2<F>,
    rhs: &ArrayView2<F>,
) {
    let (m, k) = lhs.dim();
    let n = rhs.ncols();
    let (ds, ls, rs) = (dst.strides(), lhs.strides(), rhs.strides());
    let (d_rs, d_cs) = (ds[0], ds[1]);
    let (l_rs, l_cs) = (ls[0], ls[1]);
    let (r_rs, r_cs) = (rs[0], rs[1]);
    // SAFETY: the three views are valid for their shapes and strides (ndarray guarantees it),
    // `dst` is borrowed mutably so it cannot alias `lhs` or `rhs`, and the shapes were checked
    // above. gemm reads and writes exactly the m×k, k×n and m×n elements the strides describe.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            d_cs,
            d_rs,
            alpha != F::zero(),
            lhs.as_ptr(),
            l_cs,
            l_rs,
            rhs.as_ptr(),
            r_cs,
            r_rs,
            alpha,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn matches_ndarray_dot_with_transposes_and_accumulation() {
        let a = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[1.0f64, -1.0], [0.5, 2.0], [3.0, 0.0]];
        let mut c = Array2::<f64>::ones((2, 2));
        gemm(
            2.0,
            &mut c.view_mut(),
            0.5,
            &a.view(),
            &b.view(),
            Threads(1),
        );
        let want = a.dot(&b) * 0.5 + 2.0;
        assert_eq!(c, want);
        // Transposed operands through strides.
        let mut d = Array2::<f64>::zeros((3, 3));
        gemm(0.0, &mut d.view_mut(), 1.0, &a.t(), &a.view(), Threads(1));
        assert_eq!(d, a.t().dot(&a));
    }

    #[test]
    fn panels_agree_with_one_call_and_across_thread_counts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (m, n, k) in [(64, 256, 784), (256, 784, 64), (300, 40, 200)] {
            let a = Array2::from_shape_fn((m, k), |_| rng.random_range(-1.0f32..1.0));
            let b = Array2::from_shape_fn((k, n), |_| rng.random_range(-1.0f32..1.0));
            let mut one = Array2::<f32>::zeros((m, n));
            gemm(
                0.0,
                &mut one.view_mut(),
                1.0,
                &a.view(),
                &b.view(),
                Threads(1),
            );
            let mut two = Array2::<f32>::zeros((m, n));
            team::with_team(2, || {
                gemm(
                    0.0,
                    &mut two.view_mut(),
                    1.0,
                    &a.view(),
                    &b.view(),
                    Threads(2),
                )
            });
            assert_eq!(
                one.mapv(f32::to_bits),
                two.mapv(f32::to_bits),
                "{m}×{n}×{k}"
            );
            let want = a.dot(&b);
            assert!(
                one.iter()
                    .zip(want.iter())
                    .all(|(x, y)| (x - y).abs() < 1e-3),
                "{m}×{n}×{k}"
            );
        }
    }
}
