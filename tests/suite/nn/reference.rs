//! Reference values from an independent implementation (NumPy 2.4, float64). The snippet that
//! generated every constant below:
//!
//! ```python
//! import numpy as np
//! np.set_printoptions(precision=17)
//! # Fixed tiny networks: W stored out x in, z = a @ W.T + b.
//! X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-0.75, 0.8, 0.1], [0.0, -0.3, 1.2], [2.0, 1.0, -1.0]])
//! W1 = np.array([[0.2, -0.4, 0.1], [0.5, 0.3, -0.2], [-0.3, 0.8, 0.6], [0.05, -0.1, 0.4]])
//! b1 = np.array([0.1, -0.2, 0.05, 0.0])
//! W2 = np.array([[0.3, -0.6, 0.2, 0.7], [-0.5, 0.4, 0.9, -0.1], [0.25, 0.1, -0.3, 0.5]])
//! b2 = np.array([0.0, 0.1, -0.1])
//! Y = np.eye(3)[[0, 2, 1, 1, 0]]
//!
//! def softmax(z):
//!     e = np.exp(z - z.max(1, keepdims=True)); return e / e.sum(1, keepdims=True)
//! def sig(z): return 1 / (1 + np.exp(-z))
//!
//! def forward(W1, b1, W2, b2, hidden, out):
//!     h = hidden(X @ W1.T + b1); z = h @ W2.T + b2; return h, z, out(z)
//!
//! def grads_ce(W1, b1, W2, b2):
//!     h, z, a = forward(W1, b1, W2, b2, np.tanh, softmax)
//!     m = len(X); cost = -(Y * np.log(a)).sum() / m
//!     d2 = (a - Y) / m
//!     gW2, gb2 = d2.T @ h, d2.sum(0)
//!     d1 = (d2 @ W2) * (1 - h**2)
//!     return cost, a, [d1.T @ X, d1.sum(0), gW2, gb2]
//!
//! def grads_mse(W1, b1, W2, b2):
//!     h, z, a = forward(W1, b1, W2, b2, sig, sig)
//!     T = Y[:, :3]; m = len(X); cost = 0.5 * ((a - T)**2).sum() / m
//!     d2 = (a - T) * a * (1 - a) / m
//!     d1 = (d2 @ W2) * h * (1 - h)
//!     return cost, a, [d1.T @ X, d1.sum(0), d2.T @ h, d2.sum(0)]
//!
//! P = [W1, b1, W2, b2]
//! for name, g in [("ce", grads_ce), ("mse", grads_mse)]:
//!     cost, a, G = g(*P)
//!     print(f"== {name}: cost {cost!r}\noutput\n{a!r}")
//!     sgd = [p - 0.5 * gp for p, gp in zip(P, G)]
//!     print("sgd lr=0.5 W1\n", repr(sgd[0]), "\nb2", repr(sgd[3]))
//!     # Adam, one step, lr 0.1, betas (0.9, 0.999), eps 1e-8, PyTorch's formulation.
//!     lr, b1_, b2_, eps = 0.1, 0.9, 0.999, 1e-8
//!     adam = []
//!     for p, gp in zip(P, G):
//!         m_ = (1 - b1_) * gp; v_ = (1 - b2_) * gp**2
//!         adam.append(p - lr * (m_ / (1 - b1_)) / (np.sqrt(v_ / (1 - b2_)) + eps))
//!     print("adam lr=0.1 W2\n", repr(adam[2]), "\nb1", repr(adam[1]))
//! ```
//!
//! Our f64 results must match to 1e-12 (only summation order differs); our f32 results, which
//! is what training uses, to 2e-6.
// The constants are pasted verbatim from NumPy's output.
#![allow(clippy::excessive_precision)]

use mlpd::nn::{Activation, Dense, Fitter, Loss, Network, Optimizer, Scalar};
use ndarray::{Array1, Array2, array};

