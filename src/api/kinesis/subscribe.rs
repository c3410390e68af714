//! SubscribeToShard on the wire (Kinesis API reference, `SubscribeToShard`): the
//! request in JSON or CBOR like any other operation, the answer an AWS event stream
//! (`application/vnd.amazon.eventstream`, [`super::super::eventstream`]) whose events
//! are JSON whatever the request's encoding, as the SDKs (boto3, aws-sdk-rust, the
//! Java SDK v2) decode them: an `initial-response` event with `{}`, then
//! `SubscribeToShardEvent`s, and an exception message if the subscription fails.
//!
//! The body is pulled from the subscription's bounded channel as the connection can
//! take it (HTTP/1.1 chunked, HTTP/2 DATA frames), so a client that stops reading
//! stops the reader instead of growing a buffer. Each event is encoded once.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use serde::Deserialize;

use super::super::error::ApiError;
use super::super::eventstream;
use crate::consumers::{Delivery, FanOut, ShardEvent, StartingPosition, Subscription};

const EVENT_STREAM_TYPE: &str = "application/vnd.amazon.eventstream";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SubscribeIn {
    #[serde(rename = "ConsumerARN")]
    consumer_arn: String,
    shard_id: String,
    starting_position: StartingPositionIn,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartingPositionIn {
    #[serde(rename = "Type")]
    kind: String,
    sequence_number: Option<String>,
    /// Epoch seconds (the model's timestamps, normalised).
    timestamp: Option<f64>,
}

/// Runs SubscribeToShard; `doc` has been checked against the model.
pub async fn subscribe(
    fanout: &std::sync::Arc<FanOut>,
    doc: serde_json::Value,
) -> Result<Response, ApiError> {
    let input: SubscribeIn =
        serde_json::from_value(doc).map_err(|e| ApiError::serialization(e.to_string()))?;
    let start = StartingPosition {
        kind: input.starting_position.kind,
        sequence_number: input.starting_position.sequence_number,
        timestamp_ms: input
            .starting_position
            .timestamp
            .map(|s| (s * 1000.0).round() as i64),
    };
    let sub = fanout
        .subscribe(&input.consumer_arn, &input.shard_id, &start)
        .await?;
    let body = EventBody {
        first: Some(Bytes::from(eventstream::event("initial-response", b"{}"))),
        sub: Some(sub),
    };
    let mut resp = (StatusCode::OK, Body::new(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(EVENT_STREAM_TYPE),
    );
    Ok(resp)
}

/// The response body: the initial response, then one frame per delivery.
struct EventBody {
    first: Option<Bytes>,
    /// `None` once the subscription has ended (after its error frame, if any).
    sub: Option<Subscription>,
}

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(sub) = self.sub.as_mut() else {
            return Poll::Ready(None);
        };
        match sub.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.sub = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Delivery::Event(e))) => {
                let frame = eventstream::event("SubscribeToShardEvent", &render_event(&e));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))))
            }
            Poll::Ready(Some(Delivery::Failed(e))) => {
                self.sub = None;
                let e = ApiError::from(e);
                if e.status(super::super::error::Family::Kinesis)
                    .is_server_error()
                {
                    tracing::warn!(code = e.code, message = %e.message, "subscription failed");
                }
                let frame = eventstream::exception(e.code, &e.message);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.sub.is_none()
    }
}

/// A `SubscribeToShardEvent` as JSON.
fn render_event(e: &ShardEvent) -> Vec<u8> {
    super::ops::render_batch(
        &e.records,
        e.millis_behind_latest,
        e.continuation_sequence_number
            .as_deref()
            .map(|c| ("ContinuationSequenceNumber", c)),
        e.child_shards.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::model::OutRecord;

    #[test]
    fn event_json_has_the_models_members() {
        let e = ShardEvent {
            records: vec![OutRecord {
                sequence_number: "1".into(),
                arrival_ms: 1500,
                partition_key: "k\"".into(),
                data: Bytes::from_static(b"\x00\xff"),
                encrypted: false,
            }],
            continuation_sequence_number: Some("1".into()),
            millis_behind_latest: 0,
            child_shards: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&render_event(&e)).unwrap();
        assert_eq!(v["Records"][0]["Data"], "AP8=");
        assert_eq!(v["Records"][0]["PartitionKey"], "k\"");
        assert_eq!(v["Records"][0]["ApproximateArrivalTimestamp"], 1.5);
        assert_eq!(v["ContinuationSequenceNumber"], "1");
        assert_eq!(v["MillisBehindLatest"], 0);
        assert!(v.get("ChildShards").is_none());
    }
}
