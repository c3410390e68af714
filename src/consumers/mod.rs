//! Enhanced fan-out: SubscribeToShard subscriptions of registered stream consumers
//! (Kinesis API reference, `SubscribeToShard` and `SubscribeToShardEvent`).
//!
//! Consumers themselves (RegisterStreamConsumer and friends, their CREATING → ACTIVE
//! → DELETING states) are stream metadata kept by [`StreamService`]; this module runs
//! what they read. A subscription is one task per consumer and shard that reads the
//! shard from its starting position and pushes [`ShardEvent`]s into a bounded channel:
//! it waits on the shard's durable end offset (no polling interval) and, when the
//! receiver does not keep up, it waits on the channel, so a slow reader holds at most
//! [`EVENT_QUEUE`] batches. A subscription ends after its lifetime (5 minutes, as on
//! AWS), at the end of a closed shard (with its children), when its consumer or stream
//! goes away, or when the receiver is dropped. There is at most one per consumer and
//! shard (ResourceInUseException for a second one).
//!
//! No HTTP here: the API layer frames the events (AWS event stream).

pub mod groups;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::streams::model::{ChildShard, OutRecord};
use crate::streams::sequence::SequenceNumber;
use crate::streams::{StreamError, StreamRef, StreamService};

/// Batches queued for one subscription's receiver before the reader waits.
pub const EVENT_QUEUE: usize = 2;
/// AWS's subscription lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// An event is sent at least this often, records or not (AWS sends them every few
/// seconds on an idle shard), so the reader knows the subscription is alive.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How often an idle subscription re-reads its shard besides appends: a shard closed
/// by a reshard gets no append, and its children are announced at the next read.
const RECHECK: Duration = Duration::from_millis(250);

/// Where a subscription starts (`StartingPosition`).
#[derive(Debug, Clone, PartialEq)]
pub struct StartingPosition {
    /// AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST or AT_TIMESTAMP.
    pub kind: String,
    pub sequence_number: Option<String>,
    pub timestamp_ms: Option<i64>,
}

/// One `SubscribeToShardEvent`.
#[derive(Debug, Clone)]
pub struct ShardEvent {
    pub records: Vec<OutRecord>,
    /// Where to resume with AFTER_SEQUENCE_NUMBER; `None` at the end of a closed shard.
    pub continuation_sequence_number: Option<String>,
    pub millis_behind_latest: i64,
    /// The children of a closed shard that has been read to its end (the last event).
    pub child_shards: Option<Vec<ChildShard>>,
}

/// What a subscription delivers: events, and at most one error, which ends it.
#[derive(Debug)]
pub enum Delivery {
    Event(ShardEvent),
    Failed(StreamError),
}

/// An active subscription's receiving end.
pub struct Subscription {
    pub events: mpsc::Receiver<Delivery>,
}

/// Which subscription holds a consumer and shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    consumer_arn: String,
    shard_id: String,
}

/// The enhanced fan-out service.
pub struct FanOut {
    streams: Arc<StreamService>,
    /// How long a subscription lasts (AWS: 5 minutes; shorter in tests).
    lifetime: Duration,
    /// Active subscriptions and their ids, so a finished task removes only its own
    /// entry, not one a newer subscription made after it.
    active: Mutex<HashMap<Key, u64>>,
    next_id: AtomicU64,
    /// Set at shutdown: every subscription ends, and no new one starts.
    closing: watch::Sender<bool>,
}

