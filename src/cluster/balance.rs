//! The rebalancer, pure: from one snapshot of the live nodes and the leases, what one
//! node should release and try to acquire so that resources end up spread evenly (the
//! counts of any two live nodes differ by at most one).
//!
//! Every node computes the same quotas from the same snapshot: with `R` resources and
//! `N` live nodes in id order, the node at position `i` gets `R / N`, plus one when
//! `i < R % N`; the quotas add up to `R`. A node over its quota releases the excess; a
//! node under it tries to acquire free resources (never granted, released, or expired
//! on the database's clock). Acquisition is arbitrated by the database (one grant per
//! epoch), so nodes racing for the same resource are safe; the loser tries others at
//! its next heartbeat. Never touches a lease another node holds.

use super::db::{LeaseRow, NodeRow};

/// What one node should do after a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held leases to give up, with their epochs.
    pub release: Vec<(String, i64)>,
    /// Free resources to try to acquire, in the order to try them.
    pub acquire: Vec<String>,
}

/// The share of `resources` that the node at `position` among `live` nodes should own.
pub fn quota(resources: usize, live: usize, position: usize) -> usize {
    if live == 0 {
        return 0;
    }
    resources / live + usize::from(position < resources % live)
}

/// The ids of the live nodes, sorted, with `me` among them (a node that is running
/// this counts itself live even before its first heartbeat is visible).
pub fn live_nodes(nodes: &[NodeRow], me: &str) -> Vec<String> {
    let mut live: Vec<String> = nodes
        .iter()
        .filter(|n| n.live)
        .map(|n| n.node_id.clone())
        .collect();
    if !live.iter().any(|n| n == me) {
        live.push(me.to_string());
    }
    live.sort();
    live
}

