//! Mini-batch assembly: rows of the dataset gathered into preallocated buffers, scaled and
//! encoded on the way, and the classes an output row picks.

use crate::nn::{Dataset, Scaler, Targets, buffer, team};
use ndarray::{Array2, ArrayView1, ArrayView2, s};
use std::sync::{Mutex, PoisonError};

use super::fit::Encoding;

/// Gathers rows of the dataset into batch buffers, scaling and encoding on the way (no scaled
/// copy of the dataset is ever made).
pub(super) struct Gather<'a> {
    pub(super) data: &'a Dataset,
    pub(super) input: Scaler,
    pub(super) target: Option<Scaler>,
    pub(super) encoding: Encoding,
}

impl Gather<'_> {
    /// Gathers the rows `idx` into `x` and `y`. With `next` (the following batch), each thread
    /// then prefetches the rows of `next` it will gather next time: the rows are picked at random
    /// from a dataset far larger than the caches, and gathering them would otherwise wait on
    /// memory row after row. A thread prefetches into its own core's cache, so the rows are cut
    /// alike for both batches and each block is fetched by the thread that gathers it.
    pub(super) fn rows(
        &self,
        idx: &[usize],
        next: Option<&[usize]>,
        x: &mut Array2<f32>,
        y: &mut Array2<f32>,
    ) {
        let feats = self.data.features();
        team::rows(x.slice_mut(s![..idx.len(), ..]), &|first, mut block| {
            for (mut row, &i) in block.rows_mut().into_iter().zip(&idx[first..]) {
                self.input.apply_row(feats.row(i), row.view_mut());
            }
            if let Some(next) = next {
                let end = (first + block.nrows()).min(next.len());
                self.prefetch(&next[first.min(end)..end]);
            }
        });
        for (r, &i) in idx.iter().enumerate() {
            let mut yr = y.row_mut(r);
            match (self.data.targets(), self.encoding) {
                (Targets::Values(t), _) => match &self.target {
                    Some(s) => s.apply_row(t.row(i), yr),
                    None => yr.assign(&t.row(i)),
                },
                (Targets::Classes { indices, .. }, Encoding::Binary) => yr[0] = indices[i] as f32,
                (Targets::Classes { indices, .. }, _) => {
                    yr.fill(0.0);
                    yr[indices[i] as usize] = 1.0;
                }
            }
        }
    }

    /// Asks the CPU to start loading the feature rows of `idx` into this core's cache. A hint
    /// only.
    fn prefetch(&self, idx: &[usize]) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
            let feats = self.data.features();
            for &i in idx {
                if let Some(values) = feats.row(i).to_slice() {
                    for line in values.chunks(16) {
                        // SAFETY: a prefetch reads nothing and faults never; the address is
                        // inside a live slice.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = idx;
    }

    /// How many of the batch's output rows pick the right class.
    pub(super) fn correct(&self, idx: &[usize], out: ArrayView2<f32>) -> Option<usize> {
        let Targets::Classes { indices, .. } = self.data.targets() else {
            return None;
        };
        Some(
            idx.iter()
                .zip(out.rows())
                .filter(|&(&i, ref row)| {
                    predicted_class(row.view(), self.encoding) == indices[i] as usize
                })
                .count(),
        )
    }
}

/// A run's mini-batch buffers. With a team, two pairs: the next batch is gathered into the
/// second pair during the step, as a side job ([`team::overlap`]) that the step posts where its
/// helpers would otherwise wait (see [`crate::nn::Fitter::step_beside`]) — for a network too
/// small to share any product, the whole step, so the second thread gathers the batches while
/// the first computes. Alone, the one thread gathers each batch before its step.
pub(super) struct Batches {
    x: Array2<f32>,
    y: Array2<f32>,
    /// The buffers the next batch is gathered into, when gathered beside the step.
    next: Option<Mutex<(Array2<f32>, Array2<f32>)>>,
}

impl Batches {
    pub(super) fn new(rows: usize, inputs: usize, outputs: usize, beside: bool) -> Self {
        let buffers = || {
            (
                buffer::zeros::<f32>(rows, inputs, false),
                buffer::zeros::<f32>(rows, outputs, false),
            )
        };
        let (x, y) = buffers();
        Batches {
            x,
            y,
            next: beside.then(|| Mutex::new(buffers())),
        }
    }

    /// Runs `step` on batch `i` of `chunks` (its inputs and targets, gathered and scaled), with
    /// the job to run beside it (the next batch's gathering, or nothing).
    pub(super) fn step<R>(
        &mut self,
        gather: &Gather,
        chunks: &[&[usize]],
        i: usize,
        step: impl FnOnce(ArrayView2<f32>, ArrayView2<f32>, &(dyn Fn() + Sync)) -> R,
    ) -> R {
        let m = chunks[i].len();
        let Some(next) = &mut self.next else {
            gather.rows(
                chunks[i],
                chunks.get(i + 1).copied(),
                &mut self.x,
                &mut self.y,
            );
            return step(self.x.slice(s![..m, ..]), self.y.slice(s![..m, ..]), &|| ());
        };
        if i == 0 {
            gather.rows(chunks[0], chunks.get(1).copied(), &mut self.x, &mut self.y);
        }
        let shared: &Mutex<_> = next;
        let gather_next = || {
            if let Some(&following) = chunks.get(i + 1) {
                let mut next = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let (x, y) = &mut *next;
                gather.rows(following, chunks.get(i + 2).copied(), x, y);
            }
        };
        let r = step(
            self.x.slice(s![..m, ..]),
            self.y.slice(s![..m, ..]),
            &gather_next,
        );
        let next = next.get_mut().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut self.x, &mut next.0);
        std::mem::swap(&mut self.y, &mut next.1);
        r
    }
}

fn predicted_class(row: ArrayView1<f32>, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Binary => usize::from(row[0] >= 0.5),
        _ => argmax(row),
    }
}

/// Index of the largest value (the first one on ties).
pub(crate) fn argmax(row: ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}
