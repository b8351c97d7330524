//! One customer's recent transactions, kept sorted in event time, answering exact sliding-window counts and sums.

use fraudscore_contract::MAX_AMOUNT;
use thin_vec::ThinVec;

use crate::time::{EventTime, WindowLen};

/// Count and sum of amounts over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    pub count: u32,
    pub sum: f64,
}

impl WindowStats {
    pub fn mean(self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// How long the state keeps events, from the feature spec and the allowed lateness.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    longest_ms: i64,
    lateness_ms: i64,
    /// Most events one customer may hold: bounds the per-event cost of a very hot customer.
    max_events: usize,
}

impl Retention {
    pub fn new(longest: WindowLen, lateness_ms: i64) -> Retention {
        Retention {
            longest_ms: longest.millis(),
            lateness_ms: lateness_ms.max(0),
            max_events: usize::MAX,
        }
    }

    pub fn with_max_events(self, max_events: usize) -> Retention {
        Retention { max_events, ..self }
    }

    /// Events older than this, relative to the newest event seen (the customer's or the
    /// partition's), are rejected as too late.
    pub fn oldest_accepted(&self, newest: i64) -> i64 {
        newest - self.longest_ms - self.lateness_ms
    }

    /// The oldest accepted event's longest window reaches back this far; older events can never
    /// be inside a window again and are dropped.
    fn drop_at_or_before(&self, newest: i64) -> i64 {
        self.oldest_accepted(newest) - self.longest_ms
    }

    /// How far behind the newest event seen an event may be and still be admitted.
    pub fn horizon_ms(&self) -> i64 {
        self.longest_ms + self.lateness_ms
    }

    /// Total time span the state covers for one customer.
    pub fn span_ms(&self) -> i64 {
        2 * self.longest_ms + self.lateness_ms
    }

    /// Everything that decides which events the state holds: a snapshot is valid only for the
    /// same description.
    pub fn describe(&self) -> String {
        format!(
            "longest window {} ms, allowed lateness {} ms, at most {} events per customer",
            self.longest_ms, self.lateness_ms, self.max_events
        )
    }
}

/// What happened to an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in the windows from now on.
    Added,
    /// Same transaction (id hash and timestamp) already held: scored from the state, not counted again.
    Duplicate,
}

/// Why an event was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Older than the customer's newest minus the longest window minus the allowed lateness.
    TooLate { newest: EventTime },
    /// The customer already holds the most events allowed, none of them about to expire.
    Full { held: usize },
}

/// The low bits of an event's id word that hold the decision it was scored with, not the id.
const OUTCOME_BITS: u64 = 0b11;

/// Window sums count amounts in whole ten-thousandths: integer sums are exact, so a window's sum
/// is one subtraction of running totals whatever order the events came in (a running total of
/// floats would carry the rounding of every event ever added and removed).
const UNITS_PER_AMOUNT: f64 = 10_000.0;

/// The most events one customer may hold for its window sums to stay exact: a window's sum of
/// amounts up to [`MAX_AMOUNT`] must fit in 63 bits of units.
pub const MAX_EVENTS_PER_CUSTOMER: usize =
    (i64::MAX as f64 / (MAX_AMOUNT * UNITS_PER_AMOUNT)) as usize;

fn to_units(amount: f64) -> i64 {
    (amount * UNITS_PER_AMOUNT).round() as i64
}

fn from_units(units: i64) -> f64 {
    units as f64 / UNITS_PER_AMOUNT
}

/// Arrays up to this size are prefetched whole.
const PREFETCH_WHOLE_BYTES: usize = 1024;

/// The array's length and capacity, stored before its events.
const HEADER_BYTES: usize = 16;

/// The steps of [`CustomerWindows::prefetch`], in order: each needs the lines the one before
/// asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The array's header, with its length, and its oldest events.
    Header,
    /// A short array whole; a long one's newest events, where in-order inserts go.
    Ends,
    /// Where each window's start is guessed to be in a long array, from its oldest and newest
    /// events.
    Starts,
}

impl Reach {
    pub const ALL: [Reach; 3] = [Reach::Header, Reach::Ends, Reach::Starts];
}

/// A hint to bring the cache line holding `p` in; nothing is read, and no address can fault.
#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint to the cache: it dereferences nothing.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An event in 24 bytes, ordered by (timestamp, id hash). A 62-bit keyed hash of the transaction
/// id tells re-deliveries from other transactions of the same millisecond (16 bytes with 22 bits
/// of an unkeyed hash left one pair in 4 M colliding, and collisions easy to craft); the two low
/// bits keep the decision it was scored with, for when its fraud label arrives.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: i64,
    id: u64,
    /// The amounts of this event and every one held before it, in units. Wrapping: only
    /// differences are read, and those fit (see [`MAX_EVENTS_PER_CUSTOMER`]).
    total: i64,
}

