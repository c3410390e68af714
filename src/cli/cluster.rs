//! `freshet cluster status`: the cluster's nodes (id, advertised URL, last heartbeat's
//! age, live or not) and leases (resource, owner, epoch, time to expiry, and for shards
//! the lag of their newest commit behind its writes and that commit's age), read
//! straight from the cluster's PostgreSQL database (not through a node), as a table or
//! `--json`. Ages are measured on the database's clock, the one the leases expire by.

use std::collections::BTreeMap;

use crate::cluster::db::{ClusterDb, ClusterView};
use crate::cluster::index::{self, ShardCommit};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Nodes, leases and the lag of each shard's commits
    Status {
        /// The cluster's PostgreSQL database, as given to `freshet serve --cluster`
        #[arg(long = "cluster", env = "FRESHET_CLUSTER_URL")]
        url: String,
        /// Print one JSON document (`nodes`, `leases`, `shards`) instead of tables
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { url, json } => {
            let mut db = ClusterDb::connect(&url).await?;
            db.migrate().await?;
            let view = db.view().await?;
            let shards = index::shard_commits(&db).await?;
            if json {
                let doc = serde_json::json!({
                    "nodes": view.nodes,
                    "leases": view.leases,
                    "shards": shards,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render(&view, &shards));
            }
            Ok(())
        }
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The tables `freshet cluster status` prints.
pub fn render(view: &ClusterView, shards: &[ShardCommit]) -> String {
    let commits: BTreeMap<&str, &ShardCommit> =
        shards.iter().map(|c| (c.resource.as_str(), c)).collect();
    let nodes: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.advertise_url.clone(),
                format!("{:.1}s", n.heartbeat_age_secs.max(0.0)),
                if n.live { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let leases: Vec<Vec<String>> = view
        .leases
        .iter()
        .map(|l| {
            let (owner, expires) = match &l.owner {
                Some(owner) if l.expires_in_secs > 0.0 => {
                    (owner.clone(), format!("{:.1}s", l.expires_in_secs))
                }
                Some(owner) => (owner.clone(), "expired".to_string()),
                None => ("-".to_string(), "-".to_string()),
            };
            let (lag, last) = match commits.get(l.resource.as_str()) {
                Some(c) => (
                    format!("{:.0}ms", c.commit_lag_ms),
                    format!("{:.1}s ago", c.last_commit_secs),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            vec![
                l.resource.clone(),
                owner,
                l.epoch.to_string(),
                expires,
                lag,
                last,
            ]
        })
        .collect();
    let held = view.leases.iter().filter(|l| l.held()).count();
    format!(
        "{} node(s), {} live\n{}\n{} lease(s), {} held\n{}",
        view.nodes.len(),
        view.nodes.iter().filter(|n| n.live).count(),
        table(&["NODE", "URL", "HEARTBEAT", "LIVE"], &nodes),
        view.leases.len(),
        held,
        table(
            &[
                "RESOURCE",
                "OWNER",
                "EPOCH",
                "EXPIRES IN",
                "COMMIT LAG",
                "LAST COMMIT"
            ],
            &leases
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::db::{LeaseRow, NodeRow};

    #[test]
    fn status_tables_show_liveness_owners_and_expiry() {
        let view = ClusterView {
            nodes: vec![
                NodeRow {
                    node_id: "a".into(),
                    advertise_url: "http://10.0.0.1:4570".into(),
                    heartbeat_age_secs: 0.3,
                    up_secs: 30.0,
                    lease_secs: 10.0,
                    live: true,
                },
                NodeRow {
                    node_id: "b".into(),
                    advertise_url: "http://10.0.0.2:4570".into(),
                    heartbeat_age_secs: 42.0,
                    up_secs: 60.0,
                    lease_secs: 10.0,
                    live: false,
                },
            ],
            leases: vec![
                LeaseRow {
                    resource: "shard:s/shardId-000000000000".into(),
                    owner: Some("a".into()),
                    epoch: 3,
                    expires_in_secs: 9.5,
                },
                LeaseRow {
                    resource: "video:cam".into(),
                    owner: Some("b".into()),
                    epoch: 1,
                    expires_in_secs: -32.0,
                },
                LeaseRow {
                    resource: "video:door".into(),
                    owner: None,
                    epoch: 2,
                    expires_in_secs: -1.0,
                },
            ],
        };
        let shards = vec![ShardCommit {
            resource: "shard:s/shardId-000000000000".into(),
            node_id: "a".into(),
            commit_lag_ms: 12.4,
            last_commit_secs: 0.3,
        }];
        let text = render(&view, &shards);
        assert!(text.starts_with("2 node(s), 1 live\n"), "{text}");
        assert!(
            text.contains("a     http://10.0.0.1:4570  0.3s       yes"),
            "{text}"
        );
        assert!(
            text.contains("b     http://10.0.0.2:4570  42.0s      no"),
            "{text}"
        );
        assert!(text.contains("3 lease(s), 1 held"), "{text}");
        assert!(
            text.contains(
                "shard:s/shardId-000000000000  a      3      9.5s        12ms        0.3s ago\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "video:cam                     b      1      expired     -           -\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("video:door                    -      2      -"),
            "{text}"
        );
    }
}
