//! A realistic input stream for the benchmarks: 1,000,000 customers, about 20 transactions each per
//! week, Zipf-skewed activity, written into a fixed-width JSON template so generating costs little.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

pub const CUSTOMERS: u64 = 1_000_000;
pub const PER_CUSTOMER_PER_WEEK: u64 = 20;
/// Event-time spacing that gives the population its weekly volume.
pub const SPACING_MS: i64 = 7 * 86_400_000 / (CUSTOMERS * PER_CUSTOMER_PER_WEEK) as i64;
/// Zipf exponent of customer activity: the busiest card makes ~0.2% of all transactions.
pub const ZIPF_S: f64 = 0.6;
const T0: i64 = 1_767_225_600_000; // 2026-01-01

const TEMPLATE: &[u8] = br#"{"transaction_id":"tx-0000000000","customer_id":"c-0000000","terminal_id":"t-00000","amount":         0.00,"timestamp":0000000000000}"#;

/// Byte ranges of the fields patched per event.
struct Slots {
    tx: (usize, usize),
    customer: (usize, usize),
    terminal: (usize, usize),
    amount: (usize, usize),
    ts: (usize, usize),
}

fn find(template: &[u8], after: &str, len: usize) -> (usize, usize) {
    let at = template
        .windows(after.len())
        .position(|w| w == after.as_bytes())
        .expect("template field")
        + after.len();
    (at, at + len)
}

/// An endless, deterministic stream of transaction messages; `next` rewrites one buffer in place.
pub struct Stream {
    buf: Vec<u8>,
    slots: Slots,
    customers: Vec<u32>,
    amounts: Vec<f32>,
    n: u64,
}

impl Stream {
    /// Pre-draws `len` customer picks (then cycles) so the hot loop does no sampling.
    pub fn new(seed: u64, len: usize) -> Stream {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let zipf = Zipf::new(CUSTOMERS as f64, ZIPF_S).expect("zipf");
        // Scatter ranks over ids so that busy customers are not neighbours in the hash map.
        let customers = (0..len)
            .map(|_| {
                let rank = zipf.sample(&mut rng) as u64 - 1;
                (rank.wrapping_mul(0x9E37_79B9) % CUSTOMERS) as u32
            })
            .collect();
        let amounts = (0..len).map(|_| rng.random_range(1.0f32..300.0)).collect();
        Stream {
            buf: TEMPLATE.to_vec(),
            slots: Slots {
                tx: find(TEMPLATE, r#""transaction_id":"tx-"#, 10),
                customer: find(TEMPLATE, r#""customer_id":"c-"#, 7),
                terminal: find(TEMPLATE, r#""terminal_id":"t-"#, 5),
                amount: find(TEMPLATE, r#""amount":"#, 13),
                ts: find(TEMPLATE, r#""timestamp":"#, 13),
            },
            customers,
            amounts,
            n: 0,
        }
    }

    /// The next message: (key, value).
    pub fn next_message(&mut self) -> (&[u8], &[u8]) {
        let i = self.n as usize % self.customers.len();
        let customer = self.customers[i];
        let amount = self.amounts[i];
        put_digits(&mut self.buf[self.slots.tx.0..self.slots.tx.1], self.n);
        put_digits(
            &mut self.buf[self.slots.customer.0..self.slots.customer.1],
            customer as u64,
        );
        put_digits(
            &mut self.buf[self.slots.terminal.0..self.slots.terminal.1],
            (customer % 10_000) as u64,
        );
        let cents = (amount as f64 * 100.0) as u64;
        put_amount(
            &mut self.buf[self.slots.amount.0..self.slots.amount.1],
            cents,
        );
        put_digits(
            &mut self.buf[self.slots.ts.0..self.slots.ts.1],
            (T0 + self.n as i64 * SPACING_MS) as u64,
        );
        self.n += 1;
        let (a, b) = self.slots.customer;
        // The key is "c-" plus the digits, the two bytes before the slot.
        (&self.buf[a - 2..b], &self.buf)
    }
}

fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Right-aligned `units.cc`, space-padded: JSON allows whitespace before a number.
fn put_amount(out: &mut [u8], cents: u64) {
    out.fill(b' ');
    let (mut v, mut i) = (cents, out.len());
    for _ in 0..2 {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    i -= 1;
    out[i] = b'.';
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
}
