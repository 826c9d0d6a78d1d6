//! Input and target scaling, fitted on the training split and stored with the trained model so
//! predictions apply (and, for targets, invert) the same transform.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Zip};
use serde::{Deserialize, Serialize};

/// How to scale input features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Use features as given.
    #[default]
    None,
    /// z-score: (x − mean) / std.
    Standard,
    /// (x − min) / (max − min), into [0, 1].
    Minmax,
}

/// A per-column affine transform `x' = (x − shift)·scale`. Constant columns get scale 1, so they
/// become 0 instead of a division by zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    pub kind: Normalization,
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Scaler {
    pub fn identity(width: usize) -> Self {
        Scaler {
            kind: Normalization::None,
            shift: vec![0.0; width],
            scale: vec![1.0; width],
        }
    }

    /// Fits on the rows `rows` of `x` (statistics in f64).
    pub fn fit(kind: Normalization, x: ArrayView2<f32>, rows: &[usize]) -> Self {
        let width = x.ncols();
        let mut s = Scaler::identity(width);
        s.kind = kind;
        if rows.is_empty() {
            return s;
        }
        for c in 0..width {
            let col = x.column(c);
            let (shift, spread) = match kind {
                Normalization::None => return Scaler::identity(width),
                Normalization::Standard => {
                    let n = rows.len() as f64;
                    let mean = rows.iter().map(|&r| col[r] as f64).sum::<f64>() / n;
                    let var = rows
                        .iter()
                        .map(|&r| (col[r] as f64 - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    (mean, var.sqrt())
                }
                Normalization::Minmax => {
                    let (lo, hi) = rows
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                            (lo.min(col[r] as f64), hi.max(col[r] as f64))
                        });
                    (lo, hi - lo)
                }
            };
            s.shift[c] = shift as f32;
            s.scale[c] = if spread > 1e-12 && (1.0 / spread).is_finite() {
                (1.0 / spread) as f32
            } else {
                1.0
            };
        }
        s
    }

    pub fn is_identity(&self) -> bool {
        self.kind == Normalization::None
    }

    pub fn width(&self) -> usize {
        self.shift.len()
    }

    /// `dst ← (src − shift)·scale`.
    pub fn apply_row(&self, src: ArrayView1<f32>, mut dst: ArrayViewMut1<f32>) {
        Zip::from(&mut dst)
            .and(&src)
            .and(&self.shift[..])
            .and(&self.scale[..])
            .for_each(|d, &x, &sh, &sc| *d = scaled(x, sh, sc));
    }

    /// A scaled copy of `x`: [`Scaler::apply_row`]'s values, written once into memory that is
    /// not zeroed first (a one-row predict spent more on zeroing and the four-way `Zip` than on
    /// the arithmetic).
    pub fn transform(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let (rows, cols) = x.dim();
        let x = x.as_standard_layout();
        let values = x.as_slice().expect("standard layout");
        let mut out = Vec::with_capacity(rows * cols);
        for row in values.chunks_exact(cols.max(1)) {
            let columns = row.iter().zip(&self.shift).zip(&self.scale);
            out.extend(columns.map(|((&x, &sh), &sc)| scaled(x, sh, sc)));
        }
        Array2::from_shape_vec((rows, cols), out).expect("rows × cols values")
    }

    /// `y ← y/scale + shift` for every row: undoes [`Scaler::apply_row`].
    pub fn invert(&self, y: &mut Array2<f32>) {
        for mut row in y.rows_mut() {
            Zip::from(&mut row)
                .and(&self.shift[..])
                .and(&self.scale[..])
                .for_each(|v, &sh, &sc| *v = *v / sc + sh);
        }
    }
}

/// One scaled value: the same operations wherever a value is scaled.
#[inline]
fn scaled(x: f32, shift: f32, scale: f32) -> f32 {
    (x - shift) * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn standard_and_minmax_fit_on_the_given_rows_and_handle_constant_columns() {
        // Column 0 varies, column 1 is constant; row 3 is not part of the fit.
        let x = array![[1.0f32, 5.0], [3.0, 5.0], [5.0, 5.0], [100.0, 7.0]];
        let s = Scaler::fit(Normalization::Standard, x.view(), &[0, 1, 2]);
        let t = s.transform(x.slice(ndarray::s![..3, ..]));
        let std = (8.0f32 / 3.0).sqrt();
        assert_eq!(
            t.column(1).to_vec(),
            vec![0.0, 0.0, 0.0],
            "a constant column becomes 0, not NaN"
        );
        for (got, want) in t.column(0).iter().zip([-2.0 / std, 0.0, 2.0 / std]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let m = Scaler::fit(Normalization::Minmax, x.view(), &[0, 1, 2]);
        assert_eq!(m.transform(x.view()).row(1).to_vec(), vec![0.5, 0.0]);
        let mut y = m.transform(x.view());
        m.invert(&mut y);
        assert_eq!(y, x, "invert undoes apply");
        assert!(Scaler::fit(Normalization::None, x.view(), &[0]).is_identity());
    }

    #[test]
    fn transform_gives_apply_rows_bits_whatever_the_layout() {
        let x = array![[1.5f32, -2.0, 7.25], [0.1, 3.0, -9.5], [4.0, 4.5, 0.3]];
        let s = Scaler::fit(Normalization::Standard, x.view(), &[0, 1, 2]);
        let t = x.t(); // column-major: not standard layout
        let got = s.transform(t);
        for (r, row) in t.rows().into_iter().enumerate() {
            let mut want = ndarray::Array1::zeros(3);
            s.apply_row(row, want.view_mut());
            assert_eq!(got.row(r), want, "row {r}");
        }
        assert_eq!(s.transform(x.slice(ndarray::s![..0, ..])).dim(), (0, 3));
    }
}
