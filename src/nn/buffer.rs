//! Training buffers that start on a cache line.
//!
//! Products are cut into panels on multiples of 16 elements ([`super::matmul`]), which is 64
//! bytes of `f32`: when a buffer starts on a line (and, for panels of rows, its rows are whole
//! lines, as 784, 256 and 128 inputs make them), no line holds elements of two panels, so two
//! cores never write one line. The global allocator starts a buffer wherever it likes (glibc
//! puts a large one 16 bytes into its page), which left a line shared at every panel boundary
//! of every weight matrix and activation, passed from core to core at every step.

use super::Scalar;
use ndarray::{Array1, Array2, Order, s};

/// The cache line, in bytes.
const LINE: usize = 64;

/// A `rows × cols` array of zeros whose first element starts a cache line, row- or
/// column-major. The owned array holds a slightly longer vector and starts inside it.
pub(crate) fn zeros<F: Scalar>(rows: usize, cols: usize, column_major: bool) -> Array2<F> {
    let n = rows * cols;
    let pad = LINE / size_of::<F>();
    let v = vec![F::zero(); n + pad];
    // `align_offset` counts elements; it may decline (usize::MAX), then the array starts at 0.
    let first = Some(v.as_ptr().align_offset(LINE))
        .filter(|&o| o < pad)
        .unwrap_or(0);
    let order = if column_major {
        Order::ColumnMajor
    } else {
        Order::RowMajor
    };
    Array1::from_vec(v)
        .slice_move(s![first..first + n])
        .into_shape_with_order(((rows, cols), order))
        .expect("a contiguous vector of rows × cols elements")
}

/// A copy of `a` in a buffer from [`zeros`], in the order asked.
pub(crate) fn copy<F: Scalar>(a: &Array2<F>, column_major: bool) -> Array2<F> {
    let mut c = zeros(a.nrows(), a.ncols(), column_major);
    c.assign(a);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_line_in_either_order() {
        for (rows, cols) in [(64, 784), (3, 5), (0, 7), (256, 784)] {
            for column_major in [false, true] {
                let a = zeros::<f32>(rows, cols, column_major);
                assert_eq!(a.dim(), (rows, cols));
                // An empty array's pointer means nothing.
                let empty = rows * cols == 0;
                assert!(empty || (a.as_ptr() as usize).is_multiple_of(LINE));
                assert_eq!(
                    a.is_standard_layout(),
                    !column_major || rows <= 1 || cols <= 1
                );
                assert!(a.as_slice_memory_order().is_some());
                let b = Array2::from_shape_fn((rows, cols), |(r, c)| (r * cols + c) as f64);
                let c = copy(&b, column_major);
                assert_eq!(c, b);
                assert!(empty || (c.as_ptr() as usize).is_multiple_of(LINE));
            }
        }
    }
}
