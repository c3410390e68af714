//! `freshet delivery tail NAME`: follows one delivery stream's work as it happens — a
//! line whenever its figures change: records accepted, records and bytes delivered,
//! the backlog and the age of its oldest undelivered record, failed attempts and
//! processing failures, and the last delivery error. The figures are the server's
//! `/metrics` series for the stream (`freshet_delivery_*`, label `delivery_stream`), the
//! status and error its `DescribeDeliveryStream`; a table line for a terminal, one JSON
//! object a line with `--json`. Ends with Ctrl-C, after `--count` lines, or when the
//! stream is deleted.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::KinesisClient;

/// A delivery stream's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub incoming_records: f64,
    pub delivered_records: f64,
    pub delivered_bytes: f64,
    pub backlog_records: f64,
    pub freshness_seconds: f64,
    pub failures: f64,
    pub processing_failed: f64,
}

/// The figures of delivery stream `name` in OpenMetrics text: each series summed over
/// its other labels (`destination`).
pub fn figures(metrics: &str, name: &str) -> Figures {
    use super::status::{label, samples};
    let mut f = Figures::default();
    for (series, labels, value) in samples(metrics) {
        if label(labels, "delivery_stream") != Some(name) {
            continue;
        }
        let slot = match series {
            "freshet_delivery_incoming_records_total" => &mut f.incoming_records,
            "freshet_delivery_delivered_records_total" => &mut f.delivered_records,
            "freshet_delivery_delivered_bytes_total" => &mut f.delivered_bytes,
            "freshet_delivery_backlog_records" => &mut f.backlog_records,
            "freshet_delivery_data_freshness_seconds" => &mut f.freshness_seconds,
            "freshet_delivery_failures_total" => &mut f.failures,
            "freshet_delivery_processing_failed_total" => &mut f.processing_failed,
            _ => continue,
        };
        *slot += value;
    }
    f
}

/// One line of the tail: the figures, what changed since `before`, and the last error.
pub fn line(now: &str, f: &Figures, before: &Figures, error: Option<&str>) -> String {
    let delta = |a: f64, b: f64| {
        if a > b {
            format!(" (+{})", a - b)
        } else {
            String::new()
        }
    };
    let mut text = format!(
        "{now}  in {}{}  delivered {}{} records, {} bytes  backlog {}  oldest {:.1}s  failures {}{}",
        f.incoming_records,
        delta(f.incoming_records, before.incoming_records),
        f.delivered_records,
        delta(f.delivered_records, before.delivered_records),
        f.delivered_bytes,
        f.backlog_records,
        f.freshness_seconds,
        f.failures,
        delta(f.failures, before.failures),
    );
    if f.processing_failed > 0.0 {
        text.push_str(&format!("  processing failed {}", f.processing_failed));
    }
    if let Some(e) = error {
        text.push_str(&format!("  last error: {e}"));
    }
    text
}

/// The JSON form of one tail line.
pub fn json_line(at_ms: i64, f: &Figures, status: &str, error: Option<&str>) -> Value {
    json!({
        "time_ms": at_ms,
        "status": status,
        "incoming_records": f.incoming_records,
        "delivered_records": f.delivered_records,
        "delivered_bytes": f.delivered_bytes,
        "backlog_records": f.backlog_records,
        "oldest_undelivered_seconds": f.freshness_seconds,
        "failures": f.failures,
        "processing_failed": f.processing_failed,
        "last_error": error,
    })
}

