//! `freshet status`: is the server up and ready, and its main figures, from
//! `/health`, `/ready` and `/metrics` (signed with the environment's credentials when
//! set, as the other commands are). Exits non-zero when the server is not ready.

use anyhow::Context;
use serde_json::Value;

pub(super) async fn get(endpoint: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let url = format!("{}{path}", endpoint.trim_end_matches('/'));
    let req = reqwest::Client::new().get(&url);
    let req = super::sign::sign_reqwest(req, "GET", &url, "kinesis", &[], &[])?;
    let resp = req.send().await.with_context(|| {
        format!("cannot reach Freshet at {endpoint} (is `freshet serve` running?)")
    })?;
    Ok((
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    ))
}

/// The labelled samples of OpenMetrics text: (metric, labels, value), where labels is
/// the text between the braces; comments and unlabelled samples are skipped.
pub(super) fn samples(metrics: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    metrics.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (metric, rest) = line.split_once('{')?;
        let (labels, value) = rest.split_once('}')?;
        let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
        Some((metric, labels, value))
    })
}

/// The value of label `key` in a sample's labels (`a="x",b="y"`). Freshet's label
/// values (stream and delivery stream names, kinds, destinations) hold no quotes,
/// commas or escapes.
pub(super) fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// Sums of a metric's samples by its `stream` label, from OpenMetrics text.
fn per_stream(metrics: &str, name: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (metric, labels, value) in samples(metrics) {
        let Some(stream) = label(labels, "stream").filter(|_| metric == name) else {
            continue;
        };
        match out.iter_mut().find(|(s, _)| s == stream) {
            Some((_, v)) => *v += value,
            None => out.push((stream.to_string(), value)),
        }
    }
    out
}

pub async fn run(endpoint: &str) -> anyhow::Result<()> {
    let (_, health) = get(endpoint, "/health").await?;
    let health: Value = serde_json::from_str(&health).unwrap_or(Value::Null);
    let (ready_status, ready) = get(endpoint, "/ready").await?;
    let ready: Value = serde_json::from_str(&ready).unwrap_or(Value::Null);
    println!("endpoint        {endpoint}");
    println!(
        "version         {}",
        health["version"].as_str().unwrap_or("?")
    );
    println!(
        "authentication  {}",
        health["authentication"].as_str().unwrap_or("?")
    );
    if ready_status == 200 {
        println!("ready           yes");
    } else {
        println!("ready           no: {}", ready["reasons"]);
    }
    let (metrics_status, metrics) = get(endpoint, "/metrics").await?;
    if metrics_status == 200 {
        let records = per_stream(&metrics, "freshet_incoming_records_total");
        let fragments = per_stream(&metrics, "freshet_putmedia_fragments_total");
        let storage = per_stream(&metrics, "freshet_storage_bytes");
        println!(
            "streams         {} data, {} video",
            records.len(),
            fragments.len()
        );
        for (stream, n) in &records {
            println!("  {stream:<30} {n:>12} records in");
        }
        for (stream, n) in &fragments {
            println!("  {stream:<30} {n:>12} fragments in");
        }
        let bytes: f64 = storage.iter().map(|(_, b)| b).sum();
        println!("storage         {:.1} MiB", bytes / 1_048_576.0);
    } else {
        println!("metrics         not available ({metrics_status})");
    }
    if ready_status != 200 {
        anyhow::bail!("the server is not ready");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_series_by_stream() {
        let text = "freshet_storage_bytes{stream=\"a\",kind=\"data\"} 10\n\
                    freshet_storage_bytes{stream=\"a\",kind=\"video\"} 5\n\
                    freshet_storage_bytes{stream=\"b\",kind=\"data\"} 1\n";
        assert_eq!(
            super::per_stream(text, "freshet_storage_bytes"),
            vec![("a".to_string(), 15.0), ("b".to_string(), 1.0)]
        );
    }
}