/// What `me` should do, given the live nodes (sorted, `me` among them) and every lease.
pub fn plan(me: &str, live: &[String], leases: &[LeaseRow]) -> Plan {
    let Some(position) = live.iter().position(|n| n == me) else {
        return Plan::default();
    };
    let target = quota(leases.len(), live.len(), position);
    let mut mine: Vec<&LeaseRow> = leases
        .iter()
        .filter(|l| l.held() && l.owner.as_deref() == Some(me))
        .collect();
    mine.sort_by(|a, b| a.resource.cmp(&b.resource));
    if mine.len() > target {
        // Give up the last ones by name: deterministic, so repeated snapshots agree.
        return Plan {
            release: mine[target..]
                .iter()
                .map(|l| (l.resource.clone(), l.epoch))
                .collect(),
            acquire: Vec::new(),
        };
    }
    let mut free: Vec<&str> = leases
        .iter()
        .filter(|l| !l.held())
        .map(|l| l.resource.as_str())
        .collect();
    free.sort();
    // Start at a different place per node, so that nodes joining together do not all
    // race for the same resources first.
    if !free.is_empty() {
        let start = position * free.len() / live.len();
        free.rotate_left(start);
    }
    Plan {
        release: Vec::new(),
        acquire: free
            .into_iter()
            .take(target - mine.len())
            .map(str::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lease(resource: &str, owner: Option<&str>, epoch: i64, expires_in: f64) -> LeaseRow {
        LeaseRow {
            resource: resource.into(),
            owner: owner.map(str::to_string),
            epoch,
            expires_in_secs: expires_in,
        }
    }

    #[test]
    fn quotas_add_up_and_differ_by_at_most_one() {
        for r in 0..30 {
            for n in 1..7 {
                let q: Vec<usize> = (0..n).map(|i| quota(r, n, i)).collect();
                assert_eq!(q.iter().sum::<usize>(), r, "r={r} n={n}");
                assert!(q.iter().max().unwrap() - q.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(quota(5, 0, 0), 0);
    }

    #[test]
    fn an_overloaded_node_releases_its_last_leases_by_name() {
        let live = vec!["a".to_string(), "b".to_string()];
        let leases: Vec<LeaseRow> = (0..4)
            .map(|i| lease(&format!("r{i}"), Some("a"), 7, 5.0))
            .collect();
        let p = plan("a", &live, &leases);
        assert_eq!(p.release, vec![("r2".into(), 7), ("r3".into(), 7)]);
        assert!(p.acquire.is_empty());
        // b waits for them: nothing is free yet.
        assert_eq!(plan("b", &live, &leases), Plan::default());
    }

    #[test]
    fn expired_and_released_leases_are_free_held_ones_are_not() {
        let live = vec!["b".to_string()];
        let leases = vec![
            lease("r0", Some("a"), 3, -0.1),
            lease("r1", None, 4, -10.0),
            lease("r2", Some("a"), 2, 1.0),
        ];
        let p = plan("b", &live, &leases);
        assert_eq!(p.acquire, vec!["r0".to_string(), "r1".to_string()]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_node_counts_itself_live() {
        let nodes = vec![NodeRow {
            node_id: "z".into(),
            advertise_url: String::new(),
            heartbeat_age_secs: 100.0,
            up_secs: 100.0,
            lease_secs: 10.0,
            live: false,
        }];
        assert_eq!(live_nodes(&nodes, "m"), vec!["m".to_string()]);
    }

    /// The model the database stands for: one owner per resource, epochs that only
    /// grow, grants of free resources only.
    #[derive(Debug, Clone)]
    struct Model {
        leases: Vec<LeaseRow>,
    }

    impl Model {
        fn apply(&mut self, me: &str, p: &Plan) {
            for (resource, epoch) in &p.release {
                let l = self
                    .leases
                    .iter_mut()
                    .find(|l| &l.resource == resource)
                    .unwrap();
                assert_eq!(l.owner.as_deref(), Some(me), "releases only its own");
                assert_eq!(l.epoch, *epoch);
                l.owner = None;
                l.expires_in_secs = 0.0;
            }
            for resource in &p.acquire {
                let l = self
                    .leases
                    .iter_mut()
                    .find(|l| &l.resource == resource)
                    .unwrap();
                if !l.held() {
                    l.owner = Some(me.to_string());
                    l.epoch += 1;
                    l.expires_in_secs = 10.0;
                }
            }
        }
        fn count(&self, node: &str) -> usize {
            self.leases
                .iter()
                .filter(|l| l.held() && l.owner.as_deref() == Some(node))
                .count()
        }
    }

    proptest! {
        /// Any starting ownership (including leases of nodes that are gone), any order
        /// of heartbeats: within a few rounds every resource is held by a live node and
        /// the counts differ by at most one; epochs never go down.
        #[test]
        fn rounds_converge_to_an_even_spread(
            resources in 0usize..40,
            nodes in 1usize..6,
            initial in proptest::collection::vec(0usize..8, 40),
            order in proptest::collection::vec(0usize..6, 60),
        ) {
            let live: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
            let mut model = Model {
                leases: (0..resources)
                    .map(|i| {
                        // Owners 0..nodes are live; others are dead nodes, expired.
                        let o = initial[i];
                        if o < nodes {
                            lease(&format!("r{i:02}"), Some(&format!("n{o}")), 1, 5.0)
                        } else if o < 7 {
                            lease(&format!("r{i:02}"), Some("dead"), 1, -1.0)
                        } else {
                            lease(&format!("r{i:02}"), None, 0, -1.0)
                        }
                    })
                    .collect(),
            };
            // Arbitrary interleaving first, then orderly rounds until stable.
            for &o in &order {
                let me = &live[o % nodes];
                let before: Vec<i64> = model.leases.iter().map(|l| l.epoch).collect();
                let p = plan(me, &live, &model.leases);
                model.apply(me, &p);
                for (l, b) in model.leases.iter().zip(before) {
                    prop_assert!(l.epoch >= b);
                }
            }
            for _ in 0..4 {
                for me in &live {
                    let p = plan(me, &live, &model.leases);
                    model.apply(me, &p);
                }
            }
            let counts: Vec<usize> = live.iter().map(|n| model.count(n)).collect();
            prop_assert_eq!(counts.iter().sum::<usize>(), resources, "{:?}", counts);
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            for me in &live {
                prop_assert_eq!(plan(me, &live, &model.leases), Plan::default());
            }
        }
    }
}
