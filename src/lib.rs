//! fraudscore: real-time card fraud scoring. Kafka in, exact event-time windows, an ONNX model, Kafka out.
//!
//! The hot path, top to bottom: [`decode`] → [`window`] (via [`store`]) → [`features`] → [`model`]
//! → [`output`], tied together by [`engine`]; [`service`] runs it on Kafka and [`replay`] on a file.

pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod features;
pub mod http;
pub mod metrics;
pub mod model;
pub mod offsets;
pub mod output;
pub mod replay;
pub mod run;
pub mod service;
pub mod store;
pub mod time;
pub mod window;
