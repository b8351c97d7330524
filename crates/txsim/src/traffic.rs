//! Turns the simulator's transactions into the wire messages of a live run.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::sim::{self, Transaction};

/// Header carrying the message's sequence number within its run.
pub const SEQ_HEADER: &str = "loadgen.seq";
/// Header carrying the run id, so outputs of other runs on the same topics are not mistaken
/// for ours.
pub const RUN_HEADER: &str = "loadgen.run";
/// Header carrying the simulator's fraud scenario (0 genuine, 1-3 fraud) of a good message.
pub const LABEL_HEADER: &str = "loadgen.label";

/// A short id that differs between runs, for transaction ids, group ids and topic names.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:08x}", (mixed ^ (mixed >> 29)) & 0xffff_ffff)
}

/// `lg-<run>-<seq>`: unique per run, and parseable back to the sequence number.
pub fn transaction_id(run_id: &str, seq: u64) -> String {
    format!("lg-{run_id}-{seq}")
}

/// The sequence number in a transaction id of this run, if it is one.
pub fn parse_transaction_id(run_id: &str, id: &str) -> Option<u64> {
    let rest = id
        .strip_prefix("lg-")?
        .strip_prefix(run_id)?
        .strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, the service's documented example format.
pub fn write_timestamp(out: &mut Vec<u8>, epoch_millis: i64) {
    let nanos = i128::from(epoch_millis) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
        }
        // Unreachable for wall-clock times; an integer is still a valid wire timestamp.
        Err(_) => {
            let _ = write!(out, "{epoch_millis}");
        }
    }
}

/// Writes a well-formed transaction value: the shape the service scores.
pub fn write_transaction(
    out: &mut Vec<u8>,
    transaction_id: &str,
    tx: &Transaction,
    epoch_millis: i64,
) {
    let _ = write!(
        out,
        "{{\"transaction_id\":\"{transaction_id}\",\"customer_id\":\"{}\",\"terminal_id\":\"{}\",\
         \"amount\":{},\"timestamp\":\"",
        tx.customer, tx.terminal, tx.amount
    );
    write_timestamp(out, epoch_millis);
    out.extend_from_slice(b"\"}");
}

/// An endless stream of simulated transactions, drawn day by day on a background thread so
/// drawing a day never stalls the sender. Simulated times are ignored: a live run stamps each
/// transaction with the wall clock at its send time.
pub struct TransactionStream {
    days: Receiver<Vec<Transaction>>,
    current: std::vec::IntoIter<Transaction>,
    _worker: JoinHandle<()>,
}

impl TransactionStream {
    pub fn start(seed: u64, population: sim::PopulationParams) -> std::io::Result<Self> {
        let (sender, days) = sync_channel::<Vec<Transaction>>(4);
        let worker = thread::Builder::new()
            .name("loadgen-sim".into())
            .spawn(move || {
                let mut simulator =
                    sim::Simulator::new(seed, &population, sim::FraudParams::default());
                // A population where nobody can reach a terminal buys nothing: give up rather
                // than spin, and the stream ends.
                let mut empty_days = 0;
                while empty_days < 1000 {
                    let mut day = Vec::new();
                    simulator.next_day(&mut day);
                    if day.is_empty() {
                        empty_days += 1;
                        continue;
                    }
                    empty_days = 0;
                    if sender.send(day).is_err() {
                        return;
                    }
                }
            })?;
        Ok(TransactionStream {
            days,
            current: Vec::new().into_iter(),
            _worker: worker,
        })
    }

    /// The next transaction, or `None` if the simulator cannot produce any (an empty
    /// population).
    pub fn next_transaction(&mut self) -> Option<Transaction> {
        loop {
            if let Some(tx) = self.current.next() {
                return Some(tx);
            }
            self.current = self.days.recv().ok()?.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Cents, CustomerId, FraudLabel, SimDay, TerminalId};

    #[test]
    fn transaction_ids_round_trip_only_for_their_run() {
        let id = transaction_id("0a1b2c3d", 42);
        assert_eq!(id, "lg-0a1b2c3d-42");
        assert_eq!(parse_transaction_id("0a1b2c3d", &id), Some(42));
        assert_eq!(parse_transaction_id("ffffffff", &id), None);
        assert_eq!(parse_transaction_id("0a1b2c3d", "lg-0a1b2c3d-"), None);
        assert_eq!(parse_transaction_id("0a1b2c3d", "lg-0a1b2c3d-4-xx"), None);
        assert_eq!(parse_transaction_id("0a1b2c3d", "lg-0a1b2c3d-+4"), None);
        assert_ne!(new_run_id(), "");
    }

    #[test]
    fn timestamps_are_rfc3339_millis_utc() {
        let mut out = Vec::new();
        write_timestamp(&mut out, 1_795_664_698_123);
        assert_eq!(out, b"2026-11-26T03:44:58.123Z");
        out.clear();
        write_timestamp(&mut out, 946_684_800_000);
        assert_eq!(out, b"2000-01-01T00:00:00.000Z");
    }

    #[test]
    fn good_values_are_the_documented_shape() {
        let tx = Transaction {
            day: SimDay(0),
            second_of_day: 0,
            customer: CustomerId(42),
            terminal: TerminalId(7),
            amount: Cents(5716),
            label: FraudLabel::Genuine,
        };
        let mut out = Vec::new();
        write_transaction(&mut out, "lg-r-1", &tx, 1_795_664_698_123);
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            r#"{"transaction_id":"lg-r-1","customer_id":"c-42","terminal_id":"t-7","amount":57.16,"timestamp":"2026-11-26T03:44:58.123Z"}"#
        );
    }

    #[test]
    fn the_stream_yields_simulated_transactions() {
        let mut stream = TransactionStream::start(
            3,
            sim::PopulationParams {
                customers: 50,
                terminals: 100,
                radius: sim::Radius::default(),
            },
        )
        .expect("thread starts");
        for _ in 0..500 {
            let tx = stream.next_transaction().expect("endless stream");
            assert!(tx.customer.0 < 50);
        }
    }
}
