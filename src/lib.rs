//! mlpd: train feed-forward neural networks and serve their predictions over HTTP.

pub mod domain;
pub mod nn;