fn x() -> Array2<f64> {
    array![
        [0.5, -1.0, 2.0],
        [1.5, 0.25, -0.5],
        [-0.75, 0.8, 0.1],
        [0.0, -0.3, 1.2],
        [2.0, 1.0, -1.0]
    ]
}

fn y() -> Array2<f64> {
    array![
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0]
    ]
}

fn net<F: Scalar>(hidden: Activation, out: Activation) -> Network<F> {
    let w1 = array![
        [0.2, -0.4, 0.1],
        [0.5, 0.3, -0.2],
        [-0.3, 0.8, 0.6],
        [0.05, -0.1, 0.4]
    ];
    let b1 = array![0.1, -0.2, 0.05, 0.0];
    let w2 = array![
        [0.3, -0.6, 0.2, 0.7],
        [-0.5, 0.4, 0.9, -0.1],
        [0.25, 0.1, -0.3, 0.5]
    ];
    let b2 = array![0.0, 0.1, -0.1];
    Network::<f64>::from_layers(vec![
        Dense {
            weights: w1,
            bias: b1,
            activation: hidden,
        },
        Dense {
            weights: w2,
            bias: b2,
            activation: out,
        },
    ])
    .unwrap()
    .cast()
}

fn close<F: Scalar, D: ndarray::Dimension>(
    got: &ndarray::Array<F, D>,
    want: &ndarray::Array<f64, D>,
    tol: f64,
    what: &str,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (g, w) in got.iter().zip(want.iter()) {
        let g = g.as_f64();
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}: got {g}, want {w} (tolerance {tol})"
        );
    }
}

struct Case {
    hidden: Activation,
    out: Activation,
    loss: Loss,
    cost: f64,
    output: Array2<f64>,
    sgd_w1: Array2<f64>,
    sgd_b2: Array1<f64>,
    adam_w2: Array2<f64>,
    adam_b1: Array1<f64>,
}

fn cases() -> [Case; 2] {
    [
        Case {
            hidden: Activation::Tanh,
            out: Activation::Softmax,
            loss: Loss::CrossEntropy,
            cost: 1.018723537577988,
            output: array![
                [0.5918712875569327, 0.1486664599988685, 0.2594622524441988],
                [0.23995985053331434, 0.3303522715902734, 0.4296878778764122],
                [0.29671466729666834, 0.553156705836106, 0.15012862686722575],
                [0.5108851397483254, 0.2579052804100753, 0.23120957984159934],
                [0.16911462052732557, 0.47380514993081874, 0.3570802295418557]
            ],
            sgd_w1: array![
                [
                    0.3394299469222587,
                    -0.3712141528435012,
                    -0.00146764731606056
                ],
                [0.435323161311927, 0.31552120244392234, -0.17171156378640023],
                [-0.39959126119693217, 0.7728882271433671, 0.698529151119032],
                [
                    0.17754279358193148,
                    -0.0790505806745359,
                    0.31571894206899354
                ]
            ],
            sgd_b2: array![
                0.01914544343374337,
                0.12361141322338581,
                -0.14275685665712917
            ],
            adam_w2: array![
                [
                    3.9999996607147187e-01,
                    -5.0000000732065519e-01,
                    1.0000000960648008e-01,
                    6.0000002501441252e-01
                ],
                [
                    -5.9999994497441000e-01,
                    3.0000000480491051e-01,
                    9.9999999481575141e-01,
                    -1.1491029544563602e-08
                ],
                [
                    1.5000008849268404e-01,
                    1.9999998601802205e-01,
                    -3.9999998873817999e-01,
                    4.0000002125513212e-01
                ]
            ],
            adam_b1: array![
                3.6849991696952245e-08,
                -1.0000001318114958e-01,
                1.4999996328475773e-01,
                -9.9999964151472942e-02
            ],
        },
        Case {
            hidden: Activation::Sigmoid,
            out: Activation::Sigmoid,
            loss: Loss::Mse,
            cost: 0.4131420421955596,
            output: array![
                [0.649610823517372, 0.5836076257169512, 0.5726055470482846],
                [0.5408427761823765, 0.5943371067827391, 0.556245364210029],
                [0.588472142380342, 0.6603441895161346, 0.5166038399496835],
                [0.6262606850281197, 0.6130534714927454, 0.5514813167590192],
                [0.5105219794519948, 0.6215769432398515, 0.5449346742321287]
            ],
            sgd_w1: array![
                [
                    0.20866231195708596,
                    -0.40030423210373844,
                    0.09604780625956187
                ],
                [
                    0.4930254214891835,
                    0.30163488610520367,
                    -0.19991722767348905
                ],
                [-0.3119066898472337, 0.7995733186227345, 0.6032200884676014],
                [
                    0.05385822110743368,
                    -0.1015353237348406,
                    0.39403008141498347
                ]
            ],
            sgd_b2: array![
                -0.02213321383280129,
                0.07366482806402264,
                -0.14311486762302988
            ],
            adam_w2: array![
                [
                    2.0000004830119686e-01,
                    -6.9999993754696421e-01,
                    1.0000003331551520e-01,
                    6.0000004309869337e-01
                ],
                [
                    -5.9999996998500449e-01,
                    3.0000002568488354e-01,
                    8.0000006030598070e-01,
                    -1.9999996227692479e-01
                ],
                [
                    1.5000002124198408e-01,
                    2.7147717449049757e-08,
                    -3.9999998178826524e-01,
                    4.0000001990907597e-01
                ]
            ],
            adam_b1: array![
                4.4492493733727656e-07,
                -1.0000069457226235e-01,
                -4.9999874611835818e-02,
                -9.9999940087869943e-02
            ],
        },
    ]
}

