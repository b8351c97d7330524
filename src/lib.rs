//! fraudscore: real-time card fraud scoring. Kafka in, exact event-time windows, an ONNX model, Kafka out.
//!
//! The hot path, top to bottom: [`decode`] → [`window`] (via [`store`]) → [`features`] → [`model`]
//! → [`output`], tied together by [`engine`]; [`pipeline`] runs it on Kafka, [`service`] starts
//! and stops the pipeline with the HTTP side ([`http`], [`metrics`], [`shared`]), [`snapshot`]
//! saves the window state to disk, and [`replay`] runs the engine on a file. What the service and its load generator agree on (reject reasons,
//! header names, limits, the commit rule) is in the `fraudscore-contract` crate.

pub mod audit;
pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod explain;
pub mod features;
mod http;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod scorer;
pub mod service;
pub mod shared;
pub mod snapshot;
pub mod spans;
pub mod store;
pub mod terminals;
pub mod time;
pub mod window;
