//! The contract between fraudscore and everything that talks to it: reject reasons and their wire
//! codes, dead-letter header names, input limits, and the rule for which offsets may be committed.
//!
//! It sits at the bottom of the workspace, as ripgrep's grep-matcher does: the service, the
//! simulator and the load generator all depend on it and never on each other, so a new reason
//! code or limit is seen (and checked) by every one of them.

use std::fmt;

use serde::Serialize;

pub mod offsets;

pub use offsets::{Epoch, OffsetTracker};

/// Longest accepted id, in bytes: ids are stored per event and echoed in every output.
pub const MAX_ID_BYTES: usize = 128;
/// Largest accepted amount; amounts are non-negative.
pub const MAX_AMOUNT: f64 = 1e9;
/// Default `engine.max_message_bytes`: larger input values are dead-lettered as `oversized`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Header names on dead-lettered records (the reason and error) and on every output (the source).
pub mod headers {
    /// The [`RejectReason`](crate::RejectReason) code.
    pub const DLQ_REASON: &str = "fraudscore.dlq.reason";
    /// A message naming the field at fault.
    pub const DLQ_ERROR: &str = "fraudscore.dlq.error";
    pub const SOURCE_TOPIC: &str = "fraudscore.source.topic";
    pub const SOURCE_PARTITION: &str = "fraudscore.source.partition";
    pub const SOURCE_OFFSET: &str = "fraudscore.source.offset";
}

/// Why an input message was not scored. The codes are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InvalidJson,
    MissingField,
    InvalidField,
    /// A null key where the customer id is needed as key, or a key other than the customer id.
    InvalidKey,
    TimestampOutOfRange,
    TooLate,
    Oversized,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::InvalidJson,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::InvalidKey,
        RejectReason::TimestampOutOfRange,
        RejectReason::TooLate,
        RejectReason::Oversized,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidKey => "invalid_key",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::TooLate => "too_late",
            RejectReason::Oversized => "oversized",
        }
    }

    /// The reason with this wire code, as read back from a dead-letter header.
    pub fn from_code(code: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back_and_serialize_as_themselves() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.code())
            );
        }
        assert_eq!(RejectReason::from_code("nope"), None);
    }
}