pub async fn run(
    client: &KinesisClient,
    name: &str,
    interval: Duration,
    count: Option<u64>,
    json_lines: bool,
) -> anyhow::Result<()> {
    // Fails here, with AWS's error, for a stream that does not exist.
    let first = describe(client, name).await?;
    if !json_lines {
        eprintln!(
            "following {name} ({}); Ctrl-C to stop",
            first["DeliveryStreamDescription"]["DeliveryStreamStatus"]
                .as_str()
                .unwrap_or("")
        );
    }
    let mut before: Option<(Figures, Option<String>)> = None;
    let mut printed = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let d = match describe(client, name).await {
            Ok(d) => d,
            Err(e) if e.to_string().contains("ResourceNotFoundException") => {
                eprintln!("{name} was deleted");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let d = &d["DeliveryStreamDescription"];
        let status = d["DeliveryStreamStatus"].as_str().unwrap_or("").to_string();
        let error = d["FailureDescription"]["Details"]
            .as_str()
            .map(str::to_string);
        let (code, metrics) = super::status::get(client.endpoint(), "/metrics").await?;
        if code != 200 {
            anyhow::bail!("GET /metrics answered {code}: {}", metrics.trim());
        }
        let now = figures(&metrics, name);
        let changed = before
            .as_ref()
            .is_none_or(|(f, e)| *f != now || *e != error);
        if changed {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if json_lines {
                println!("{}", json_line(at, &now, &status, error.as_deref()));
            } else {
                let clock = chrono_free_clock(at);
                let prior = before.as_ref().map(|(f, _)| f.clone()).unwrap_or_default();
                println!("{}", line(&clock, &now, &prior, error.as_deref()));
            }
            printed += 1;
            before = Some((now, error));
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
    }
}

async fn describe(client: &KinesisClient, name: &str) -> anyhow::Result<Value> {
    client
        .call_firehose(
            "DescribeDeliveryStream",
            json!({"DeliveryStreamName": name}),
        )
        .await
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
fn chrono_free_clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP freshet_delivery_delivered_records Records delivered
# TYPE freshet_delivery_delivered_records counter
freshet_delivery_delivered_records_total{delivery_stream=\"logs\",destination=\"file\"} 7
freshet_delivery_delivered_records_total{delivery_stream=\"logs\",destination=\"s3\"} 3
freshet_delivery_delivered_records_total{delivery_stream=\"logs-2\",destination=\"file\"} 100
freshet_delivery_incoming_records_total{delivery_stream=\"logs\"} 12
freshet_delivery_delivered_bytes_total{delivery_stream=\"logs\",destination=\"file\"} 700
freshet_delivery_backlog_records{delivery_stream=\"logs\"} 2
freshet_delivery_data_freshness_seconds{delivery_stream=\"logs\"} 1.5
freshet_delivery_failures_total{delivery_stream=\"logs\"} 1
freshet_incoming_records_total{stream=\"logs\"} 999
# EOF
";

    #[test]
    fn figures_of_one_stream_summed_over_destinations() {
        let f = figures(METRICS, "logs");
        assert_eq!(
            f,
            Figures {
                incoming_records: 12.0,
                delivered_records: 10.0,
                delivered_bytes: 700.0,
                backlog_records: 2.0,
                freshness_seconds: 1.5,
                failures: 1.0,
                processing_failed: 0.0,
            }
        );
        assert_eq!(figures(METRICS, "logs-2").delivered_records, 100.0);
        assert_eq!(figures(METRICS, "log"), Figures::default());
    }

    #[test]
    fn lines_show_what_changed_and_the_error() {
        let before = figures(METRICS, "logs");
        let now = Figures {
            delivered_records: 12.0,
            backlog_records: 0.0,
            freshness_seconds: 0.0,
            ..before.clone()
        };
        assert_eq!(
            line("10:00:01", &now, &before, Some("S3.AccessDenied: no")),
            "10:00:01  in 12  delivered 12 (+2) records, 700 bytes  backlog 0  oldest 0.0s  \
             failures 1  last error: S3.AccessDenied: no"
        );
        assert_eq!(chrono_free_clock(86_400_000 + 3_723_000), "01:02:03");
        let j = json_line(5, &now, "ACTIVE", None);
        assert_eq!(j["delivered_records"], 12.0);
        assert_eq!(j["last_error"], Value::Null);
    }
}
