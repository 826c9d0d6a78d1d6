//! Scores of predictions against known answers, the way scikit-learn defines them: accuracy,
//! log loss (probabilities clipped to [1e-15, 1 − 1e-15]), per-class precision / recall / F1
//! (0 where a denominator is 0), the confusion matrix (rows: true class, columns: predicted),
//! ROC AUC of a binary classifier (the Mann–Whitney statistic, ties counted half); for
//! regressions MSE, RMSE, MAE, R² and quantiles of the residuals y − ŷ (linear interpolation,
//! as NumPy's default) with up to 500 rows' predicted and actual values. Pure: plain slices in,
//! plain numbers out, accumulated in f64.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Probabilities are clipped to this distance from 0 and 1 before the logarithm.
const LOG_LOSS_EPS: f64 = 1e-15;

/// What an evaluation found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Scores {
    Classification(ClassificationScores),
    Regression {
        /// One entry per target column, in the model's output order.
        targets: Vec<RegressionScores>,
    },
}

/// One class's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassScore {
    /// The class label, as the model names it.
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows whose true class this is.
    pub support: usize,
}

/// A classifier's figures on a set of rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassificationScores {
    pub accuracy: f64,
    /// Mean negative log-probability of the true class; absent when the model's outputs are
    /// not probabilities (a softmax, or one sigmoid unit, gives them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// The class order of `per_class` and of the confusion matrix's rows and columns.
    pub labels: Vec<String>,
    pub per_class: Vec<ClassScore>,
    /// `confusion_matrix[i][j]`: rows of true class `labels[i]` predicted as `labels[j]`.
    pub confusion_matrix: Vec<Vec<usize>>,
    /// The unweighted mean of the classes' F1.
    pub macro_f1: f64,
    /// Area under the ROC curve of the score of `labels[1]`, for two classes when both occur.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
}

/// Quantiles of the residuals y − ŷ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quantiles {
    pub min: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub max: f64,
}

/// A regression's figures for one target column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegressionScores {
    /// The target column.
    pub target: String,
    pub mse: f64,
    pub rmse: f64,
    pub mae: f64,
    /// 1 − SS_res / SS_tot; absent when the true values are all equal (SS_tot = 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    pub residuals: Quantiles,
    /// Up to [`MAX_PAIRS`] rows' predicted and actual values, evenly spread over the rows (all
    /// of them when there are no more), for a predicted-versus-actual plot. Absent in
    /// evaluations stored before it was kept.
    #[serde(default)]
    pub pairs: Vec<PredictedActual>,
}

/// One row's prediction beside its true value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PredictedActual {
    /// The row, 0-based, among all the rows given (those left out included).
    pub row: usize,
    pub predicted: f64,
    pub actual: f64,
}

/// The most predicted-versus-actual pairs kept per target column.
pub const MAX_PAIRS: usize = 500;

/// Which of `n` rows the pairs show: all, or [`MAX_PAIRS`] evenly spaced ones (row
/// `⌊i·n / MAX_PAIRS⌋` for i = 0, 1, …), the same rows every time.
pub fn pair_rows(n: usize) -> Vec<usize> {
    if n <= MAX_PAIRS {
        (0..n).collect()
    } else {
        (0..MAX_PAIRS).map(|i| i * n / MAX_PAIRS).collect()
    }
}

/// Scores classes: `truth[i]` and `predicted[i]` index `labels`; `probabilities`, when given,
/// holds one row of `labels.len()` class probabilities per row.
///
/// # Panics
/// Indices out of range or slices of different lengths (the caller's bug, not input).
pub fn classification(
    labels: &[String],
    truth: &[usize],
    predicted: &[usize],
    probabilities: Option<&[Vec<f64>]>,
) -> ClassificationScores {
    assert_eq!(truth.len(), predicted.len(), "one prediction per row");
    let k = labels.len();
    let n = truth.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassScore> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted_c);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassScore {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let macro_f1 = if k == 0 {
        0.0
    } else {
        per_class.iter().map(|c| c.f1).sum::<f64>() / k as f64
    };
    let log_loss = probabilities.map(|probs| {
        assert_eq!(probs.len(), n, "one probability row per row");
        let total: f64 = truth
            .iter()
            .zip(probs)
            .map(|(&t, p)| -p[t].clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS).ln())
            .sum();
        total / n.max(1) as f64
    });
    let roc_auc = match probabilities {
        Some(probs) if k == 2 => {
            let scores: Vec<f64> = probs.iter().map(|p| p[1]).collect();
            let positive: Vec<bool> = truth.iter().map(|&t| t == 1).collect();
            roc_auc(&scores, &positive)
        }
        _ => None,
    };
    ClassificationScores {
        accuracy: ratio(correct, n),
        log_loss,
        labels: labels.to_vec(),
        per_class,
        confusion_matrix: confusion,
        macro_f1,
        roc_auc,
    }
}

/// The probability that a random positive row scores above a random negative one (ties count
/// half); `None` unless both kinds occur.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Average ranks (1-based) over groups of tied scores; AUC = (Σ ranks of positives −
    // pos(pos+1)/2) / (pos · neg).
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&r| positive[r]).count() as f64;
        i = j + 1;
    }
    let (p, q) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * q))
}

