//! A queued job's training input as the shared queue stores it, so that whichever replica
//! claims the job trains on exactly the rows the submitting replica prepared: the encoded
//! features and targets (4-byte little-endian words, row after row), the signature learned at
//! submission, and how a warm start treats its parent's scaling.

use super::StoreError;
use crate::nn::{Dataset, LabelSet, Targets};
use crate::tabular::Signature;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a worker needs to run a job, beside its record.
#[derive(Clone, Debug)]
pub struct JobInput {
    pub data: Arc<Dataset>,
    pub signature: Option<Signature>,
    /// A warm start (the record's `init_from_version`) refits the feature scaling.
    pub refit_scaling: bool,
}

/// The stored description of an input (its cells are stored beside it).
#[derive(Serialize, Deserialize)]
struct Shape {
    rows: usize,
    features: usize,
    /// Target columns of a regression; none for classes.
    targets: Option<usize>,
    labels: Option<LabelSet>,
    signature: Option<Signature>,
    refit_scaling: bool,
}

fn le_words<'a>(it: impl Iterator<Item = &'a f32>) -> Vec<u8> {
    it.flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl JobInput {
    /// The input as `(record, features, targets)`.
    ///
    /// # Errors
    /// The signature cannot be serialised.
    pub fn encode(&self) -> Result<(String, Vec<u8>, Vec<u8>), StoreError> {
        let x = self.data.features();
        let (targets, labels, cells) = match self.data.targets() {
            Targets::Values(y) => (Some(y.ncols()), None, le_words(y.iter())),
            Targets::Classes { labels, indices } => (
                None,
                Some(labels.clone()),
                indices.iter().flat_map(|i| i.to_le_bytes()).collect(),
            ),
        };
        let shape = Shape {
            rows: x.nrows(),
            features: x.ncols(),
            targets,
            labels,
            signature: self.signature.clone(),
            refit_scaling: self.refit_scaling,
        };
        let record =
            serde_json::to_string(&shape).map_err(|e| StoreError::Failed(e.to_string()))?;
        Ok((record, le_words(x.iter()), cells))
    }

    /// Rebuilds an input from what [`JobInput::encode`] gave.
    ///
    /// # Errors
    /// The stored input is malformed.
    pub fn decode(record: &str, features: &[u8], targets: &[u8]) -> Result<Self, StoreError> {
        let bad = |m: String| StoreError::Failed(format!("a stored job input is malformed: {m}"));
        let shape: Shape = serde_json::from_str(record).map_err(|e| bad(e.to_string()))?;
        let x = Array2::from_shape_vec((shape.rows, shape.features), floats(features))
            .map_err(|e| bad(e.to_string()))?;
        let t = match (shape.targets, shape.labels) {
            (Some(w), _) => Targets::Values(
                Array2::from_shape_vec((shape.rows, w), floats(targets))
                    .map_err(|e| bad(e.to_string()))?,
            ),
            (None, Some(labels)) => Targets::Classes {
                labels,
                indices: super::cells::words(targets),
            },
            (None, None) => return Err(bad("no targets".into())),
        };
        let data = Dataset::from_parts(x, t).map_err(|e| bad(e.to_string()))?;
        Ok(JobInput {
            data: Arc::new(data),
            signature: shape.signature,
            refit_scaling: shape.refit_scaling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Label;

    #[test]
    fn inputs_round_trip_exactly() {
        let x = ndarray::array![[0.5f32, -1.25], [3.0, 1e-7], [f32::MAX, 0.0]];
        let classes = Dataset::classification(
            x.clone(),
            &[
                Label::Str("b".into()),
                Label::Str("a".into()),
                Label::Str("b".into()),
            ],
        )
        .unwrap();
        let values = Dataset::regression(x, ndarray::array![[1.0f32], [2.5], [-3.0]]).unwrap();
        for d in [classes, values] {
            let input = JobInput {
                data: Arc::new(d.clone()),
                signature: None,
                refit_scaling: true,
            };
            let (r, f, t) = input.encode().unwrap();
            let back = JobInput::decode(&r, &f, &t).unwrap();
            assert_eq!(*back.data, d);
            assert!(back.refit_scaling);
        }
        assert!(JobInput::decode("{}", &[], &[]).is_err());
    }
}
