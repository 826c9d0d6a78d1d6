//! mlpd: train feed-forward neural networks and serve their predictions over HTTP.
//!
//! A request flows `api` (extract, validate into `domain` types) → `registry` / `datasets` /
//! `jobs` (shared state, short locks) → `nn` (pure computation, on worker or blocking threads).

pub mod api;
pub mod auth;
pub mod batcher;
pub mod cluster;
pub mod config;
pub mod datasets;
pub mod domain;
pub mod error;
pub mod evaluation;
pub mod export;
pub mod jobs;
pub mod metrics;
pub mod nn;
pub mod records;
pub mod registry;
pub mod samples;
pub mod scoring;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod sweeps;
pub mod tabular;
pub mod telemetry;
pub mod versions;

pub use config::Config;
pub use startup::App;
