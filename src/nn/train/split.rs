//! The seeded validation split: stratified by class for classifiers, so each class keeps its
//! share on both sides.

use crate::nn::{Dataset, Targets};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::STREAM_SPLIT;

/// Row indices for training and validation. Classifiers are split per class, so each class
/// keeps its share on both sides.
pub fn holdout(data: &Dataset, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = match data.targets() {
        Targets::Classes { labels, indices } => Some((indices.as_slice(), labels.len())),
        Targets::Values(_) => None,
    };
    holdout_rows(classes, data.rows(), fraction, seed)
}

/// [`holdout`] for `n` rows given only their classes (`indices`, class count), if any: the
/// split a dataset with these targets gets, known before its features are built.
pub fn holdout_rows(
    classes: Option<(&[u32], usize)>,
    n: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM_SPLIT);
    if fraction <= 0.0 {
        return ((0..n).collect(), Vec::new());
    }
    let groups: Vec<Vec<usize>> = match classes {
        Some((indices, k)) => {
            let mut g = vec![Vec::new(); k];
            for (i, &c) in indices.iter().enumerate() {
                g[c as usize].push(i);
            }
            g
        }
        None => vec![(0..n).collect()],
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut g in groups {
        g.shuffle(&mut rng);
        let k = ((g.len() as f64) * fraction).round() as usize;
        let k = k.min(g.len().saturating_sub(1));
        val.extend_from_slice(&g[..k]);
        train.extend_from_slice(&g[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