impl Event {
    fn key(&self) -> (i64, u64) {
        (self.at, self.id & !OUTCOME_BITS)
    }
}

/// A customer's events within reach of any future window, sorted by (timestamp, id hash), with
/// running totals of their amounts: a window's count and sum are two binary searches and a
/// subtraction, for a customer with thousands of events as for one with a few.
/// A thin vector (one pointer; length and capacity live with the events) keeps a million customers small.
#[derive(Debug, Clone, Default)]
pub struct CustomerWindows {
    events: ThinVec<Event>,
}

impl CustomerWindows {
    /// The running total before the event at `pos`.
    fn total_before(&self, pos: usize) -> i64 {
        pos.checked_sub(1).map_or(0, |i| self.events[i].total)
    }

    /// Where the event with key `k` is, or would go. The newest event is looked at first: events
    /// mostly come in order, and their outcome is recorded right after, so no search goes through
    /// a busy customer's cold events.
    fn position(&self, k: (i64, u64)) -> usize {
        let len = self.events.len();
        match self.events.last().map(Event::key) {
            Some(last) if last < k => len,
            Some(last) if last == k => len - 1,
            _ => self.events.partition_point(|e| e.key() < k),
        }
    }

    /// Adds an event in its place in event time, unless it is a re-delivery or too late.
    /// `id` is the keyed hash of the transaction id.
    pub fn insert(
        &mut self,
        at: EventTime,
        id: u64,
        amount: f64,
        retention: &Retention,
    ) -> Result<Admission, Refused> {
        if let Some(newest) = self.newest() {
            if at.millis() < retention.oldest_accepted(newest.millis()) {
                return Err(Refused::TooLate { newest });
            }
        }
        let k = (at.millis(), id & !OUTCOME_BITS);
        let pos = self.position(k);
        if self.events.get(pos).is_some_and(|e| e.key() == k) {
            return Ok(Admission::Duplicate);
        }
        // Counting what would expire takes a search: only worth it near the cap.
        if self.events.len() >= retention.max_events {
            let held = self.held_after(at, retention);
            if held >= retention.max_events {
                return Err(Refused::Full { held });
            }
        }
        let len = self.events.len();
        if len == self.events.capacity() {
            // Grow by an eighth, not double: spare capacity is most of the memory of a busy state.
            self.events.reserve_exact((len / 8).max(2));
        }
        let units = to_units(amount);
        let total = self.total_before(pos).wrapping_add(units);
        self.events.insert(
            pos,
            Event {
                at: at.millis(),
                id: k.1,
                total,
            },
        );
        // Only a late event has later ones, which the insert shifted anyway.
        for later in &mut self.events[pos + 1..] {
            later.total = later.total.wrapping_add(units);
        }
        self.evict(retention);
        Ok(Admission::Added)
    }

    fn evict(&mut self, retention: &Retention) {
        let Some(newest) = self.newest() else { return };
        let cut = retention.drop_at_or_before(newest.millis());
        if self.events.first().is_some_and(|e| e.at > cut) {
            return;
        }
        let expired = self.events.partition_point(|e| e.at <= cut);
        // Expired events sit before every window, so they may wait: removing them shifts the
        // whole array, and doing that once an eighth has expired keeps a hot customer's inserts
        // amortized O(1) instead of one full shift per event.
        if expired > 0 && expired * 8 >= self.events.len() {
            let gone = self.events[expired - 1].total;
            self.events.drain(..expired);
            for e in self.events.iter_mut() {
                e.total = e.total.wrapping_sub(gone);
            }
            // Give memory back from a customer whose activity dropped, without reallocating often.
            if self.events.capacity() > self.events.len() + self.events.len() / 4 + 4 {
                self.events.shrink_to_fit();
            }
        }
    }

    /// Events held once an event at `at` is in, not counting those it makes expire.
    fn held_after(&self, at: EventTime, retention: &Retention) -> usize {
        let newest = self
            .newest()
            .map_or(at.millis(), |n| n.millis().max(at.millis()));
        let cut = retention.drop_at_or_before(newest);
        self.events.len() - self.events.partition_point(|e| e.at <= cut)
    }

