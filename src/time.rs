//! Event time: milliseconds since the Unix epoch, bounded to [2000-01-01, 2100-01-01), with UTC
//! calendar helpers; and [`WindowLen`], the length of a sliding window in event time.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

const MS_PER_DAY: i64 = 86_400_000;
const MIN_WINDOW_MS: i64 = 1_000;
const MAX_WINDOW_MS: i64 = 30 * MS_PER_DAY;

/// A transaction's event time, in epoch milliseconds. Only valid times can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    /// 2000-01-01T00:00:00Z.
    pub const MIN: EventTime = EventTime(946_684_800_000);
    /// 2100-01-01T00:00:00Z, excluded.
    pub const END: EventTime = EventTime(4_102_444_800_000);

    pub fn checked(millis: impl TryInto<i64>) -> Option<EventTime> {
        let ms = millis.try_into().ok()?;
        (Self::MIN.0..Self::END.0)
            .contains(&ms)
            .then_some(EventTime(ms))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Hour of the day in UTC, 0 to 23.
    pub fn hour_of_day(self) -> u32 {
        (self.0.rem_euclid(MS_PER_DAY) / 3_600_000) as u32
    }

    /// Saturday or Sunday in UTC.
    pub fn is_weekend(self) -> bool {
        // 1970-01-01 was a Thursday: day 0 is Thursday, so days 2 and 3 (mod 7) are Saturday and Sunday.
        matches!(self.0.div_euclid(MS_PER_DAY).rem_euclid(7), 2 | 3)
    }

    pub fn now() -> EventTime {
        EventTime((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// RFC 3339 in UTC with milliseconds, as in the output wire format: `2026-11-26T03:44:58.123Z`.
impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

/// A sliding window length in event time, from 1 second to 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowLen(i64);

impl WindowLen {
    pub const SHORTEST: WindowLen = WindowLen(MIN_WINDOW_MS);
    pub const LONGEST: WindowLen = WindowLen(MAX_WINDOW_MS);

    pub fn parse(s: &str) -> Option<WindowLen> {
        let unit_ms = match s.chars().last()? {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return None,
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let ms = digits.parse::<i64>().ok()?.checked_mul(unit_ms)?;
        (MIN_WINDOW_MS..=MAX_WINDOW_MS)
            .contains(&ms)
            .then_some(WindowLen(ms))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn from_duration(d: Duration) -> Option<WindowLen> {
        let ms = i64::try_from(d.as_millis()).ok()?;
        (MIN_WINDOW_MS..=MAX_WINDOW_MS)
            .contains(&ms)
            .then_some(WindowLen(ms))
    }
}

/// The shortest name in the feature scheme: `10m`, `7d`, `90s`.
impl fmt::Display for WindowLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = [(86_400_000, 'd'), (3_600_000, 'h'), (60_000, 'm')]
            .into_iter()
            .find(|(ms, _)| self.0 % ms == 0)
            .map_or((self.0 / 1000, 's'), |(ms, u)| (self.0 / ms, u));
        write!(f, "{n}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers_in_utc() {
        // 2026-11-28 is a Saturday, 2026-11-30 a Monday.
        let sat = EventTime::checked(1_795_824_000_000i64 + 23 * 3_600_000).unwrap();
        assert_eq!(sat.to_string(), "2026-11-28T23:00:00.000Z");
        assert!(sat.is_weekend());
        assert_eq!(sat.hour_of_day(), 23);
        let sun = EventTime::checked(1_795_910_400_000i64).unwrap();
        assert_eq!(sun.to_string(), "2026-11-29T00:00:00.000Z");
        assert!(sun.is_weekend());
        let mon = EventTime::checked(1_795_996_800_000i64 + 1).unwrap();
        assert!(!mon.is_weekend());
        assert_eq!(mon.hour_of_day(), 0);
        let fri = EventTime::checked(1_795_823_999_999i64).unwrap();
        assert_eq!(fri.to_string(), "2026-11-27T23:59:59.999Z");
        assert!(!fri.is_weekend());
    }

    #[test]
    fn bounds() {
        assert_eq!(EventTime::checked(EventTime::MIN.0), Some(EventTime::MIN));
        assert_eq!(EventTime::checked(EventTime::MIN.0 - 1), None);
        assert_eq!(EventTime::checked(EventTime::END.0), None);
        assert!(EventTime::checked(EventTime::END.0 - 1).is_some());
        assert_eq!(EventTime::checked(i128::MAX), None);
    }

    #[test]
    fn window_names() {
        assert_eq!(WindowLen::parse("30s"), Some(WindowLen(30_000)));
        assert_eq!(WindowLen::parse("10m"), Some(WindowLen(600_000)));
        assert_eq!(WindowLen::parse("1h"), Some(WindowLen(3_600_000)));
        assert_eq!(WindowLen::parse("30d"), Some(WindowLen(MAX_WINDOW_MS)));
        assert_eq!(WindowLen::parse("1s"), Some(WindowLen(MIN_WINDOW_MS)));
        for (name, canonical) in [
            ("60m", "1h"),
            ("90s", "90s"),
            ("24h", "1d"),
            ("10m", "10m"),
            ("7d", "7d"),
        ] {
            assert_eq!(WindowLen::parse(name).unwrap().to_string(), canonical);
        }
        for bad in [
            "0s", "31d", "d", "1", "1w", "-1d", "+1d", "1.5h", "", "720h1",
        ] {
            assert_eq!(WindowLen::parse(bad), None, "{bad}");
        }
    }
}
