//! Library half of loadgen: the simulator, and the load generator's parts for the binary
//! and its tests.

use std::sync::atomic::AtomicBool;

pub mod bad;
pub mod capacity;
pub mod kafka;
pub mod matcher;
pub mod passthrough;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sim;
pub mod sut;
pub mod traffic;

/// Set on Ctrl-C or SIGTERM; long loops check it so they can finish cleanly (flush, commit,
/// write the report) instead of dying mid-way.
pub static STOP: AtomicBool = AtomicBool::new(false);