    /// Count and sum for each window (ascending lengths) ending at `at`: events in `(at - w, at]`.
    pub fn stats(&self, at: EventTime, windows: &[WindowLen], out: &mut Vec<WindowStats>) {
        out.clear();
        let end = self.first_after(self.events.len(), at.millis());
        let total = self.total_before(end);
        let mut lo = end;
        for w in windows {
            let start = self.first_after(lo, at.millis() - w.millis());
            out.push(WindowStats {
                count: (end - start) as u32,
                sum: from_units(total.wrapping_sub(self.total_before(start))),
            });
            lo = start;
        }
    }

    /// The first of the events before `hi` later than `bound`. Events come at a roughly steady
    /// pace, so the time span guesses the place ([`CustomerWindows::guess`]), and the search
    /// goes out from the guess by doubling steps: halving a busy customer's whole array would
    /// take a cache miss at each step. A window's end is usually the newest event, and a window
    /// holding every event is known from the first one.
    fn first_after(&self, hi: usize, bound: i64) -> usize {
        let events = &self.events[..hi];
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return 0;
        };
        if first.at > bound {
            return 0;
        }
        if last.at <= bound {
            return hi;
        }
        // events[0] is not later than bound and events[hi - 1] is: the answer is in 1..hi.
        let guess = Self::guess(first.at, last.at, hi, bound);
        let later = |e: &Event| e.at > bound;
        if later(&events[guess]) {
            // events[right..] are all later than bound.
            let (mut right, mut step) = (guess, 1);
            while step < right {
                let probe = right - step;
                if !later(&events[probe]) {
                    return probe + 1 + events[probe + 1..right].partition_point(|e| !later(e));
                }
                right = probe;
                step *= 2;
            }
            1 + events[1..right].partition_point(|e| !later(e))
        } else {
            // events[..=left] are none of them later than bound.
            let (mut left, mut step) = (guess, 1);
            while left + step < hi - 1 {
                let probe = left + step;
                if later(&events[probe]) {
                    return left + 1 + events[left + 1..probe].partition_point(|e| !later(e));
                }
                left = probe;
                step *= 2;
            }
            left + 1 + events[left + 1..hi - 1].partition_point(|e| !later(e))
        }
    }

    /// Where among `len` events spread from `first` to `last` (first <= bound < last) the first
    /// one later than `bound` would be if they came at a steady pace: in 1..len.
    fn guess(first: i64, last: i64, len: usize, bound: i64) -> usize {
        let share = (bound - first) as f64 / (last - first) as f64;
        (1 + (share * (len - 2) as f64) as usize).min(len - 1)
    }

    /// Records the outcome (1 to 3; 0 is "not scored") of the event at `at` with id hash `id`;
    /// false if it is not held.
    pub fn set_outcome(&mut self, at: EventTime, id: u64, outcome: u8) -> bool {
        let k = (at.millis(), id & !OUTCOME_BITS);
        let pos = self.position(k);
        match self.events.get_mut(pos) {
            Some(e) if e.key() == k => {
                e.id = k.1 | (outcome as u64 & OUTCOME_BITS);
                true
            }
            _ => false,
        }
    }

    /// The outcome recorded for the event at `at` with id hash `id`, if it is held (0: none).
    pub fn outcome(&self, at: EventTime, id: u64) -> Option<u8> {
        let k = (at.millis(), id & !OUTCOME_BITS);
        let pos = self.position(k);
        self.events
            .get(pos)
            .filter(|e| e.key() == k)
            .map(|e| (e.id & OUTCOME_BITS) as u8)
    }

    /// Asks the CPU to bring part of the events into the cache ahead of an insert and its
    /// `windows`; true if the next [`Reach`] has more to bring. Each step reads only what the
    /// one before brought in, so that a run's customers are fetched a step at a time, their
    /// misses overlapping, instead of each customer's steps waiting on one another.
    pub fn prefetch(&self, windows: &[WindowLen], reach: Reach) -> bool {
        // The array's address comes from the map slot; its length is in its header, which the
        // first step may not read yet.
        let start = self.events.as_ptr().cast::<u8>();
        let bytes = || std::mem::size_of_val::<[Event]>(&self.events);
        match reach {
            Reach::Header => {
                prefetch_line(start.wrapping_sub(HEADER_BYTES));
                true
            }
            Reach::Ends if bytes() <= PREFETCH_WHOLE_BYTES => {
                for line in (0..bytes()).step_by(64) {
                    prefetch_line(start.wrapping_add(line));
                }
                false
            }
            Reach::Ends => {
                prefetch_line(start.wrapping_add(bytes() - 64));
                true
            }
            Reach::Starts if bytes() <= PREFETCH_WHOLE_BYTES => false,
            Reach::Starts => {
                let events: &[Event] = &self.events;
                let (first, last) = (events[0].at, events[events.len() - 1].at);
                for w in windows {
                    let bound = last - w.millis();
                    if first <= bound && bound < last {
                        let at = Self::guess(first, last, events.len(), bound);
                        prefetch_line(events[at - 1..].as_ptr().cast());
                        prefetch_line(events[at..].as_ptr().cast());
                    }
                }
                false
            }
        }
    }

    pub fn newest(&self) -> Option<EventTime> {
        self.events.last().and_then(|e| EventTime::checked(e.at))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events held, oldest first, as (epoch ms, id hash, amount): what a snapshot stores.
    pub fn events(&self) -> impl ExactSizeIterator<Item = (i64, u64, f64)> + '_ {
        self.events.iter().enumerate().map(|(i, e)| {
            let units = e.total.wrapping_sub(self.total_before(i));
            (e.at, e.id, from_units(units))
        })
    }

    /// Windows holding `events` as [`CustomerWindows::events`] gave them; `None` unless they are
    /// strictly ascending by (time, id hash), as no insert sequence could have left them otherwise.
    pub fn from_events(events: impl ExactSizeIterator<Item = (i64, u64, f64)>) -> Option<Self> {
        let mut held = ThinVec::with_capacity(events.len());
        let mut total = 0i64;
        for (at, id, amount) in events {
            total = total.wrapping_add(to_units(amount));
            let event = Event { at, id, total };
            if held
                .last()
                .is_some_and(|last: &Event| last.key() >= event.key())
            {
                return None;
            }
            held.push(event);
        }
        Some(CustomerWindows { events: held })
    }

    /// Heap bytes held for the events themselves (not the array's header), for the memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<Event>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn at(ms: i64) -> EventTime {
        EventTime::checked(ms).unwrap()
    }

    fn w(ms: i64) -> WindowLen {
        WindowLen::from_duration(std::time::Duration::from_millis(ms as u64)).unwrap()
    }

    #[test]
    fn window_is_half_open_on_the_left() {
        let r = Retention::new(w(10 * MIN), 0);
        let mut c = CustomerWindows::default();
        for (i, t) in [T0, T0 + 1, T0 + 10 * MIN].into_iter().enumerate() {
            assert_eq!(
                c.insert(at(t), i as u64, 1.0 + i as f64, &r),
                Ok(Admission::Added)
            );
        }
        let mut out = Vec::new();
        // (T0, T0 + 10m]: T0 itself is exactly on the edge and excluded.
        c.stats(at(T0 + 10 * MIN), &[w(10 * MIN)], &mut out);
        assert_eq!(out, [WindowStats { count: 2, sum: 5.0 }]);
        c.stats(at(T0 + 10 * MIN - 1), &[w(10 * MIN)], &mut out);
        assert_eq!(out, [WindowStats { count: 2, sum: 3.0 }]);
    }

    #[test]
    fn redelivery_is_not_counted_twice_but_same_time_other_id_is() {
        let r = Retention::new(w(10 * MIN), 0);
        let mut c = CustomerWindows::default();
        assert_eq!(c.insert(at(T0), 7, 5.0, &r), Ok(Admission::Added));
        assert_eq!(c.insert(at(T0), 7, 5.0, &r), Ok(Admission::Duplicate));
        assert_eq!(c.insert(at(T0), 8, 5.0, &r), Ok(Admission::Added));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn an_outcome_is_kept_beside_the_event_and_does_not_change_its_identity() {
        let r = Retention::new(w(10 * MIN), 0);
        let mut c = CustomerWindows::default();
        c.insert(at(T0), 8, 5.0, &r).unwrap();
        assert_eq!(c.outcome(at(T0), 8), Some(0));
        assert!(c.set_outcome(at(T0), 8, 3));
        assert_eq!(c.outcome(at(T0), 8), Some(3));
        assert!(!c.set_outcome(at(T0), 12, 1));
        assert_eq!(c.outcome(at(T0 + 1), 8), None);
        // Still the same transaction for a re-delivery.
        assert_eq!(c.insert(at(T0), 8, 5.0, &r), Ok(Admission::Duplicate));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_full_customer_refuses_new_events_until_old_ones_expire() {
        let r = Retention::new(w(10 * MIN), 0).with_max_events(3);
        let mut c = CustomerWindows::default();
        for i in 0..3 {
            c.insert(at(T0 + i), i as u64, 1.0, &r).unwrap();
        }
        assert_eq!(
            c.insert(at(T0 + 5), 9, 1.0, &r),
            Err(Refused::Full { held: 3 })
        );
        // A re-delivery is still recognised, not refused.
        assert_eq!(c.insert(at(T0 + 1), 1, 1.0, &r), Ok(Admission::Duplicate));
        // 20 minutes on, the first three are beyond every window's reach: room again.
        assert_eq!(
            c.insert(at(T0 + 20 * MIN + 2), 10, 1.0, &r),
            Ok(Admission::Added)
        );
    }

    #[test]
    fn too_late_and_eviction_follow_the_retention_rule() {
        let r = Retention::new(w(10 * MIN), 5 * MIN);
        let mut c = CustomerWindows::default();
        c.insert(at(T0), 1, 1.0, &r).unwrap();
        c.insert(at(T0 + 40 * MIN), 2, 1.0, &r).unwrap();
        // newest - 10m - 5m = T0 + 25m is the oldest accepted time.
        assert_eq!(
            c.insert(at(T0 + 25 * MIN - 1), 3, 1.0, &r),
            Err(Refused::TooLate {
                newest: at(T0 + 40 * MIN)
            })
        );
        assert_eq!(
            c.insert(at(T0 + 25 * MIN), 4, 1.0, &r),
            Ok(Admission::Added)
        );
        // T0 was dropped: it is at or before T0 + 40m - 25m = T0 + 15m.
        assert_eq!(c.len(), 2);
    }

    /// The brute-force reference: every event ever accepted, scanned in full, summed in cents.
    fn reference(accepted: &[(i64, u64)], t: i64, len: i64) -> (u32, u64) {
        let inside = accepted.iter().filter(|(ts, _)| *ts > t - len && *ts <= t);
        inside.fold((0, 0), |(n, s), (_, cents)| (n + 1, s + cents))
    }

    #[test]
    fn sums_of_cents_are_exact_to_the_cent() {
        let r = Retention::new(w(10 * MIN), 0);
        let mut c = CustomerWindows::default();
        for i in 0..10 {
            c.insert(at(T0 + i), i as u64 * 4, 0.1, &r).unwrap();
        }
        let mut out = Vec::new();
        c.stats(at(T0 + 20), &[w(MIN)], &mut out);
        // Ten 0.1s added as floats make 0.9999999999999999.
        assert_eq!(out[0].sum, 1.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random streams, out of order, with duplicate timestamps, events on window edges and
        /// re-delivered ids: every window agrees with the brute-force reference over all accepted events.
        #[test]
        fn windows_match_brute_force(
            events in prop::collection::vec((0i64..200, (0u64..40).prop_map(|i| i * 4), 0u32..10_000, any::<bool>()), 1..200),
            lateness_min in 0i64..20,
        ) {
            let windows = [w(MIN), w(10 * MIN), w(60 * MIN)];
            let r = Retention::new(windows[2], lateness_min * MIN);
            let mut c = CustomerWindows::default();
            let mut accepted: Vec<(i64, u64)> = Vec::new();
            let mut ids: Vec<(i64, u64)> = Vec::new();
            let mut newest = i64::MIN;
            let mut out = Vec::new();
            for (minute_ish, id, cents, on_edge) in events {
                // Half the events fall exactly on whole minutes, so that window edges are hit.
                let t = T0 + if on_edge { (minute_ish / 4) * MIN } else { minute_ish * 17_317 };
                let amount = cents as f64 / 100.0;
                let late = newest != i64::MIN && t < newest - 60 * MIN - lateness_min * MIN;
                match c.insert(at(t), id, amount, &r) {
                    Err(Refused::Full { .. }) => unreachable!("no cap here"),
                    Err(Refused::TooLate { newest: n }) => {
                        prop_assert!(late);
                        prop_assert_eq!(n.millis(), newest);
                        continue;
                    }
                    Ok(admission) => {
                        prop_assert!(!late);
                        let seen = ids.contains(&(t, id));
                        prop_assert_eq!(admission == Admission::Duplicate, seen);
                        if !seen {
                            ids.push((t, id));
                            accepted.push((t, cents as u64));
                        }
                    }
                }
                newest = newest.max(t);
                // The hints run over every array size here, short and long: they must not panic.
                for reach in Reach::ALL {
                    if !c.prefetch(&windows, reach) {
                        break;
                    }
                }
                c.stats(at(t), &windows, &mut out);
                for (stats, win) in out.iter().zip(windows) {
                    let (n, cents) = reference(&accepted, t, win.millis());
                    prop_assert_eq!(stats.count, n);
                    // Exact: the sum of the cents, rounded once.
                    prop_assert_eq!(stats.sum, cents as f64 / 100.0);
                }
            }
        }
    }
}
