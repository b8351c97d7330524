//! All customers' window state, each customer owned by the input partition its key maps to.

use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

use crate::decode::CustomerId;
use crate::window::CustomerWindows;

#[derive(Debug, Default)]
struct Customer {
    partition: i32,
    windows: CustomerWindows,
}

/// Concurrent map from customer to windows: the pipeline writes, HTTP lookups read.
/// foldhash: several times faster than SipHash on short ids, and seeded per process.
#[derive(Debug, Default)]
pub struct Store {
    customers: DashMap<CustomerId, Customer, foldhash::fast::RandomState>,
    events: AtomicI64,
}

impl Store {
    /// Runs `f` on the customer's windows, creating them on first sight.
    pub fn with_customer<R>(
        &self,
        partition: i32,
        id: &CustomerId,
        f: impl FnOnce(&mut CustomerWindows) -> R,
    ) -> R {
        let mut entry = match self.customers.get_mut(id.as_str()) {
            Some(entry) => entry,
            None => self.customers.entry(id.clone()).or_default(),
        };
        entry.partition = partition;
        let before = entry.windows.len() as i64;
        let r = f(&mut entry.windows);
        self.events
            .fetch_add(entry.windows.len() as i64 - before, Ordering::Relaxed);
        r
    }

    /// A copy of one customer's windows, for point lookups.
    pub fn customer(&self, id: &str) -> Option<CustomerWindows> {
        self.customers.get(id).map(|c| c.windows.clone())
    }

    /// Drops the state of customers on partitions this instance no longer owns.
    pub fn release_partitions(&self, partitions: &[i32]) -> usize {
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
                .with_customer(p, &CustomerId::new(c), |w| w.insert(t, 1, 1.0, &r))
                .unwrap();
        }
        assert_eq!((store.customers(), store.window_events()), (4, 4));
        assert_eq!(store.release_partitions(&[1, 2]), 3);
        assert_eq!((store.customers(), store.window_events()), (1, 1));
        assert!(store.customer("a").is_some());
        assert!(store.customer("b").is_none());
    }
}
