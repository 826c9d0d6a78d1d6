//! `/v1/samples`: the datasets bundled in the binary ([`crate::samples`]), listed with a network
//! and training parameters that suit each, and copied into an ordinary dataset on request
//! (`POST /v1/samples/{name}` → 201, parsed by the upload's CSV reader on a blocking thread and
//! stored by the upload's path).

use super::datasets::store;
use super::extract::Path;
use super::views::DatasetView;
use crate::domain::csv::CsvOptions;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::LayerSpec;
use crate::samples::{SAMPLES, Sample};
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct SampleList {
    pub samples: Vec<SampleView>,
}

/// A bundled dataset and how to start with it.
#[derive(Serialize, ToSchema)]
pub struct SampleView {
    /// Its name, also the name of the dataset `POST /v1/samples/{name}` makes.
    pub name: String,
    pub description: String,
    /// Data rows.
    pub rows: usize,
    /// Columns, the target included.
    pub columns: usize,
    /// The target column.
    pub target: String,
    /// A body for `POST /v1/models` (add a `name`) whose network learns this data.
    pub model: SuggestedModel,
    /// A body for `POST /v1/models/{name}/train` (add the dataset's `dataset_id`) that suits
    /// that network.
    pub train: SuggestedTraining,
}

#[derive(Serialize, ToSchema)]
pub struct SuggestedModel {
    /// Hidden layers, then the output layer (`inputs` left out: the data decides it).
    pub layers: Vec<LayerSpec>,
}

#[derive(Serialize, ToSchema)]
pub struct SuggestedTraining {
    pub epochs: u32,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub validation_split: f64,
}

impl From<&Sample> for SampleView {
    fn from(s: &Sample) -> Self {
        SampleView {
            name: s.name.to_owned(),
            description: s.description.to_owned(),
            rows: s.rows(),
            columns: s.columns(),
            target: s.target.to_owned(),
            model: SuggestedModel { layers: s.layers() },
            train: SuggestedTraining {
                epochs: s.epochs,
                learning_rate: s.learning_rate,
                batch_size: s.batch_size,
                validation_split: s.validation_split,
            },
        }
    }
}

/// The datasets bundled in the binary, to start with when there is no data of one's own.
#[utoipa::path(get, path = "/v1/samples", operation_id = "listSamples", tag = "datasets",
    responses((status = 200, description = "The bundled datasets", body = SampleList)))]
pub async fn list() -> axum::Json<SampleList> {
    axum::Json(SampleList {
        samples: SAMPLES.iter().map(SampleView::from).collect(),
    })
}

/// Store a bundled dataset as an ordinary dataset (named after it), as if its CSV had been
/// uploaded with its target column.
#[utoipa::path(post, path = "/v1/samples/{name}", operation_id = "createSampleDataset", tag = "datasets",
    params(
        ("name" = String, Path, description = "A bundled dataset: `iris` or `digits`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same request (method, path and query, content type and encoding, body) sent again with the same key gets the first 2xx answer again, marked `Idempotent-Replayed: true`, without the work being done twice; keys are kept `--idempotency-ttl-secs` (default 24 h). Only 2xx answers are kept. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 201, description = "The dataset", body = DatasetView,
            headers(("Location" = String, description = "The dataset's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 404, description = "No bundled dataset of that name", body = ErrorBody),
        (status = 409, description = "The server holds `--max-datasets` datasets (`limit_reached`), or the first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`, with `Retry-After`)", body = ErrorBody),
        (status = 422, description = "The sample has more cells than `--max-dataset-cells`, or an `Idempotency-Key` used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let sample = crate::samples::find(&name).ok_or_else(|| {
        let names: Vec<&str> = SAMPLES.iter().map(|s| s.name).collect();
        ApiError::new(
            ErrorCode::DatasetNotFound,
            format!(
                "no bundled dataset {name:?}; the bundled ones: {}",
                names.join(", ")
            ),
        )
    })?;
    let opts = CsvOptions {
        targets: vec![sample.target.to_owned()],
        max_cells: Some(state.config.max_dataset_cells),
        ..Default::default()
    };
    let data = tokio::task::spawn_blocking(move || {
        crate::domain::csv::parse(sample.csv.as_bytes(), &opts)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::invalid("name", e))?;
    store(&state, Some(sample.name.to_owned()), data).await
}
