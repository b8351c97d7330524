//! Library half of loadgen: the load generator's parts for the binary and its tests. Long
//! loops take a stop flag from the caller, so they can finish cleanly (flush, commit, write the
//! report) instead of dying mid-way.

pub mod capacity;
pub mod kafka;
pub mod labels;
pub mod matcher;
pub mod mock_broker;
pub mod passthrough;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sut;

/// The simulator crate's modules, under the names the load generator has always used.
pub use txsim::{bad, sim, traffic};
