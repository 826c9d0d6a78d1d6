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
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Axis, s};
use std::sync::{Mutex, PoisonError};

/// How many threads a product may use. `1` computes on the calling thread; more shares the
/// panels with the team the calling thread leads ([`team::with_team`]), if it leads one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

/// Products with fewer multiply-adds than this are not split (splitting costs more than it saves).
const SPLIT_WORK: usize = 1 << 20;
/// The most panels a product is cut into, and the narrowest panel. 32 (two of gemm's 16-lane
/// registers) cuts W's 128-unit layer into four panels rather than two, so a thread that is
/// late to a product can be made up for: W on 2 threads 159.5k → 163.8k samples/s (medians of
/// six alternated runs), 1 thread unchanged.
const MAX_PANELS: usize = 4;
const MIN_PANEL: usize = 32;

/// Whether a product of `m × k` by `k × n` may be shared among threads (else it always runs
/// on the calling thread).
pub fn may_share(m: usize, n: usize, k: usize) -> bool {
    m * n * k >= SPLIT_WORK
}

/// Panel width along `dim` for a product of `work` multiply-adds (a function of the shape only).
fn panel_width(dim: usize, work: usize) -> usize {
    if work < SPLIT_WORK {
        return dim;
    }
    dim.div_ceil(MAX_PANELS).next_multiple_of(16).max(MIN_PANEL)
}

/// Elementwise work on a piece of a product's result, run by the thread that computed the piece
/// right after it (while the piece is in that core's cache): `then(first_row, first_col, piece)`.
/// Its result must not depend on where the pieces are cut.
pub type Then<'a, F> = &'a (dyn Fn(usize, usize, ArrayViewMut2<'_, F>) + Sync);

/// `dst = alpha·dst + beta·(lhs · rhs)`, then `then` on every piece of `dst`. With `alpha == 0`
/// the old contents of `dst` are not read.
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
    then: Option<Then<'_, F>>,
) {
    let also = Also {
        then,
        ..Also::default()
    };
    product(alpha, dst, beta, lhs, rhs, threads, also);
}

/// `dst = bias + lhs · rhs`, the bias added to every row, then `then` on every piece of `dst`:
/// each panel writes its share of the bias before its product, so no thread fills the whole of
/// `dst` alone first.
pub fn affine<F: Scalar>(
    dst: &mut ArrayViewMut2<F>,
    lhs: &ArrayView2<F>,
    rhs: &ArrayView2<F>,
    bias: ArrayView1<F>,
    threads: Threads,
    then: Option<Then<'_, F>>,
) {
    let also = Also {
        bias: Some(bias),
        then,
        ..Also::default()
    };
    product(F::one(), dst, F::one(), lhs, rhs, threads, also);
}

/// [`gemm`] into a layer's weights (`dst`: units × inputs), with `beside` run as one more part
/// among the product's panels (by whichever thread is free): independent work that would
/// otherwise run alone before or after the product. It must not touch `dst`.
///
/// The panels are cut by rows — by units — whatever the shape, as the forward pass cuts its
/// output (batch × units) by columns: with the team's shares ([`team`]) a unit's weights are then
/// written here and read there by the same core, and stay in its cache (on W, 784-256-128-10,
/// this took 2 threads from 1.0× to 1.4–1.6× of 1 thread).
pub fn gemm_weights<F: Scalar>(
    alpha: F,
    dst: &mut ArrayViewMut2<F>,
    beta: F,
    lhs: &ArrayView2<F>,
    rhs: &ArrayView2<F>,
    threads: Threads,
    beside: &(dyn Fn() + Sync),
) {
    let also = Also {
        beside: Some(beside),
        by_rows: true,
        ..Also::default()
    };
    product(alpha, dst, beta, lhs, rhs, threads, also);
}

/// What a product does besides `alpha·dst + beta·(lhs · rhs)`.
struct Also<'a, F> {
    /// `dst` starts as this row repeated (then `alpha` is 1).
    bias: Option<ArrayView1<'a, F>>,
    beside: Option<&'a (dyn Fn() + Sync)>,
    /// Cut `dst` by rows even when it has more columns.
    by_rows: bool,
    then: Option<Then<'a, F>>,
}

impl<F> Default for Also<'_, F> {
    fn default() -> Self {
        Also {
            bias: None,
            beside: None,
            by_rows: false,
            then: None,
        }
    }
}

