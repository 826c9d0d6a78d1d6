//! The one integration-test binary: numerics of the engine (`nn`) and the HTTP service (`api`).

mod api;
mod batcher;
mod nn;