fn check_case<F: Scalar>(c: &Case, tol: f64) {
    let what = format!(
        "{:?}/{:?}/{:?} in {}",
        c.hidden,
        c.out,
        c.loss,
        std::any::type_name::<F>()
    );
    let (x, y) = (x().mapv(F::from_f64), y().mapv(F::from_f64));
    // Forward output and cost.
    let n = net::<F>(c.hidden, c.out);
    close(
        &n.predict(x.view()),
        &c.output,
        tol,
        &format!("{what}: output"),
    );
    let mut f = Fitter::new(n.clone(), c.loss, &Optimizer::Sgd, 0.0, 5, 1).unwrap();
    let cost = f.objective(x.view(), y.view()).as_f64();
    assert!(
        (cost - c.cost).abs() <= tol,
        "{what}: cost {cost}, want {}",
        c.cost
    );
    // One plain gradient-descent step (the fused update), lr 0.5.
    f.step(x.view(), y.view(), F::from_f64(0.5));
    close(
        &f.network().layers()[0].weights,
        &c.sgd_w1,
        tol,
        &format!("{what}: W1 after sgd"),
    );
    close(
        &f.network().layers()[1].bias,
        &c.sgd_b2,
        tol,
        &format!("{what}: b2 after sgd"),
    );
    // One Adam step, lr 0.1.
    let mut f = Fitter::new(n, c.loss, &Optimizer::adam(), 0.0, 5, 1).unwrap();
    f.step(x.view(), y.view(), F::from_f64(0.1));
    close(
        &f.network().layers()[1].weights,
        &c.adam_w2,
        tol,
        &format!("{what}: W2 after adam"),
    );
    close(
        &f.network().layers()[0].bias,
        &c.adam_b1,
        tol,
        &format!("{what}: b1 after adam"),
    );
}

#[test]
fn forward_cost_sgd_and_adam_match_numpy_in_f64() {
    for c in &cases() {
        check_case::<f64>(c, 1e-12);
    }
}

#[test]
fn forward_cost_sgd_and_adam_match_numpy_in_f32() {
    for c in &cases() {
        check_case::<f32>(c, 2e-6);
    }
}
