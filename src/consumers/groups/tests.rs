//! The lease logic on simulated time: fixed cases and a random model of joins,
//! leaves, heartbeats, releases, expiries and finished shards.

use proptest::prelude::*;

use super::*;

fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
    ShardInfo {
        id: id.into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        closed,
    }
}

fn member(now: i64) -> Member {
    Member {
        joined_ms: now,
        lease_timeout_ms: 1000,
        last_seen_ms: now,
    }
}

fn held(g: &GroupRecord, worker: &str) -> usize {
    g.leases.values().filter(|l| l.worker == worker).count()
}

#[test]
fn spreads_evenly_and_asks_the_surplus_back() {
    let shards: Vec<ShardInfo> = (0..4)
        .map(|i| shard(&format!("s{i}"), &[], false))
        .collect();
    let mut g = GroupRecord::default();
    g.members.insert("a".into(), member(0));
    assert!(g.rebalance(&shards, 0));
    assert_eq!(held(&g, "a"), 4);
    g.members.insert("b".into(), member(0));
    g.rebalance(&shards, 0);
    // Nothing moves until a releases: b waits, a is asked for two.
    assert_eq!(held(&g, "b"), 0);
    let asked: Vec<String> = g
        .leases
        .iter()
        .filter(|(_, l)| l.releasing)
        .map(|(s, _)| s.clone())
        .collect();
    assert_eq!(asked.len(), 2);
    for s in &asked {
        g.leases.remove(s);
    }
    g.rebalance(&shards, 0);
    assert_eq!(held(&g, "a"), 2);
    assert_eq!(held(&g, "b"), 2);
    // New epochs for the moved shards, above every earlier one.
    for s in &asked {
        assert!(g.leases[s].epoch > 4);
    }
}

#[test]
fn a_silent_worker_loses_its_leases_after_its_timeout() {
    let shards = vec![shard("s0", &[], false), shard("s1", &[], false)];
    let mut g = GroupRecord::default();
    g.members.insert("a".into(), member(0));
    g.members.insert("b".into(), member(0));
    g.rebalance(&shards, 0);
    assert_eq!(held(&g, "a"), 1);
    g.members.get_mut("b").unwrap().last_seen_ms = 900;
    g.rebalance(&shards, 999);
    assert_eq!(held(&g, "a"), 1, "not yet expired");
    g.rebalance(&shards, 1000);
    assert!(!g.members.contains_key("a"));
    assert_eq!(held(&g, "b"), 2);
}

#[test]
fn children_wait_for_both_parents_to_finish() {
    let shards = vec![
        shard("p", &[], true),
        shard("q", &[], true),
        shard("c", &["p", "q"], false),
    ];
    let mut g = GroupRecord::default();
    g.members.insert("a".into(), member(0));
    g.rebalance(&shards, 0);
    assert!(!g.leases.contains_key("c"));
    g.checkpoints.insert(
        "p".into(),
        Checkpoint {
            finished: true,
            ..Checkpoint::default()
        },
    );
    g.rebalance(&shards, 0);
    assert!(!g.leases.contains_key("p"), "a finished shard is let go");
    assert!(!g.leases.contains_key("c"));
    g.checkpoints.insert(
        "q".into(),
        Checkpoint {
            finished: true,
            ..Checkpoint::default()
        },
    );
    g.rebalance(&shards, 0);
    assert_eq!(g.leases["c"].worker, "a");
}

#[test]
fn a_parent_trimmed_away_does_not_block_its_child() {
    let shards = vec![shard("c", &["gone"], false)];
    let mut g = GroupRecord::default();
    g.members.insert("a".into(), member(0));
    g.rebalance(&shards, 0);
    assert_eq!(g.leases["c"].worker, "a");
}

