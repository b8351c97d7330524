//! Simulated card transactions for fraudscore's demo, load generator and model training.
//!
//! [`sim`] generates customers, terminals and days of transactions with the handbook's three fraud
//! scenarios; [`traffic`] turns them into the service's wire messages; [`bad`] builds malformed
//! messages, one kind of defect per [`RejectReason`](fraudscore_contract::RejectReason).

pub mod bad;
pub mod sim;
pub mod traffic;
