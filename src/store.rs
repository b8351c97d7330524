//! All customers' window state, each customer owned by the input partition its key maps to.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use dashmap::DashMap;

use crate::decode::CustomerId;
use crate::time::{EventTime, WindowLen};
use crate::window::{CustomerWindows, Reach};

#[derive(Debug, Default)]
struct Customer {
    partition: i32,
    windows: CustomerWindows,
}

/// The newest and oldest event times a partition has admitted, in epoch ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub newest: i64,
    pub oldest: i64,
}

/// One partition being copied into a snapshot while scoring goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionCapture {
    pub partition: i32,
    /// The partition's next offset when the copy began: the state reflects every message before it.
    pub offset: i64,
    /// The partition's marks at that moment.
    pub marks: Option<Marks>,
}

/// Concurrent map from customer to windows: the pipeline writes, HTTP lookups and the evictor
/// read. foldhash: several times faster than SipHash on short ids, and seeded per process.
#[derive(Debug)]
pub struct Store {
    customers: DashMap<CustomerId, Customer, foldhash::fast::RandomState>,
    /// Events held, kept by every writer of `customers`; read by the gauges.
    events: AtomicI64,
    /// Per input partition, the newest and the oldest event time accepted: written by the
    /// pipeline thread, read by the evictor and the gauges, cleared on release.
    watermarks: Mutex<HashMap<i32, Marks>>,
    /// Seeds the transaction-id hashes, so that nobody outside can craft two ids that collide.
    id_seed: u64,
    /// Events refused because their customer held `max_events_per_customer`: added to by the
    /// pipeline thread, taken by the metrics render.
    full_refusals: AtomicU64,
    /// Set while a snapshot copies customers (by [`Store::begin_capture`] on the pipeline thread,
    /// cleared by [`Store::end_capture`] on the snapshot thread).
    capturing: AtomicBool,
    /// While capturing, the offset of the last message applied to each customer: a customer
    /// copied after such a message already holds it, and a restore must not apply it again.
    /// Written under the customer's shard lock, so the copy of a customer and its entry agree.
    touched: DashMap<CustomerId, i64, foldhash::fast::RandomState>,
    /// Partitions released or reloaded during a capture: their copy is incomplete.
    spoiled: Mutex<Vec<i32>>,
}

