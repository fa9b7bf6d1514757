//! The dead-letter topic: a message a service cannot process is forwarded there unchanged,
//! with headers saying where it came from and why, counted in the service's
//! `netmeter_<service>_dead_letters_total{reason}` and logged once with its position. The
//! pipeline then moves on; nothing is dropped silently.

use std::fmt::Display;

use netmeter_proto::{
    DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SERVICE_HEADER, DEAD_LETTER_SOURCE_HEADER,
    SCHEMA_HEADER, Schema,
};

use crate::kafka::KafkaArgs;
use crate::metric::Metric;
use crate::publish::Outgoing;

/// A message that could not be processed, as read.
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub schema: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

pub struct DeadLetters {
    topic: String,
    service: &'static str,
    counter: Metric,
}

impl DeadLetters {
    /// `service` goes into the service header; `counter`, declared in the service's metric
    /// list, counts the letters by reason.
    pub fn new(kafka: &KafkaArgs, service: &'static str, counter: Metric) -> DeadLetters {
        DeadLetters {
            topic: kafka.topic(Schema::DeadLetterV1.tag()),
            service,
            counter,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead letter for `rejected`; counts and logs it. `label` is a short fixed reason
    /// for the metric, `reason` the full one for the header and the log.
    pub fn letter(
        &self,
        rejected: &Rejected,
        reason: &dyn Display,
        label: &'static str,
    ) -> Outgoing {
        metrics::counter!(self.counter.name, "reason" => label).increment(1);
        let source = format!(
            "{}/{}/{}",
            rejected.topic, rejected.partition, rejected.offset
        );
        tracing::warn!(%source, %reason, dead_letter_topic = %self.topic, "message rejected; forwarded to the dead-letter topic");
        let mut headers = vec![
            (DEAD_LETTER_REASON_HEADER, reason.to_string().into_bytes()),
            (DEAD_LETTER_SERVICE_HEADER, self.service.as_bytes().to_vec()),
            (DEAD_LETTER_SOURCE_HEADER, source.into_bytes()),
        ];
        if let Some(schema) = rejected.schema {
            headers.push((SCHEMA_HEADER, schema.to_vec()));
        }
        Outgoing {
            topic: self.topic.clone(),
            key: rejected.key.unwrap_or_default().to_vec(),
            payload: rejected.payload.to_vec(),
            headers,
        }
    }
}
