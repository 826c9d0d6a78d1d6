//! Structured logs through `tracing`: the filter comes from `RUST_LOG` (default `info`), the
//! format from the configuration. Panics are logged through it too, once each, inside the span
//! of the request (or job) that panicked.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (many apps in one test binary) do nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(log_panic));
    }
}

/// The panic hook: one log line at ERROR with the message and where, in the current span (the
/// request's, with its id), instead of the default hook's bare line on stderr. What happens
/// next is the catcher's: a handler's panic becomes a 500, a job's panic a failed job.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info.location().map(ToString::to_string).unwrap_or_default();
    tracing::error!(panic = message, %location, "panicked");
}

/// Marks a response whose 5xx status is the answer asked for, not a fault: a readiness probe
/// saying "not ready" (503). The request log does not count it as a failed response.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedStatus;

/// The request log's classifier: 5xx responses and errors are failures (logged by the trace
/// layer's `on_failure`), as `tower_http`'s default, unless the response carries
/// [`ExpectedStatus`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Classifier;

impl tower_http::classify::ClassifyResponse for Classifier {
    type FailureClass = tower_http::classify::ServerErrorsFailureClass;
    type ClassifyEos = tower_http::classify::NeverClassifyEos<Self::FailureClass>;

    fn classify_response<B>(
        self,
        res: &axum::http::Response<B>,
    ) -> tower_http::classify::ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        if res.extensions().get::<ExpectedStatus>().is_some() {
            return tower_http::classify::ClassifiedResponse::Ready(Ok(()));
        }
        tower_http::classify::ServerErrorsAsFailures::new().classify_response(res)
    }

    fn classify_error<E: std::fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        tower_http::classify::ServerErrorsAsFailures::new().classify_error(error)
    }
}