impl FanOut {
    pub fn new(streams: Arc<StreamService>, lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            streams,
            lifetime,
            active: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closing: watch::channel(false).0,
        })
    }

    /// Ends every subscription (their responses finish) and refuses new ones.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// SubscribeToShard: checks the consumer, shard and starting position, then starts
    /// the subscription. Errors here come before any event.
    pub async fn subscribe(
        self: &Arc<Self>,
        consumer_arn: &str,
        shard_id: &str,
        start: &StartingPosition,
    ) -> Result<Subscription, StreamError> {
        let consumer = self
            .streams
            .describe_consumer(None, None, Some(consumer_arn))
            .map_err(|e| match e {
                StreamError::ResourceNotFound(_) => StreamError::ResourceNotFound(format!(
                    "Consumer {consumer_arn} under account {} not found.",
                    self.streams.config.account_id
                )),
                other => other,
            })?;
        if consumer.consumer_status != "ACTIVE" {
            return Err(StreamError::ResourceInUse(format!(
                "Consumer {consumer_arn} under account {} is not in ACTIVE state.",
                self.streams.config.account_id
            )));
        }
        let stream = StreamRef {
            name: None,
            arn: consumer.stream_arn.clone(),
        };
        let iterator = self
            .streams
            .get_shard_iterator(
                &stream,
                shard_id,
                &start.kind,
                start.sequence_number.as_deref(),
                start.timestamp_ms,
            )
            .await
            .map_err(|e| match e {
                // The same checks as GetShardIterator, named after this operation.
                StreamError::InvalidArgument(m) => {
                    StreamError::InvalidArgument(m.replace("GetShardIterator", "SubscribeToShard"))
                }
                other => other,
            })?;
        let end = self.streams.watch_shard_end(&stream, shard_id)?;
        let key = Key {
            consumer_arn: consumer_arn.to_string(),
            shard_id: shard_id.to_string(),
        };
        if *self.closing.borrow() {
            return Err(StreamError::Unavailable(
                "The server is shutting down.".into(),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut active = self.active.lock().unwrap();
            if active.contains_key(&key) {
                let stream_name = self.streams.resolve_name(&stream).unwrap_or_default();
                return Err(StreamError::ResourceInUse(format!(
                    "Another active subscription exists for this consumer: {}:{stream_name}:{shard_id}:{}",
                    self.streams.config.account_id, consumer.consumer_name
                )));
            }
            active.insert(key.clone(), id);
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let reader = Reader {
            fanout: self.clone(),
            key,
            id,
            iterator,
            end,
            gone: self.streams.watch_consumers_gone(),
            closing: self.closing.subscribe(),
            deadline: tokio::time::Instant::now() + self.lifetime,
            tx,
        };
        tokio::spawn(reader.run());
        Ok(Subscription { events: rx })
    }

    /// Whether a subscription is active for this consumer and shard.
    pub fn is_active(&self, consumer_arn: &str, shard_id: &str) -> bool {
        self.active.lock().unwrap().contains_key(&Key {
            consumer_arn: consumer_arn.to_string(),
            shard_id: shard_id.to_string(),
        })
    }

    fn release(&self, key: &Key, id: u64) {
        let mut active = self.active.lock().unwrap();
        if active.get(key) == Some(&id) {
            active.remove(key);
        }
    }

    /// Whether the consumer still exists and is not being deleted.
    fn consumer_alive(&self, consumer_arn: &str) -> bool {
        self.streams
            .describe_consumer(None, None, Some(consumer_arn))
            .is_ok_and(|c| c.consumer_status == "ACTIVE")
    }
}

/// Why a reader stopped waiting.
enum Wake {
    Appended,
    Recheck,
    ConsumerGone,
    /// The lifetime is over, or the server is shutting down.
    Expired,
    ReceiverGone,
}

/// One subscription's task.
struct Reader {
    fanout: Arc<FanOut>,
    key: Key,
    id: u64,
    /// The next read's position, as a GetRecords iterator (re-issued on every read).
    iterator: String,
    /// The shard's durable end offset.
    end: watch::Receiver<u64>,
    gone: watch::Receiver<u64>,
    /// The server is shutting down.
    closing: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    tx: mpsc::Sender<Delivery>,
}

impl Reader {
    async fn run(mut self) {
        self.read_until_done().await;
        self.fanout.release(&self.key, self.id);
    }

    async fn read_until_done(&mut self) {
        let streams = self.fanout.streams.clone();
        let mut last_sent: Option<tokio::time::Instant> = None;
        loop {
            // Marked seen before the read: an append after it wakes the wait below.
            self.end.borrow_and_update();
            self.gone.borrow_and_update();
            let out = match streams.get_records(&self.iterator, None).await {
                Ok(out) => out,
                Err(e) => {
                    self.fail(e).await;
                    return;
                }
            };
            let finished = out.child_shards.is_some();
            let has_records = !out.records.is_empty();
            let continuation = out.next_shard_iterator.as_deref().and_then(|it| {
                let pos = streams.iterators().decode(it)?;
                match out.records.last() {
                    Some(r) => Some(r.sequence_number.clone()),
                    None => Some(
                        SequenceNumber {
                            stream_epoch: pos.stream_epoch,
                            shard_ordinal: pos.shard_ordinal,
                            offset: pos.offset.saturating_sub(1),
                        }
                        .encode(),
                    ),
                }
            });
            let keepalive_due = last_sent.is_none_or(|t| t.elapsed() >= KEEPALIVE);
            if has_records || finished || keepalive_due {
                let event = ShardEvent {
                    records: out.records,
                    continuation_sequence_number: continuation,
                    millis_behind_latest: out.millis_behind_latest,
                    child_shards: out.child_shards,
                };
                if !self.push(event).await {
                    return;
                }
                last_sent = Some(tokio::time::Instant::now());
            }
            if finished {
                return;
            }
            if let Some(next) = out.next_shard_iterator {
                self.iterator = next;
            }
            if has_records {
                continue;
            }
            match self.wait().await {
                Wake::Appended | Wake::Recheck => {}
                Wake::ConsumerGone => {
                    if !self.fanout.consumer_alive(&self.key.consumer_arn) {
                        self.consumer_gone().await;
                        return;
                    }
                }
                Wake::Expired | Wake::ReceiverGone => return,
            }
        }
    }

    /// Sends an event, waiting for room as long as the subscription lasts; false when
    /// the subscription is to end instead.
    async fn push(&mut self, event: ShardEvent) -> bool {
        loop {
            let check_consumer = tokio::select! {
                permit = self.tx.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            permit.send(Delivery::Event(event));
                            true
                        }
                        Err(_) => false,
                    };
                }
                _ = tokio::time::sleep_until(self.deadline) => return false,
                _ = shutting_down(&mut self.closing) => return false,
                changed = self.gone.changed() => changed.is_ok(),
            };
            if check_consumer && !self.fanout.consumer_alive(&self.key.consumer_arn) {
                self.consumer_gone().await;
                return false;
            }
        }
    }

    async fn wait(&mut self) -> Wake {
        let sleep = RECHECK.min(
            self.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        );
        tokio::select! {
            changed = self.end.changed() => match changed {
                Ok(()) => Wake::Appended,
                // The shard's log was closed (stream deleted): the next read says so.
                Err(_) => {
                    tokio::time::sleep(RECHECK).await;
                    Wake::Recheck
                }
            },
            _ = self.gone.changed() => Wake::ConsumerGone,
            _ = self.tx.closed() => Wake::ReceiverGone,
            _ = shutting_down(&mut self.closing) => Wake::Expired,
            _ = tokio::time::sleep(sleep) => {
                if tokio::time::Instant::now() >= self.deadline {
                    Wake::Expired
                } else {
                    Wake::Recheck
                }
            }
        }
    }

    async fn consumer_gone(&self) {
        self.fail(StreamError::ResourceNotFound(format!(
            "Consumer {} under account {} not found.",
            self.key.consumer_arn, self.fanout.streams.config.account_id
        )))
        .await;
    }

    /// Sends the error that ends the subscription, waiting for room no longer than
    /// the subscription lasts (a reader that never reads just sees the end).
    async fn fail(&self, e: StreamError) {
        let _ = tokio::time::timeout_at(self.deadline, self.tx.send(Delivery::Failed(e))).await;
    }
}

/// Completes once the server is shutting down (the guard `wait_for` returns is not
/// `Send`, so it is dropped here).
async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

#[cfg(test)]
mod tests;
