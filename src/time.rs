//! Event time: milliseconds since the Unix epoch, bounded to [2000-01-01, 2100-01-01), with UTC
//! calendar helpers; and [`WindowLen`], the length of a sliding window in event time.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    /// The wall clock. Read for every message, so straight from `SystemTime`: a calendar date
    /// built and taken apart again, in 128-bit nanoseconds, cost more than the clock itself.
    pub fn now() -> EventTime {
        let since = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        EventTime(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => since(after),
            Err(before) => -since(before.duration()),
        })
    }

    /// RFC 3339 in UTC with milliseconds, as in the output wire format:
    /// `2026-11-26T03:44:58.123Z`. Written digit by digit: every output carries two.
    pub fn rfc3339(self) -> [u8; 24] {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
        let (second, milli) = (ms_of_day / 1_000 % 60, ms_of_day % 1_000);
        let mut s = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                s[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        // Four-digit years: event times are 2000 to 2099, and `now()` is now.
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        put(20, 3, milli);
        s
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01, by Howard
/// Hinnant's `civil_from_days` (eras of 400 years, years starting on March 1).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.rfc3339();
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
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
    use time::OffsetDateTime;

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

    proptest::proptest! {
        /// The digit-by-digit RFC 3339 agrees with the time crate's calendar over every valid time.
        #[test]
        fn rfc3339_matches_the_time_crates_calendar(ms in EventTime::MIN.0..EventTime::END.0) {
            let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second(), t.millisecond()
            );
            proptest::prop_assert_eq!(EventTime(ms).to_string(), expected);
        }
    }

    #[test]
    fn now_is_the_wall_clock_in_epoch_milliseconds() {
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let before = ms(OffsetDateTime::now_utc());
        let now = EventTime::now().millis();
        let after = ms(OffsetDateTime::now_utc());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn calendar_edges() {
        for (ms, expected) in [
            (EventTime::MIN.0, "2000-01-01T00:00:00.000Z"),
            (EventTime::END.0 - 1, "2099-12-31T23:59:59.999Z"),
            // Leap days: 2000 is a leap year (divisible by 400), 2024 too.
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        ] {
            assert_eq!(EventTime(ms).to_string(), expected);
        }
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