fn product<F: Scalar>(
    alpha: F,
    dst: &mut ArrayViewMut2<F>,
    beta: F,
    lhs: &ArrayView2<F>,
    rhs: &ArrayView2<F>,
    threads: Threads,
    also: Also<'_, F>,
) {
    let (m, k) = lhs.dim();
    let (k2, n) = rhs.dim();
    assert_eq!(k, k2, "inner dimensions differ");
    assert_eq!(dst.dim(), (m, n), "destination shape");
    if let Some(b) = &also.bias {
        assert_eq!(b.len(), n, "bias length");
    }
    // `then` on the whole of an uncut `dst`: cut by rows among the team when it is large (as
    // an elementwise pass of its own would be).
    let then_whole = |dst: &mut ArrayViewMut2<F>| {
        if let Some(then) = also.then {
            if threads.0 > 1 {
                team::rows(dst.view_mut(), &|first, block| then(first, 0, block));
            } else {
                then(0, 0, dst.view_mut());
            }
        }
    };
    // Too small to share among threads, and narrow: the kernels for few units (`narrow`).
    if !may_share(m, n, k) && F::narrow_product(alpha, dst, beta, lhs, rhs, also.bias) {
        then_whole(dst);
        if let Some(f) = also.beside {
            f();
        }
        return;
    }
    // One panel of the product, at `at` in `dst` (its bias starts at column `at.1`).
    let panel = |d: &mut ArrayViewMut2<F>, l: &ArrayView2<F>, r: &ArrayView2<F>, at: Corner| {
        let alpha = match &also.bias {
            Some(b) => {
                let b = b.slice(s![at.1..at.1 + d.ncols()]);
                for mut row in d.rows_mut() {
                    row.assign(&b);
                }
                F::one()
            }
            None => alpha,
        };
        if d.is_empty() {
            return;
        }
        if k == 0 {
            d.mapv_inplace(|v| v * alpha);
        } else {
            gemm_one(alpha, d, beta, l, r);
        }
    };
    // A panel of a cut product, then `then` on it by the same thread.
    let piece = |d: &mut ArrayViewMut2<F>, l: &ArrayView2<F>, r: &ArrayView2<F>, at: Corner| {
        panel(d, l, r, at);
        if let Some(then) = also.then {
            then(at.0, at.1, d.view_mut());
        }
    };
    // Split the larger output dimension into panels (or the rows when asked); `rows` says which.
    let rows = m > n || also.by_rows;
    let width = panel_width(if rows { m } else { n }, m * n * k);
    let split = width < if rows { m } else { n };
    if !(split && threads.0 > 1 && team::leading()) {
        if split {
            each_panel(dst, lhs, rhs, rows, width, |(mut d, l, r, at)| {
                piece(&mut d, &l, &r, at)
            });
        } else {
            panel(dst, lhs, rhs, (0, 0));
            then_whole(dst);
        }
        if let Some(f) = also.beside {
            f();
        }
        return;
    }
    let mut panels = Vec::new();
    each_panel(dst, lhs, rhs, rows, width, |p| panels.push(Mutex::new(p)));
    let beside = also.beside;
    team::for_each_part(panels.len() + usize::from(beside.is_some()), &|i| {
        let Some(p) = panels.get(i) else {
            if let Some(f) = beside {
                f();
            }
            return;
        };
        let mut p = p.lock().unwrap_or_else(PoisonError::into_inner);
        let (d, l, r, at) = &mut *p;
        piece(d, l, r, *at);
    });
}

/// A panel's first row and column in `dst`.
type Corner = (usize, usize);

/// A panel: its part of `dst`, `lhs` and `rhs`, and where it lies in `dst`.
type Panel<'a, F> = (
    ArrayViewMut2<'a, F>,
    ArrayView2<'a, F>,
    ArrayView2<'a, F>,
    Corner,
);

