//! Handing outputs to the producer: waiting while its queue is full, retrying what can succeed
//! with a bounded backoff, and saying which records can never be sent as they are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};
use tracing::warn;

use super::clients::{Delivery, Failed, OutputProducer};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One output record, borrowed from the pipeline until the producer copies it.
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

/// Why a record was not handed to the producer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// This record can never be produced as it is (too large, invalid): only a smaller one can.
    #[error("refused by the producer: {0}")]
    Refused(KafkaError),
    /// The idempotent producer hit a fatal error: nothing more can be produced by this client.
    #[error("the producer failed fatally: {0}")]
    Fatal(KafkaError),
    /// The stop flag was set while waiting: the input stays uncommitted and is re-scored later.
    #[error("stopping")]
    Stopped,
}

/// What a send or delivery error means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The producer's queue is full: wait for deliveries to make room.
    QueueFull,
    /// The record itself is at fault; sending it again gives the same answer.
    Permanent,
    /// The producer can send nothing more.
    Fatal,
    /// Anything else (broker down, topic not there yet, authorization being fixed): try again.
    Retriable,
}

pub fn classify(error: &KafkaError) -> ErrorKind {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return ErrorKind::Retriable,
    };
    match code {
        RDKafkaErrorCode::QueueFull => ErrorKind::QueueFull,
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::InvalidMessageSize
        | RDKafkaErrorCode::InvalidMessage
        | RDKafkaErrorCode::InvalidRecord
        | RDKafkaErrorCode::InvalidArgument => ErrorKind::Permanent,
        RDKafkaErrorCode::Fatal => ErrorKind::Fatal,
        _ => ErrorKind::Retriable,
    }
}

/// The output producer and the failed deliveries it reports back.
pub struct Output {
    producer: Arc<OutputProducer>,
    failed: Receiver<Failed>,
}

impl Output {
    pub fn new(producer: Arc<OutputProducer>, failed: Receiver<Failed>) -> Output {
        Output { producer, failed }
    }

    pub fn producer(&self) -> &OutputProducer {
        &self.producer
    }

    /// Hands a record to the producer. Waits while the queue is full (outputs are never dropped
    /// for lack of room) and retries other transient refusals with a backoff up to 5 s; every
    /// wait ends when `stop` is set.
    pub fn send(
        &self,
        record: Record<'_>,
        delivery: Delivery,
        stop: &AtomicBool,
    ) -> Result<(), SendError> {
        let mut base = BaseRecord::with_opaque_to(record.topic, Box::new(delivery));
        base.key = record.key;
        base.payload = record.payload;
        base.headers = record.headers;
        let mut backoff = BACKOFF_START;
        loop {
            let (error, returned) = match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
            base = returned;
            match classify(&error) {
                ErrorKind::Permanent => return Err(SendError::Refused(error)),
                ErrorKind::Fatal => return Err(SendError::Fatal(error)),
                _ if stop.load(Ordering::Relaxed) => return Err(SendError::Stopped),
                ErrorKind::QueueFull => std::thread::sleep(Duration::from_millis(1)),
                ErrorKind::Retriable => {
                    warn!(%error, topic = record.topic, ?backoff, "produce refused; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The producer's fatal error, once it has one: nothing more can be produced by it.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Deliveries that failed since the last call.
    pub fn failed(&self) -> impl Iterator<Item = Failed> + '_ {
        self.failed.try_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_a_retry_would_do() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            classify(&produce(RDKafkaErrorCode::QueueFull)),
            ErrorKind::QueueFull
        );
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
        ] {
            assert_eq!(classify(&produce(code)), ErrorKind::Permanent, "{code:?}");
        }
        assert_eq!(
            classify(&produce(RDKafkaErrorCode::Fatal)),
            ErrorKind::Fatal
        );
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert_eq!(classify(&produce(code)), ErrorKind::Retriable, "{code:?}");
        }
    }
}