impl Default for Store {
    /// A store with a random id seed: for state that is never saved.
    fn default() -> Self {
        Store::with_seed(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl Store {
    /// A store hashing transaction ids with `id_seed`: saved state is read back with the seed it
    /// was written with.
    pub fn with_seed(id_seed: u64) -> Store {
        // Sharded finely, so that the evictor's and the snapshot's passes over one shard block
        // the pipeline briefly.
        let hasher = foldhash::fast::RandomState::default();
        Store {
            customers: DashMap::with_hasher_and_shard_amount(hasher.clone(), 256),
            events: AtomicI64::new(0),
            watermarks: Mutex::default(),
            id_seed,
            full_refusals: AtomicU64::new(0),
            capturing: AtomicBool::new(false),
            touched: DashMap::with_hasher(hasher),
            spoiled: Mutex::default(),
        }
    }

    /// A check value of the id seed, safe to write down: state hashed with another seed is useless.
    pub fn seed_check(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(b"fraudscore id seed check", self.id_seed)
    }

    /// Runs `f` on the customer's windows, creating them on first sight; `offset` is the input
    /// message's, remembered while a snapshot is being copied.
    pub fn with_customer<R>(
        &self,
        partition: i32,
        offset: i64,
        id: &CustomerId,
        f: impl FnOnce(&mut CustomerWindows) -> R,
    ) -> R {
        let mut entry = match self.customers.get_mut(id.as_str()) {
            Some(entry) => entry,
            None => self.customers.entry(id.clone()).or_default(),
        };
        if self.capturing.load(Ordering::Acquire) {
            self.touched.insert(id.clone(), offset);
        }
        entry.partition = partition;
        let before = entry.windows.len() as i64;
        let r = f(&mut entry.windows);
        self.events
            .fetch_add(entry.windows.len() as i64 - before, Ordering::Relaxed);
        r
    }

    /// Reads one customer's windows in place (no copy of a hot customer's array), for lookups.
    pub fn read_customer<R>(&self, id: &str, f: impl FnOnce(&CustomerWindows) -> R) -> Option<R> {
        self.customers.get(id).map(|c| f(&c.windows))
    }

    /// Brings the customer's map slot, and its events as far as `reach`, into the cache ahead
    /// of an insert and its `windows`; true if the next step has more to bring.
    pub fn prefetch(&self, id: &str, windows: &[WindowLen], reach: Reach) -> bool {
        self.customers
            .get(id)
            .is_some_and(|c| c.windows.prefetch(windows, reach))
    }

    /// The keyed hash of a transaction id, as the windows store it (62 bits: the low two are
    /// the windows' own).
    pub fn id_hash(&self, transaction_id: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(transaction_id.as_bytes(), self.id_seed) & !0b11
    }

    /// Records the outcome code of a scored event of a customer held here.
    pub fn record_outcome(&self, id: &CustomerId, at: EventTime, id_hash: u64, outcome: u8) {
        if let Some(mut c) = self.customers.get_mut(id.as_str()) {
            c.windows.set_outcome(at, id_hash, outcome);
        }
    }

    /// The outcome code recorded for a customer's event, if the customer and the event are held here.
    pub fn outcome(&self, customer: &str, at: EventTime, id_hash: u64) -> Option<u8> {
        self.customers
            .get(customer)
            .and_then(|c| c.windows.outcome(at, id_hash))
    }

    /// Admits an event at `at` on `partition` unless it is older than `horizon_ms` before the
    /// newest event accepted there; advances that newest time. `Err` carries the newest time.
    pub fn admit(&self, partition: i32, at: EventTime, horizon_ms: i64) -> Result<(), EventTime> {
        let ms = at.millis();
        let mut marks = self.watermarks();
        let mark = marks.entry(partition).or_insert(Marks {
            newest: ms,
            oldest: ms,
        });
        if ms < mark.newest - horizon_ms {
            return Err(EventTime::checked(mark.newest).unwrap_or(at));
        }
        mark.newest = mark.newest.max(ms);
        mark.oldest = mark.oldest.min(ms);
        Ok(())
    }

    /// An event was refused because its customer is at the per-customer cap.
    pub fn refused_full(&self) {
        self.full_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals at the cap since the last call.
    pub fn take_full_refusals(&self) -> u64 {
        self.full_refusals.swap(0, Ordering::Relaxed)
    }

    /// Per partition, how far back in event time its state reaches, in ms.
    pub fn horizons(&self) -> Vec<(i32, i64)> {
        self.watermarks()
            .iter()
            .map(|(&p, m)| (p, m.newest - m.oldest))
            .collect()
    }

    /// Removes customers whose newest event is at or before their partition's newest event
    /// minus `span_ms`: no window of an event the partition still admits can reach them. Locks
    /// one shard at a time, so the pipeline waits at most for one shard. Returns how many.
    pub fn evict_idle(&self, span_ms: i64) -> usize {
        let marks: HashMap<i32, i64> = self
            .watermarks()
            .iter()
            .map(|(&p, m)| (p, m.newest))
            .collect();
        let before = self.customers.len();
        self.customers.retain(|_, c| {
            let (Some(newest), Some(mark)) = (c.windows.newest(), marks.get(&c.partition)) else {
                return true;
            };
            let idle = newest.millis() <= mark - span_ms;
            if idle {
                self.events
                    .fetch_sub(c.windows.len() as i64, Ordering::Relaxed);
            }
            !idle
        });
        before.saturating_sub(self.customers.len())
    }

    /// Starts copying these partitions (each with the next offset it will consume) for a
    /// snapshot. Called on the thread that applies their messages, between two messages.
    pub fn begin_capture(&self, positions: &[(i32, i64)]) -> Vec<PartitionCapture> {
        self.touched.clear();
        lock(&self.spoiled).clear();
        let marks = self.watermarks();
        let captures = positions
            .iter()
            .map(|&(partition, offset)| PartitionCapture {
                partition,
                offset,
                marks: marks.get(&partition).copied(),
            })
            .collect();
        self.capturing.store(true, Ordering::Release);
        captures
    }

    /// Calls `each` with every customer of the captured partitions, its windows, and the offset
    /// of the last message applied to it since the capture began, if any. Locks one shard at a time.
    pub fn capture(
        &self,
        partitions: &[i32],
        mut each: impl FnMut(i32, &CustomerId, &CustomerWindows, Option<i64>),
    ) {
        for c in self.customers.iter() {
            if partitions.contains(&c.partition) {
                let applied = self.touched.get(c.key()).map(|o| *o);
                each(c.partition, c.key(), &c.windows, applied);
            }
        }
    }

    /// Ends a capture; returns the partitions released or reloaded meanwhile, whose copy is unusable.
    pub fn end_capture(&self) -> Vec<i32> {
        self.capturing.store(false, Ordering::Release);
        self.touched.clear();
        std::mem::take(&mut *lock(&self.spoiled))
    }

    /// Replaces a partition's state with what a snapshot held.
    pub fn load_partition(
        &self,
        partition: i32,
        marks: Option<Marks>,
        customers: impl IntoIterator<Item = (CustomerId, CustomerWindows)>,
    ) {
        self.release_partitions(&[partition]);
        if let Some(marks) = marks {
            self.watermarks().insert(partition, marks);
        }
        for (id, windows) in customers {
            self.events
                .fetch_add(windows.len() as i64, Ordering::Relaxed);
            let old = self.customers.insert(id, Customer { partition, windows });
            if let Some(old) = old {
                self.events
                    .fetch_sub(old.windows.len() as i64, Ordering::Relaxed);
            }
        }
    }

    /// Drops the state of customers on partitions this instance no longer owns.
    pub fn release_partitions(&self, partitions: &[i32]) -> usize {
        if self.capturing.load(Ordering::Acquire) {
            lock(&self.spoiled).extend(partitions);
        }
        {
            let mut marks = self.watermarks();
            for p in partitions {
                marks.remove(p);
            }
        }
        let before = self.customers.len();
        self.customers.retain(|_, c| {
            let drop = partitions.contains(&c.partition);
            if drop {
                self.events
                    .fetch_sub(c.windows.len() as i64, Ordering::Relaxed);
            }
            !drop
        });
        before - self.customers.len()
    }

    fn watermarks(&self) -> MutexGuard<'_, HashMap<i32, Marks>> {
        lock(&self.watermarks)
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    /// Heap bytes of the event arrays, spare capacity included (memory accounting).
    pub fn event_heap_bytes(&self) -> usize {
        self.customers.iter().map(|c| c.windows.heap_bytes()).sum()
    }

    /// Events held across all customers' windows.
    pub fn window_events(&self) -> i64 {
        self.events.load(Ordering::Relaxed)
    }
}

/// Every update under the store's locks is one statement: a panic elsewhere cannot leave one half-done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::EventTime;
    use crate::time::WindowLen;
    use crate::window::Retention;

    #[test]
    fn release_drops_only_the_revoked_partitions() {
        let store = Store::default();
        let r = Retention::new(WindowLen::parse("1h").unwrap(), 0);
        let t = EventTime::checked(1_700_000_000_000i64).unwrap();
        for (p, c) in [(0, "a"), (1, "b"), (1, "c"), (2, "d")] {
            store
                .with_customer(p, 0, &CustomerId::new(c), |w| w.insert(t, 1, 1.0, &r))
                .unwrap();
        }
        assert_eq!((store.customers(), store.window_events()), (4, 4));
        assert_eq!(store.release_partitions(&[1, 2]), 3);
        assert_eq!((store.customers(), store.window_events()), (1, 1));
        assert!(store.read_customer("a", |w| w.len()).is_some());
        assert!(store.read_customer("b", |w| w.len()).is_none());
    }
}