/// Cuts the product into panels of `width` rows (`rows`) or columns of `dst`, in order.
fn each_panel<'a, F: Scalar>(
    dst: &'a mut ArrayViewMut2<'_, F>,
    lhs: &'a ArrayView2<'_, F>,
    rhs: &'a ArrayView2<'_, F>,
    rows: bool,
    width: usize,
    mut f: impl FnMut(Panel<'a, F>),
) {
    if rows {
        for (i, (d, l)) in dst
            .axis_chunks_iter_mut(Axis(0), width)
            .zip(lhs.axis_chunks_iter(Axis(0), width))
            .enumerate()
        {
            f((d, l, rhs.view(), (i * width, 0)));
        }
    } else {
        for (i, (d, r)) in dst
            .axis_chunks_iter_mut(Axis(1), width)
            .zip(rhs.axis_chunks_iter(Axis(1), width))
            .enumerate()
        {
            f((d, lhs.view(), r, (0, i * width)));
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
            None,
        );
        let want = a.dot(&b) * 0.5 + 2.0;
        assert_eq!(c, want);
        // Transposed operands through strides.
        let mut d = Array2::<f64>::zeros((3, 3));
        gemm(
            0.0,
            &mut d.view_mut(),
            1.0,
            &a.t(),
            &a.view(),
            Threads(1),
            None,
        );
        assert_eq!(d, a.t().dot(&a));
    }

    fn random(rng: &mut rand_chacha::ChaCha8Rng, rows: usize, cols: usize) -> Array2<f32> {
        use rand::Rng;
        Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
    }

    /// `a · b` computed by a team of `threads`.
    fn product(a: &Array2<f32>, b: &Array2<f32>, threads: usize) -> Array2<f32> {
        let mut c = Array2::<f32>::zeros((a.nrows(), b.ncols()));
        team::with_team(threads, || {
            gemm(
                0.0,
                &mut c.view_mut(),
                1.0,
                &a.view(),
                &b.view(),
                Threads(threads),
                None,
            )
        });
        c
    }

    #[test]
    fn panels_agree_with_one_call_and_across_thread_counts() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (m, n, k) in [(64, 256, 784), (256, 784, 64), (300, 40, 200)] {
            let (a, b) = (random(&mut rng, m, k), random(&mut rng, k, n));
            let one = product(&a, &b, 1);
            let two = product(&a, &b, 2);
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

    #[test]
    fn a_bias_starts_every_row_and_work_beside_runs_once() {
        use rand::SeedableRng;
        use std::sync::atomic::{AtomicU32, Ordering};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Split by columns, by rows, and not split at all.
        for (m, n, k) in [(64, 256, 784), (512, 64, 200), (3, 5, 4)] {
            let (a, b) = (random(&mut rng, m, k), random(&mut rng, k, n));
            let bias = random(&mut rng, 1, n).row(0).to_owned();
            let mut want = product(&a, &b, 1);
            for mut row in want.rows_mut() {
                row += &bias;
            }
            let (mut alone, mut weights_alone) = (None, None);
            for threads in [1, 2] {
                let mut got = Array2::<f32>::from_elem((m, n), f32::NAN);
                team::with_team(threads, || {
                    let (a, b) = (a.view(), b.view());
                    affine(
                        &mut got.view_mut(),
                        &a,
                        &b,
                        bias.view(),
                        Threads(threads),
                        None,
                    )
                });
                assert!(
                    got.iter()
                        .zip(want.iter())
                        .all(|(x, y)| (x - y).abs() < 1e-4),
                    "{m}×{n}×{k}"
                );
                let bits = got.mapv(f32::to_bits);
                assert_eq!(
                    *alone.get_or_insert_with(|| bits.clone()),
                    bits,
                    "{m}×{n}×{k}"
                );
                let ran = AtomicU32::new(0);
                let mut c = Array2::<f32>::zeros((m, n));
                team::with_team(threads, || {
                    let (a, b) = (a.view(), b.view());
                    gemm_weights(
                        0.0,
                        &mut c.view_mut(),
                        1.0,
                        &a,
                        &b,
                        Threads(threads),
                        &|| {
                            ran.fetch_add(1, Ordering::Relaxed);
                        },
                    )
                });
                assert_eq!(ran.load(Ordering::Relaxed), 1, "{m}×{n}×{k}");
                let want = product(&a, &b, 1);
                assert!(
                    c.iter().zip(want.iter()).all(|(x, y)| (x - y).abs() < 1e-4),
                    "{m}×{n}×{k}"
                );
                // Cut by rows whatever the shape: still the same bits with 1 or 2 threads.
                let bits = c.mapv(f32::to_bits);
                assert_eq!(
                    *weights_alone.get_or_insert_with(|| bits.clone()),
                    bits,
                    "{m}×{n}×{k}"
                );
            }
        }
    }

    #[test]
    fn work_after_each_piece_sees_it_where_it_lies_once() {
        use ndarray::Array1;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        // Split by columns, by rows, and narrow (not split).
        for (m, n, k) in [(64, 256, 784), (512, 64, 200), (6, 3, 40)] {
            let (a, b) = (random(&mut rng, m, k), random(&mut rng, k, n));
            let code = |r: usize, c: usize| (r * n + c) as f32;
            let mut want = product(&a, &b, 1);
            for ((r, c), v) in want.indexed_iter_mut() {
                *v = *v * 2.0 + code(r, c);
            }
            for threads in [1, 2] {
                let mut got = Array2::<f32>::zeros((m, n));
                let then = |r0: usize, c0: usize, mut piece: ArrayViewMut2<f32>| {
                    for ((r, c), v) in piece.indexed_iter_mut() {
                        *v = *v * 2.0 + code(r0 + r, c0 + c);
                    }
                };
                team::with_team(threads, || {
                    let (a, b) = (a.view(), b.view());
                    gemm(
                        0.0,
                        &mut got.view_mut(),
                        1.0,
                        &a,
                        &b,
                        Threads(threads),
                        Some(&then),
                    )
                });
                assert_eq!(
                    got.mapv(f32::to_bits),
                    want.mapv(f32::to_bits),
                    "{m}×{n}×{k}, {threads} threads"
                );
                // With a bias: (6, 3, 40) takes the narrow kernels where the CPU has them.
                let bias = Array1::from_shape_fn(n, |c| c as f32 / 7.0);
                let mut with_bias = product(&a, &b, 1);
                for mut row in with_bias.rows_mut() {
                    row += &bias;
                }
                for ((r, c), v) in with_bias.indexed_iter_mut() {
                    *v = *v * 2.0 + code(r, c);
                }
                team::with_team(threads, || {
                    let (a, b) = (a.view(), b.view());
                    let dst = &mut got.view_mut();
                    affine(dst, &a, &b, bias.view(), Threads(threads), Some(&then))
                });
                assert!(
                    got.iter()
                        .zip(with_bias.iter())
                        .all(|(x, y)| (x - y).abs() < 1e-3),
                    "{m}×{n}×{k}, {threads} threads, with a bias"
                );
            }
        }
    }
}
