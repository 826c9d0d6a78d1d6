//! The HTTP service, driven over real HTTP against a server on an ephemeral port.

mod cluster;
mod contract;
mod dashboard;
mod datasets;
mod evaluations;
mod events;
mod hardening;
mod helpers;
mod idempotency;
mod models;
mod onnx_export;
mod open_inference;
mod openapi;
mod operations;
mod outage;
mod persistence;
mod postgres;
mod predict;
mod process;
mod properties;
mod samples;
mod serving;
mod sweeps;
mod tables;
mod training;
mod warm_start;