/// Scores one target column: `truth` and `predicted` row by row; `rows[i]` numbers row `i` in
/// the pairs kept ([`pair_rows`] chooses them).
///
/// # Panics
/// Slices of different lengths, or empty ones (the caller's bug, not input).
pub fn regression(
    target: &str,
    truth: &[f64],
    predicted: &[f64],
    rows: &[usize],
) -> RegressionScores {
    assert_eq!(truth.len(), rows.len(), "one row number per row");
    assert_eq!(truth.len(), predicted.len(), "one prediction per row");
    assert!(!truth.is_empty(), "at least one row");
    let n = truth.len() as f64;
    let mut residuals: Vec<f64> = truth.iter().zip(predicted).map(|(y, p)| y - p).collect();
    let ss_res: f64 = residuals.iter().map(|r| r * r).sum();
    let mae = residuals.iter().map(|r| r.abs()).sum::<f64>() / n;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_tot: f64 = truth.iter().map(|y| (y - mean) * (y - mean)).sum();
    let mse = ss_res / n;
    residuals.sort_by(f64::total_cmp);
    let q = |p: f64| quantile(&residuals, p);
    RegressionScores {
        target: target.to_owned(),
        mse,
        rmse: mse.sqrt(),
        mae,
        r2: (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot),
        residuals: Quantiles {
            min: residuals[0],
            p05: q(0.05),
            p25: q(0.25),
            p50: q(0.5),
            p75: q(0.75),
            p95: q(0.95),
            max: residuals[residuals.len() - 1],
        },
        pairs: pair_rows(truth.len())
            .into_iter()
            .map(|i| PredictedActual {
                row: rows[i],
                predicted: predicted[i],
                actual: truth[i],
            })
            .collect(),
    }
}

/// The `p` quantile of sorted values, interpolating linearly between the nearest ranks.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let at = p * (sorted.len() - 1) as f64;
    let lo = at.floor() as usize;
    let hi = at.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    // Reference values from scikit-learn 1.9.1 and NumPy 2.4 (accuracy_score, precision_recall_fscore_support,
    // confusion_matrix, log_loss, roc_auc_score) on the same arrays.
    #[test]
    fn classification_matches_scikit_learn() {
        let truth = [0, 1, 2, 2, 1, 0, 2, 1];
        let pred = [0, 2, 2, 2, 1, 0, 1, 1];
        let s = classification(&names(3), &truth, &pred, None);
        assert_eq!(s.accuracy, 0.75);
        assert_eq!(
            s.confusion_matrix,
            vec![vec![2, 0, 0], vec![0, 2, 1], vec![0, 1, 2]]
        );
        let p: Vec<f64> = s.per_class.iter().map(|c| c.precision).collect();
        let r: Vec<f64> = s.per_class.iter().map(|c| c.recall).collect();
        assert_eq!(p, vec![1.0, 2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(r, vec![1.0, 2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(s.per_class[2].support, 3);
        assert!((s.macro_f1 - 0.777_777_777_777_777_8).abs() < 1e-12);
        assert_eq!(s.roc_auc, None);
    }

    #[test]
    fn log_loss_and_auc_of_a_binary_classifier_match_scikit_learn() {
        let truth = [0, 0, 1, 1];
        let p1 = [0.1, 0.4, 0.35, 0.8];
        let probs: Vec<Vec<f64>> = p1.iter().map(|&p| vec![1.0 - p, p]).collect();
        let pred: Vec<usize> = p1.iter().map(|&p| usize::from(p >= 0.5)).collect();
        let s = classification(&names(2), &truth, &pred, Some(&probs));
        // sklearn.metrics.log_loss([0,0,1,1],[.1,.4,.35,.8]) = 0.47228795380917615
        assert!((s.log_loss.unwrap() - 0.472_287_953_809_176_15).abs() < 1e-12);
        // sklearn.metrics.roc_auc_score([0,0,1,1],[.1,.4,.35,.8]) = 0.75
        assert_eq!(s.roc_auc, Some(0.75));
    }

    #[test]
    fn tied_scores_count_half_and_one_class_has_no_auc() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.2, 0.9], &[true, true]), None);
        // A class never predicted has precision 0, not NaN.
        let s = classification(&names(2), &[0, 1], &[0, 0], None);
        assert_eq!(s.per_class[1].precision, 0.0);
        assert_eq!(s.per_class[1].f1, 0.0);
    }

    #[test]
    fn regression_matches_scikit_learn_and_numpy() {
        let y = [3.0, -0.5, 2.0, 7.0];
        let p = [2.5, 0.0, 2.0, 8.0];
        let s = regression("y", &y, &p, &[0, 1, 2, 3]);
        // sklearn: mean_squared_error 0.375, mean_absolute_error 0.5, r2_score 0.9486081370…
        assert_eq!(s.mse, 0.375);
        assert_eq!(s.mae, 0.5);
        assert!((s.r2.unwrap() - 0.948_608_137_044_967_9).abs() < 1e-12);
        // numpy.quantile(y - p, [0, .05, .25, .5, .75, .95, 1]) = [-1, -0.925, -0.625, -0.25, 0.125, 0.425, 0.5]
        assert_eq!(s.residuals.min, -1.0);
        assert_eq!(s.residuals.p25, -0.625);
        assert_eq!(s.residuals.p50, -0.25);
        assert!((s.residuals.p05 + 0.925).abs() < 1e-12);
        assert!((s.residuals.p95 - 0.425).abs() < 1e-12);
        assert_eq!(s.residuals.p75, 0.125);
        assert_eq!(s.residuals.max, 0.5);
        assert_eq!(regression("y", &[1.0, 1.0], &[1.0, 2.0], &[0, 1]).r2, None);
        assert_eq!(s.pairs.len(), 4);
        assert_eq!(
            s.pairs[3],
            PredictedActual {
                row: 3,
                predicted: 8.0,
                actual: 7.0
            }
        );
    }

    #[test]
    fn pairs_are_at_most_500_evenly_spread_rows() {
        assert_eq!(pair_rows(3), vec![0, 1, 2]);
        let rows = pair_rows(1234);
        assert_eq!(rows.len(), MAX_PAIRS);
        assert_eq!((rows[0], rows[1], rows[499]), (0, 2, 1231));
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
    }
}
