//! The neural network: a multi-layer perceptron trained by back propagation and mini-batch
//! gradient descent.
//!
//! Pure and synchronous: this module imports std, ndarray, num-traits, rand, serde, thiserror and
//! `gemm`, which computes its matrix products (on the run's own threads, `team`) — never tokio,
//! axum or service types — so it could become its own crate without edits. Everything is
//! deterministic given a seed: the same data, spec, parameters and seed give bit-identical
//! weights and cost history whatever the thread count. The OpenAPI schemas of its types are declared in `api::schemas`.
//!
//! Layout: samples are rows. A layer's weights are stored `out × in`, so one layer computes
//! `Z = A·Wᵀ + b` for a batch and `z = W·x + b` for a single row (a matrix–vector product).
//!
//! The core ([`Network`], [`Fitter`]) is generic over [`Scalar`] (`f32` for training and
//! serving, `f64` for the gradient checks that verify the very same code).

mod activation;
mod buffer;
mod data;
mod fitter;
mod infer;
mod init;
pub mod integral;
mod loss;
mod matmul;
mod model;
mod narrow;
mod network;
mod optim;
mod scaling;
mod spec;
mod team;
mod train;

pub use activation::{Activation, LEAKY_SLOPE};
pub use data::{Dataset, DatasetError, Label, LabelSet, Targets};
pub use fitter::{BatchStats, Fitter};
pub use loss::{Head, Loss};
pub use model::{FORMAT_VERSION, ModelError, Prediction, TrainedModel};
pub use network::{Dense, Network};
pub use optim::Gradient;
pub use optim::{LrSchedule, Optimizer};
pub use scaling::{Normalization, Scaler};
pub use spec::{FieldError, LayerSpec, NetworkSpec};
pub use train::{
    EarlyStopping, EpochReport, MAX_EPOCHS, NoObserver, Observer, ParamError, StopReason,
    TrainError, TrainOutcome, TrainParams, WarmStart, check_data, check_warm_start, holdout,
    holdout_rows, train, train_from,
};

/// The floating-point types the core computes in: `f32` to train and serve, `f64` to check.
pub trait Scalar:
    num_traits::Float
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::fmt::Debug
    + Default
    + Send
    + Sync
    + 'static
{
    fn from_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;

    /// `dst = alpha·dst + beta·(lhs · rhs)` (or `bias + lhs · rhs`) by `narrow::product`
    /// where it applies: `f32` only; `false` for other types and shapes.
    fn narrow_product(
        alpha: Self,
        dst: &mut ndarray::ArrayViewMut2<Self>,
        beta: Self,
        lhs: &ndarray::ArrayView2<Self>,
        rhs: &ndarray::ArrayView2<Self>,
        bias: Option<ndarray::ArrayView1<Self>>,
    ) -> bool {
        let _ = (alpha, dst, beta, lhs, rhs, bias);
        false
    }
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn narrow_product(
        alpha: Self,
        dst: &mut ndarray::ArrayViewMut2<Self>,
        beta: Self,
        lhs: &ndarray::ArrayView2<Self>,
        rhs: &ndarray::ArrayView2<Self>,
        bias: Option<ndarray::ArrayView1<Self>>,
    ) -> bool {
        narrow::product(alpha, dst, beta, lhs, rhs, bias)
    }
}

impl Scalar for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
}
