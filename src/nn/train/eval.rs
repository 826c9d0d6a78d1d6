//! Cost and accuracy of a network over a whole split (the validation rows), in chunks of
//! [`EVAL_CHUNK`] rows with the evaluator's own buffers, on the calling thread.

use crate::nn::matmul::Threads;
use crate::nn::{Head, Network};
use ndarray::{Array1, Array2, s};

use super::gather::Gather;

/// Rows per forward pass when evaluating a whole split.
const EVAL_CHUNK: usize = 512;

/// Cost and accuracy of a network over a set of rows, in chunks, with its own buffers.
pub(super) struct Evaluator {
    head: Head,
    weights: Option<Array1<f32>>,
    bufs: Vec<Array2<f32>>,
    x: Array2<f32>,
    y: Array2<f32>,
    z: Array2<f32>,
}

impl Evaluator {
    pub(super) fn new(
        net: &Network<f32>,
        head: Head,
        weights: Option<Array1<f32>>,
        outputs: usize,
    ) -> Self {
        Evaluator {
            head,
            weights,
            bufs: net
                .layers()
                .iter()
                .map(|l| Array2::zeros((EVAL_CHUNK, l.units())))
                .collect(),
            x: Array2::zeros((EVAL_CHUNK, net.inputs())),
            y: Array2::zeros((EVAL_CHUNK, outputs)),
            z: Array2::zeros((EVAL_CHUNK, outputs)),
        }
    }

    pub(super) fn run(
        &mut self,
        net: &Network<f32>,
        gather: &Gather,
        idx: &[usize],
    ) -> (f64, Option<f64>) {
        let (mut cost, mut correct) = (0f64, None::<usize>);
        let mut chunks = idx.chunks(EVAL_CHUNK).peekable();
        while let Some(chunk) = chunks.next() {
            let m = chunk.len();
            gather.rows(chunk, chunks.peek().copied(), &mut self.x, &mut self.y);
            let x = self.x.slice(s![..m, ..]);
            net.forward_into(x, &mut self.bufs, Threads(1));
            let last = self.bufs.len() - 1;
            let a = self.bufs[last].slice(s![..m, ..]);
            let y = self.y.slice(s![..m, ..]);
            if self.head.needs_z() {
                // Recover z for the stable cross-entropy: recompute the output layer's affine map.
                let input = if last == 0 {
                    x
                } else {
                    self.bufs[last - 1].slice(s![..m, ..])
                };
                net.layers()[last].affine(&input, &mut self.z.slice_mut(s![..m, ..]), Threads(1));
            }
            let z = self.z.slice(s![..m, ..]);
            cost += self
                .head
                .cost_sum(&z, &a, &y, self.weights.as_ref().map(|w| w.view()))
                as f64;
            if let Some(c) = gather.correct(chunk, a) {
                *correct.get_or_insert(0) += c;
            }
        }
        let n = idx.len() as f64;
        (cost / n, correct.map(|c| c as f64 / n))
    }
}