#[derive(Debug, Clone)]
enum Step {
    Join(u8),
    Leave(u8),
    Heartbeat(u8),
    /// The worker lets go of what it was asked to release.
    Release(u8),
    /// The holder finishes a closed shard.
    Finish(u8),
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..5).prop_map(Step::Join),
        (0u8..5).prop_map(Step::Leave),
        (0u8..5).prop_map(Step::Heartbeat),
        (0u8..5).prop_map(Step::Release),
        (0u8..7).prop_map(Step::Finish),
        (0u16..1500).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Invariants: a shard changes holder only after its holder released it, left or
    /// expired (and then under a higher epoch); no shard is handed out before its
    /// parents finished; with live workers, every available shard is held once the
    /// workers have let go of what they were asked to.
    #[test]
    fn leases_are_exclusive_and_eventually_complete(steps in proptest::collection::vec(step(), 1..80)) {
        // s0, s1 closed and split into s2..s5 (s0 -> s2, s3; s1 -> s4, s5), s6 open.
        let shards = vec![
            shard("s0", &[], true),
            shard("s1", &[], true),
            shard("s2", &["s0"], false),
            shard("s3", &["s0"], false),
            shard("s4", &["s1"], false),
            shard("s5", &["s1"], false),
            shard("s6", &[], false),
        ];
        let mut g = GroupRecord::default();
        let mut now = 0i64;
        for s in steps {
            let before = g.clone();
            let mut let_go: BTreeSet<String> = BTreeSet::new();
            match s {
                Step::Join(w) => {
                    g.members.insert(format!("w{w}"), member(now));
                }
                Step::Leave(w) => {
                    let w = format!("w{w}");
                    g.members.remove(&w);
                    for (s, l) in &g.leases {
                        if l.worker == w {
                            let_go.insert(s.clone());
                        }
                    }
                    g.leases.retain(|_, l| l.worker != w);
                }
                Step::Heartbeat(w) => {
                    if let Some(m) = g.members.get_mut(&format!("w{w}")) {
                        m.last_seen_ms = now;
                    }
                }
                Step::Release(w) => {
                    let w = format!("w{w}");
                    let asked: Vec<String> = g
                        .leases
                        .iter()
                        .filter(|(_, l)| l.worker == w && l.releasing)
                        .map(|(s, _)| s.clone())
                        .collect();
                    for s in asked {
                        g.leases.remove(&s);
                        let_go.insert(s);
                    }
                }
                Step::Finish(i) => {
                    let id = format!("s{i}");
                    if g.leases.contains_key(&id) && shards.iter().any(|s| s.id == id && s.closed) {
                        g.checkpoints.entry(id.clone()).or_default().finished = true;
                        let_go.insert(id);
                    }
                }
                Step::Advance(ms) => now += i64::from(ms),
            }
            let expired: BTreeSet<String> = g
                .members
                .iter()
                .filter(|(_, m)| now >= m.last_seen_ms + m.lease_timeout_ms)
                .map(|(w, _)| w.clone())
                .collect();
            g.rebalance(&shards, now);
            for (s, old) in &before.leases {
                match g.leases.get(s) {
                    Some(new) if new.epoch == old.epoch => prop_assert_eq!(&new.worker, &old.worker),
                    Some(new) => {
                        prop_assert!(new.epoch > old.epoch);
                        prop_assert!(
                            let_go.contains(s) || expired.contains(&old.worker),
                            "{} moved from {} to {} without a release or expiry", s, old.worker, new.worker
                        );
                    }
                    None => {}
                }
            }
            for (s, l) in &g.leases {
                prop_assert!(g.members.contains_key(&l.worker));
                let info = shards.iter().find(|x| &x.id == s).unwrap();
                for p in &info.parents {
                    prop_assert!(g.checkpoints.get(p).is_some_and(|c| c.finished), "{} before its parent {}", s, p);
                }
            }
        }
        // Settle: every worker heartbeats and lets go of what it was asked to.
        if !g.members.is_empty() {
            for _ in 0..3 {
                for m in g.members.values_mut() {
                    m.last_seen_ms = now;
                }
                g.leases.retain(|_, l| !l.releasing);
                g.rebalance(&shards, now);
            }
            let available = g.available(&shards);
            for s in &available {
                prop_assert!(g.leases.contains_key(s), "{} not held", s);
            }
            let counts: Vec<usize> = g.members.keys().map(|w| held(&g, w)).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "uneven spread {:?}", counts);
        }
    }
}
