//! Response bodies: what clients see of models, versions, datasets and jobs.

use crate::jobs::{Job, JobError, JobStatus};
use crate::nn::{EpochReport, LabelSet, LayerSpec, Loss, Normalization, StopReason, TrainParams};
use crate::registry::{ModelEntry, VersionMeta, VersionMetrics};
use crate::store::DatasetRecord;
use crate::tabular::{ColumnInfo, Feature, Signature, Task};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The job that trained it (none for an imported version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<Uuid>,
    pub params: TrainParams,
    pub metrics: VersionMetrics,
    /// Input scaling applied automatically at prediction.
    pub normalize: Normalization,
    /// The classes of a classifier, in output order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSet>,
    /// The features in order (type, imputation, levels, scaling, place in the network input)
    /// and the targets; absent for versions trained before signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureView>,
    /// The version whose weights training started from (a warm start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_version: Option<u32>,
    /// Whether predictions without `?version=` or `?alias=` use it.
    pub served: bool,
    /// Whether it is pinned (policy `pinned`).
    pub pinned: bool,
    /// The aliases naming it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A version's signature as clients read it.
#[derive(Serialize, ToSchema)]
pub struct SignatureView {
    /// The network's input width (the encoded features).
    pub inputs: usize,
    pub features: Vec<FeatureView>,
    /// The target columns' names.
    pub targets: Vec<String>,
    /// Columns of the training data left out (`?ignore=`): a prediction may carry them, and
    /// they are disregarded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// One feature: its preprocessing and where it lands in the network input.
#[derive(Serialize, ToSchema)]
pub struct FeatureView {
    pub feature: Feature,
    /// Its first column in the network input.
    pub offset: usize,
    /// Its encoded columns' names (`cut=Ideal`, `age:missing`, …).
    pub columns: Vec<String>,
    /// The input scaling applied after encoding, per encoded column: `(x − shift)·scale`.
    #[schema(value_type = Vec<crate::api::openapi::Float32>)]
    pub shift: Vec<f32>,
    #[schema(value_type = Vec<crate::api::openapi::Float32>)]
    pub scale: Vec<f32>,
}

impl SignatureView {
    pub fn of(sig: &Signature, scaler: &crate::nn::Scaler) -> Self {
        let mut offset = 0;
        let features = sig
            .features
            .iter()
            .map(|f| {
                let w = f.width();
                let view = FeatureView {
                    feature: f.clone(),
                    offset,
                    columns: f.column_names(),
                    shift: scaler
                        .shift
                        .get(offset..offset + w)
                        .unwrap_or_default()
                        .to_vec(),
                    scale: scaler
                        .scale
                        .get(offset..offset + w)
                        .unwrap_or_default()
                        .to_vec(),
                };
                offset += w;
                view
            })
            .collect();
        SignatureView {
            inputs: sig.width(),
            features,
            targets: sig.targets.clone(),
            ignored: sig.ignored.clone(),
        }
    }
}

impl From<&VersionMeta> for VersionView {
    fn from(v: &VersionMeta) -> Self {
        VersionView {
            version: v.version,
            created_at: v.created_at,
            job_id: v.job_id,
            dataset_id: v.dataset_id,
            params: v.params.clone(),
            metrics: v.metrics.clone(),
            normalize: v.trained.input_scaler.kind,
            labels: v.trained.labels.clone(),
            signature: v
                .signature
                .as_ref()
                .map(|s| SignatureView::of(s, &v.trained.input_scaler)),
            parent_version: v.parent_version,
            served: false,
            pinned: false,
            aliases: Vec::new(),
        }
    }
}

impl VersionView {
    /// The version with its serving state in model `m`.
    pub fn of(v: &VersionMeta, m: &ModelEntry) -> Self {
        VersionView {
            served: m.served().is_some_and(|s| s.version == v.version),
            pinned: m.pinned_version == Some(v.version),
            aliases: m
                .aliases
                .iter()
                .filter(|(_, n)| **n == v.version)
                .map(|(a, _)| a.clone())
                .collect(),
            ..VersionView::from(v)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The network's input width: as defined, or (for a model defined without `inputs`) as its
    /// latest version's data made it; absent until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<usize>,
    pub layers: Vec<LayerSpec>,
    pub loss: Loss,
    /// Trainable weights and biases.
    pub parameters: usize,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The newest version, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_metrics: Option<VersionMetrics>,
    /// Version numbers, oldest first.
    pub versions: Vec<u32>,
    /// `latest` (the newest version is served) or `pinned`.
    pub serving_policy: crate::api::serving::ServingPolicy,
    /// The version predictions use without `?version=` or `?alias=`: the pinned one, else the
    /// newest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<u32>,
    /// Alias → version.
    pub aliases: std::collections::BTreeMap<String, u32>,
}

impl From<&ModelEntry> for ModelView {
    fn from(m: &ModelEntry) -> Self {
        ModelView {
            name: m.name.to_string(),
            description: m.description.clone(),
            inputs: match m.spec.inputs {
                0 => m.latest().map(|v| v.trained.spec.inputs),
                n => Some(n),
            },
            layers: m.spec.layers.clone(),
            loss: m.spec.loss,
            parameters: m.spec.parameter_count(),
            created_at: m.created_at,
            latest_version: m.latest().map(|v| v.version),
            latest_metrics: m.latest().map(|v| v.metrics.clone()),
            versions: m.versions.iter().map(|v| v.version).collect(),
            serving_policy: crate::api::serving::policy(m.pinned_version),
            serving_version: m.served().map(|v| v.version),
            aliases: m.aliases.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DatasetView {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub rows: usize,
    pub input_width: usize,
    /// Regression datasets: target columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_width: Option<usize>,
    /// The classes a classifier learns from the target (text, or integers with few values), in
    /// output order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<LabelSet>,
    /// Every column, features then targets: name, type, missing cells, and levels (count and
    /// most frequent) or range. Empty for datasets stored before typed columns.
    pub columns: Vec<ColumnView>,
    /// The target columns' names.
    pub targets: Vec<String>,
    /// What the uploader said the targets are (otherwise the model decides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Columns left out at upload (`?ignore=`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// One column of a dataset.
#[derive(Serialize, ToSchema)]
pub struct ColumnView {
    #[serde(flatten)]
    pub info: ColumnInfo,
    /// Whether it is a target.
    pub target: bool,
}

impl From<&DatasetRecord> for DatasetView {
    fn from(d: &DatasetRecord) -> Self {
        DatasetView {
            id: d.id,
            name: d.name.clone(),
            rows: d.rows,
            input_width: d.input_width,
            target_width: d.target_width,
            classes: d.classes.clone(),
            columns: d
                .columns
                .iter()
                .map(|c| ColumnView {
                    info: c.info.clone(),
                    target: c.target,
                })
                .collect(),
            targets: d
                .columns
                .iter()
                .filter(|c| c.target)
                .map(|c| c.info.name.clone())
                .collect(),
            task: d.task,
            ignored: d.ignored.clone(),
            created_at: d.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<Uuid>,
    pub status: JobStatus,
    /// Epochs completed.
    pub epoch: u32,
    /// Epochs requested.
    pub epochs: u32,
    /// `epoch / epochs`, 1 once succeeded.
    pub progress: f64,
    /// The last completed epochs, at most [`RECENT_EPOCHS`], oldest first (omitted in lists).
    /// The whole history is paged at `GET /v1/jobs/{id}/history`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_epochs: Option<Vec<EpochReport>>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The version this job created, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub params: TrainParams,
    /// Rows of the dataset trained on, and rows left out because a target was missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_used: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_skipped: Option<usize>,
    /// The version a warm start began from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from_version: Option<u32>,
    /// Once succeeded: the final figures of the version it created (as the version shows them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<VersionMetrics>,
}

/// Epochs a job view carries (its history has its own, paged route).
pub const RECENT_EPOCHS: usize = 10;

impl JobView {
    /// The job's summary; with `with_recent`, also its last [`RECENT_EPOCHS`] epochs.
    pub fn of(job: &Job, with_recent: bool) -> Self {
        let st = job.state();
        let recent = with_recent
            .then(|| st.history[st.history.len().saturating_sub(RECENT_EPOCHS)..].to_vec());
        let epoch = st.history.last().map_or(0, |r| r.epoch);
        let epochs = job.params.epochs;
        let progress = if st.status == JobStatus::Succeeded {
            1.0
        } else {
            f64::from(epoch) / f64::from(epochs.max(1))
        };
        JobView {
            id: job.id,
            model: job.model.to_string(),
            dataset_id: job.dataset_id,
            status: st.status,
            epoch,
            epochs,
            progress,
            recent_epochs: recent,
            created_at: job.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            error: st.error.clone(),
            model_version: st.model_version,
            stop_reason: st.stop_reason,
            params: job.params.clone(),
            rows_used: job.rows.map(|r| r.rows_used),
            rows_skipped: job.rows.map(|r| r.rows_skipped),
            init_from_version: job.init_from_version,
            metrics: st.metrics.clone(),
        }
    }
}
