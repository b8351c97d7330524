//! The open-loop send schedule: when each message of a run is meant to leave.
//!
//! Latency is measured from these intended times, not from when the sender got round to a
//! message, so a stalled broker or service shows up as latency instead of slowing the sender
//! down (no coordinated omission).

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
    count: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("rate must be a positive finite number of messages per second")]
    BadRate,
    #[error("rate x duration is too many messages")]
    TooMany,
}

impl Schedule {
    /// `rate` messages per second for `duration`; the count is rounded, so short runs at low
    /// rates still send what the user expects (e.g. 3 s at 500/s is exactly 1500).
    pub fn new(rate: f64, duration: Duration) -> Result<Self, ScheduleError> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(ScheduleError::BadRate);
        }
        let count = (rate * duration.as_secs_f64()).round();
        if count > 1e12 {
            return Err(ScheduleError::TooMany);
        }
        Ok(Schedule {
            rate,
            count: count as u64,
        })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Number of messages in the run.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Intended send time of message `seq`, after the start. Computed from the index rather
    /// than by adding intervals, so rounding never accumulates into drift.
    pub fn offset(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_rate_without_drift() {
        let schedule = Schedule::new(5000.0, Duration::from_secs(60)).expect("valid");
        assert_eq!(schedule.count(), 300_000);
        assert_eq!(schedule.offset(0), Duration::ZERO);
        assert_eq!(schedule.offset(5000), Duration::from_secs(1));
        assert_eq!(schedule.offset(1), Duration::from_micros(200));
        let last = schedule.offset(299_999);
        assert!(last < Duration::from_secs(60));
        assert!(Duration::from_secs(60) - last <= Duration::from_micros(201));
    }

    #[test]
    fn fractional_rates_and_short_runs_round_the_count() {
        let schedule = Schedule::new(500.0, Duration::from_secs(3)).expect("valid");
        assert_eq!(schedule.count(), 1500);
        let schedule = Schedule::new(0.5, Duration::from_secs(3)).expect("valid");
        assert_eq!(schedule.count(), 2);
        assert_eq!(schedule.offset(1), Duration::from_secs(2));
    }

    #[test]
    fn rejects_nonsense_rates() {
        assert_eq!(
            Schedule::new(0.0, Duration::from_secs(1)),
            Err(ScheduleError::BadRate)
        );
        assert_eq!(
            Schedule::new(f64::NAN, Duration::from_secs(1)),
            Err(ScheduleError::BadRate)
        );
        assert_eq!(
            Schedule::new(1e9, Duration::from_secs(10_000)),
            Err(ScheduleError::TooMany)
        );
    }
}
