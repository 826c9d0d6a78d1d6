//! Matrix products: one helper over the `gemm` crate, which is 1.5–4× faster than ndarray's
//! default backend on the small and skinny products of mini-batch training (ECOSYSTEM.md).
//!
//! Operands are any strided ndarray views, so transposes cost nothing (`w.t()`).

use super::Scalar;
use gemm::Parallelism;
use ndarray::{ArrayView2, ArrayViewMut2};

/// How many threads a product may use. `1` computes on the calling thread; more runs on the
/// current rayon pool (install a pool of that size around the caller). The split is over
/// output blocks, never over the summed dimension, so results do not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Threads {
    fn parallelism(self) -> Parallelism {
        if self.0 > 1 {
            Parallelism::Rayon(self.0)
        } else {
            Parallelism::None
        }
    }
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
            threads.parallelism(),
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
        gemm(2.0, &mut c.view_mut(), 0.5, &a.view(), &b.view(), Threads(1));
        let want = a.dot(&b) * 0.5 + 2.0;
        assert_eq!(c, want);
        // Transposed operands through strides.
        let mut d = Array2::<f64>::zeros((3, 3));
        gemm(0.0, &mut d.view_mut(), 1.0, &a.t(), &a.view(), Threads(1));
        assert_eq!(d, a.t().dot(&a));
    }
}
