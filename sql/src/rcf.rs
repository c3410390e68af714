//! `RANDOM_CUT_FOREST` and `RANDOM_CUT_FOREST_WITH_EXPLANATION`: a streaming anomaly
//! score per row, from a forest of robust random cut trees.
//!
//! Follows the Amazon Kinesis Data Analytics SQL Reference (pages `RANDOM_CUT_FOREST`
//! and `RANDOM_CUT_FOREST_WITH_EXPLANATION`: the parameters, their defaults and limits,
//! the output columns and the `ANOMALY_EXPLANATION` JSON) and the algorithm of Guha,
//! Mishra, Roy and Schrijvers, "Robust Random Cut Forest Based Anomaly Detection On
//! Streams" (ICML 2016):
//!
//! * each tree holds a time-decayed reservoir sample of `subSampleSize` points;
//! * a point is inserted into a tree by drawing a cut dimension with probability
//!   proportional to the span of the bounding box (including the point) in that
//!   dimension and a cut position uniformly inside it, descending while the cut falls
//!   inside the box of the current subtree (the paper's `InsertPoint`);
//! * the score of a point in one tree is its collusive displacement (CoDisp): the
//!   largest, over the point's ancestors, of `|sibling subtree| / |subtree holding the
//!   point|`; the forest's `ANOMALY_SCORE` is the mean over the trees.
//!
//! The score of a row is computed against the forest *before* the row is learnt: the
//! shingled point is inserted into every tree, scored there, and then kept or removed
//! again by that tree's sampler.
//!
//! Warm-up (the reference's "initial learning phase", in which it reports scores of
//! zero): rows before the first full shingle (`shingleSize - 1` rows) score 0 and are
//! not learnt; after that, the first `max(1, subSampleSize / 4)` shingled points are
//! learnt but score 0 (64 points with the default sample size, the same fraction as the
//! `outputAfter` default of AWS's RCF library). Every later point gets a real score.
//!
//! Reservoir sampling with time decay: point number `t` (counting shingled points) gets
//! the weight `-t / timeDecay + ln(-ln(u))`, `u` uniform in (0, 1), and each tree keeps
//! the `subSampleSize` points of smallest weight (the scheme of AWS's RCF samplers, with
//! a decay rate of `1 / timeDecay`): recent points are favoured, and a point about
//! `timeDecay` points old is about `e` times less likely to be kept than a new one.
//!
//! Pure: no I/O, no clock, no threads. All randomness comes from a xoshiro256** generator
//! seeded by the caller and stored in the state, so a seed and an input give the same
//! scores every time, and a checkpoint (serde) continues exactly where it stopped. No
//! input panics: rows with a non-finite value or with a number of numeric columns other
//! than the first row's, or with more than [`MAX_DIMENSIONS`] coordinates once shingled,
//! are skipped (score 0, not learnt), and a deserialized state is checked before use.

use crate::{Column, SqlType, Value};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;

/// The reference's default `numberOfTrees`.
pub const DEFAULT_NUMBER_OF_TREES: u32 = 100;
/// The reference's default `subSampleSize`.
pub const DEFAULT_SUB_SAMPLE_SIZE: u32 = 256;
/// The reference's default `timeDecay`.
pub const DEFAULT_TIME_DECAY: u64 = 100_000;
/// The reference's default `shingleSize`.
pub const DEFAULT_SHINGLE_SIZE: u32 = 1;

/// The function's parameters, named as in the SQL reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcfParams {
    /// `numberOfTrees`: 1 to 1000.
    pub number_of_trees: u32,
    /// `subSampleSize`: points per tree, 10 to 1000, and below `timeDecay`.
    pub sub_sample_size: u32,
    /// `timeDecay`: how many recent points matter (decay rate `1 / timeDecay`), 1 to
    /// 2147483647 (a SQL INTEGER).
    pub time_decay: u64,
    /// `shingleSize`: how many consecutive rows form one point, 1 to 30.
    pub shingle_size: u32,
}

impl Default for RcfParams {
    fn default() -> Self {
        RcfParams {
            number_of_trees: DEFAULT_NUMBER_OF_TREES,
            sub_sample_size: DEFAULT_SUB_SAMPLE_SIZE,
            time_decay: DEFAULT_TIME_DECAY,
            shingle_size: DEFAULT_SHINGLE_SIZE,
        }
    }
}

impl RcfParams {
    /// Checks the limits of the SQL reference; the message names the parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.number_of_trees) {
            return Err(format!(
                "numberOfTrees must be between 1 and 1000, got {}",
                self.number_of_trees
            ));
        }
        if !(10..=1000).contains(&self.sub_sample_size) {
            return Err(format!(
                "subSampleSize must be between 10 and 1000, got {}",
                self.sub_sample_size
            ));
        }
        if !(1..=i32::MAX as u64).contains(&self.time_decay) {
            return Err(format!(
                "timeDecay must be between 1 and 2147483647, got {}",
                self.time_decay
            ));
        }
        if u64::from(self.sub_sample_size) >= self.time_decay {
            return Err(format!(
                "subSampleSize ({}) must be less than timeDecay ({})",
                self.sub_sample_size, self.time_decay
            ));
        }
        if !(1..=30).contains(&self.shingle_size) {
            return Err(format!(
                "shingleSize must be between 1 and 30, got {}",
                self.shingle_size
            ));
        }
        Ok(())
    }

    /// Shingled points learnt before scores are reported.
    fn output_after(&self) -> u64 {
        u64::from(self.sub_sample_size / 4).max(1)
    }
}

/// Which way a column pulls a row away from the recent data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    High,
    Low,
}

impl Direction {
    /// As the reference writes it in `ANOMALY_EXPLANATION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::High => "HIGH",
            Direction::Low => "LOW",
        }
    }
}

/// One numeric column's share of a row's anomaly score.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Attribution {
    /// The part of the score due to the value being above the recent data.
    pub high: f64,
    /// The part of the score due to the value being below the recent data.
    pub low: f64,
    /// `STRENGTH`: how far the value is from the mean of the trees' samples, in units
    /// of the samples' range in that column (averaged over the trees); 0 inside a
    /// constant column.
    pub strength: f64,
}

impl Attribution {
    /// `ATTRIBUTION_SCORE`: the column's share; the shares of a row sum to its score.
    pub fn score(&self) -> f64 {
        self.high + self.low
    }

    /// `DIRECTION`: the larger of the two parts.
    pub fn direction(&self) -> Direction {
        if self.high >= self.low {
            Direction::High
        } else {
            Direction::Low
        }
    }
}

/// The `ANOMALY_EXPLANATION` column: a JSON object with one member per numeric column
/// (in column order), each with `ATTRIBUTION_SCORE`, and with `withDirectionality` also
/// `DIRECTION` and `STRENGTH`; numbers are strings with four decimals, as in the
/// reference's example output. `columns` and `attributions` pair up; extra entries of
/// either are ignored.
pub fn explanation_json(
    columns: &[&str],
    attributions: &[Attribution],
    with_directionality: bool,
) -> String {
    let mut out = String::from("{");
    for (i, (name, a)) in columns.iter().zip(attributions).enumerate() {
        if i > 0 {
            out.push(',');
        }
        // serde_json escapes the column name; a &str always serializes.
        out.push_str(&serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into()));
        out.push_str(":{");
        if with_directionality {
            let _ = write!(
                out,
                "\"DIRECTION\":\"{}\",\"STRENGTH\":\"{:.4}\",",
                a.direction().as_str(),
                a.strength
            );
        }
        let _ = write!(out, "\"ATTRIBUTION_SCORE\":\"{:.4}\"}}", a.score());
    }
    out.push('}');
    out
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64: small, fast, and its
/// whole state serializes with the forest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1): never 0, so `ln(-ln(u))` is finite.
    fn open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }
}

/// "No node": the parent of the root, the root of an empty tree.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    /// A slot on the free list.
    Free,
    /// The point is the slot's box (minima = maxima).
    Leaf {
        /// Copies of the point in the tree's sample (duplicates share a leaf).
        count: u32,
        parent: u32,
    },
    Branch {
        /// Points with `point[dim] <= cut` are in `left`.
        dim: u32,
        cut: f64,
        left: u32,
        right: u32,
        parent: u32,
        /// Points below (with multiplicity): the mass that CoDisp compares.
        count: u32,
    },
}

/// One entry of a tree's reservoir: the point's weight and its leaf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    weight: f64,
    leaf: u32,
}

/// A robust random cut tree over its own reservoir sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    /// Arena of nodes; indices are stable while a node lives, freed slots are reused.
    nodes: Vec<Node>,
    /// The box of each slot, `2 * dim` values from `2 * dim * slot`: the minima, then
    /// the maxima (of the points below a branch; a leaf's point twice). Apart from the
    /// nodes so that a node and its box are fetched from memory at the same time.
    bounds: Vec<f64>,
    free: Vec<u32>,
    root: u32,
    /// Sum of the sampled points (with multiplicity), for the explanation's STRENGTH.
    sum: Vec<f64>,
    /// Max-heap on weight: the entry evicted next is at index 0.
    sample: Vec<Sample>,
}

/// What scoring a point in one tree found: CoDisp and the subtree it was measured
/// against (for the attribution).
struct Displacement {
    codisp: f64,
    sibling: u32,
}

/// Where a point goes in a tree, drawn once for both scoring and learning.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// The tree is empty: the point becomes the root.
    Root,
    /// An equal point is sampled already: one more copy on its leaf.
    Duplicate { leaf: u32 },
    /// A new branch cutting `dim` at `cut` above `node`, the point on one side.
    Split {
        node: u32,
        dim: usize,
        cut: f64,
        p_left: bool,
    },
}

impl Tree {
    fn new(dim: usize) -> Tree {
        Tree {
            nodes: Vec::new(),
            bounds: Vec::new(),
            free: Vec::new(),
            root: NONE,
            sum: vec![0.0; dim],
            sample: Vec::new(),
        }
    }

    /// A slot for `node` with the box `[min, max]`.
    fn alloc(&mut self, node: Node, min: &[f64], max: &[f64]) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.bounds
                    .resize(self.bounds.len() + min.len() + max.len(), 0.0);
                (self.nodes.len() - 1) as u32
            }
        };
        let (lo, hi) = self.bbox_mut(i);
        lo.copy_from_slice(min);
        hi.copy_from_slice(max);
        i
    }

    fn release(&mut self, i: u32) {
        self.nodes[i as usize] = Node::Free;
        self.free.push(i);
    }

    fn count(&self, i: u32) -> u32 {
        match &self.nodes[i as usize] {
            Node::Leaf { count, .. } | Node::Branch { count, .. } => *count,
            Node::Free => 0,
        }
    }

    fn parent(&self, i: u32) -> u32 {
        match &self.nodes[i as usize] {
            Node::Leaf { parent, .. } | Node::Branch { parent, .. } => *parent,
            Node::Free => NONE,
        }
    }

    fn set_parent(&mut self, i: u32, p: u32) {
        match &mut self.nodes[i as usize] {
            Node::Leaf { parent, .. } | Node::Branch { parent, .. } => *parent = p,
            Node::Free => {}
        }
    }

    fn bbox(&self, i: u32) -> (&[f64], &[f64]) {
        let d = self.sum.len();
        let at = 2 * d * i as usize;
        self.bounds[at..at + 2 * d].split_at(d)
    }

    fn bbox_mut(&mut self, i: u32) -> (&mut [f64], &mut [f64]) {
        let d = self.sum.len();
        let at = 2 * d * i as usize;
        self.bounds[at..at + 2 * d].split_at_mut(d)
    }

    fn points(&self) -> u32 {
        if self.root == NONE {
            0
        } else {
            self.count(self.root)
        }
    }

    /// Points the child slot of `parent` that holds `old` at `new` (or the root).
    fn replace_child(&mut self, parent: u32, old: u32, new: u32) {
        if parent == NONE {
            self.root = new;
            return;
        }
        if let Node::Branch { left, right, .. } = &mut self.nodes[parent as usize] {
            if *left == old {
                *left = new;
            } else if *right == old {
                *right = new;
            }
        }
    }

    /// Where `p` would go (the paper's `InsertPoint`, without changing the tree): the
    /// random cuts are drawn here, so scoring and learning see the same insertion.
    fn plan(&self, p: &[f64], rng: &mut Rng) -> Plan {
        if self.root == NONE {
            return Plan::Root;
        }
        let mut node = self.root;
        let mut attempts = 0u32;
        loop {
            let (min, max) = self.bbox(node);
            let (dim, cut) = random_cut(p, min, max, rng);
            let (lo, hi) = (min[dim], max[dim]);
            if p[dim] <= cut && cut < lo {
                return Plan::Split {
                    node,
                    dim,
                    cut,
                    p_left: true,
                };
            }
            if p[dim] > cut && cut >= hi {
                return Plan::Split {
                    node,
                    dim,
                    cut,
                    p_left: false,
                };
            }
            match &self.nodes[node as usize] {
                Node::Branch {
                    dim: d,
                    cut: c,
                    left,
                    right,
                    ..
                } => {
                    node = if p[*d as usize] <= *c { *left } else { *right };
                }
                Node::Leaf { .. } => {
                    let point = min;
                    // A cut never separates a point from a box holding it, so an equal
                    // point is found on the way down.
                    if point == p {
                        return Plan::Duplicate { leaf: node };
                    }
                    // Otherwise only a cut exactly on a boundary gets here (measure
                    // zero): draw again, and after a few tries cut at the point itself.
                    attempts += 1;
                    if attempts >= 8 {
                        let d = (0..p.len()).find(|&d| p[d] != point[d]).unwrap_or(0);
                        let (cut, p_left) = if p[d] < point[d] {
                            (p[d], true)
                        } else {
                            (point[d], false)
                        };
                        return Plan::Split {
                            node,
                            dim: d,
                            cut,
                            p_left,
                        };
                    }
                }
                Node::Free => return Plan::Root,
            }
        }
    }

    /// CoDisp of `p` as if inserted by `plan`: the largest, over the new leaf's
    /// ancestors, of the sibling's mass over the mass of the subtree holding `p`.
    fn codisp(&self, plan: &Plan) -> Displacement {
        let mut best = Displacement {
            codisp: 0.0,
            sibling: NONE,
        };
        let mut node = match *plan {
            Plan::Root => return best,
            Plan::Duplicate { leaf } => leaf,
            Plan::Split { node, .. } => {
                best = Displacement {
                    codisp: f64::from(self.count(node)),
                    sibling: node,
                };
                node
            }
        };
        // The sibling's mass is the parent's less ours: no visit to the sibling.
        let mut mass = self.count(node);
        loop {
            let parent = self.parent(node);
            if parent == NONE {
                break;
            }
            let (sibling, parent_mass) = match &self.nodes[parent as usize] {
                Node::Branch {
                    left, right, count, ..
                } => (if *left == node { *right } else { *left }, *count),
                _ => break,
            };
            let ratio = f64::from(parent_mass.saturating_sub(mass)) / (f64::from(mass) + 1.0);
            if ratio > best.codisp {
                best = Displacement {
                    codisp: ratio,
                    sibling,
                };
            }
            node = parent;
            mass = parent_mass;
        }
        best
    }

    /// Inserts one copy of `p` as planned and returns its leaf.
    fn insert(&mut self, p: &[f64], plan: Plan) -> u32 {
        for (s, x) in self.sum.iter_mut().zip(p) {
            *s += x;
        }
        let (node, dim, cut, p_left) = match plan {
            Plan::Root => {
                let leaf = self.alloc(
                    Node::Leaf {
                        count: 1,
                        parent: NONE,
                    },
                    p,
                    p,
                );
                self.root = leaf;
                return leaf;
            }
            Plan::Duplicate { leaf } => {
                // One more copy on the same leaf; boxes unchanged.
                let mut i = leaf;
                while i != NONE {
                    match &mut self.nodes[i as usize] {
                        Node::Leaf { count, parent, .. } | Node::Branch { count, parent, .. } => {
                            *count += 1;
                            i = *parent;
                        }
                        Node::Free => break,
                    }
                }
                return leaf;
            }
            Plan::Split {
                node,
                dim,
                cut,
                p_left,
            } => (node, dim, cut, p_left),
        };
        let parent = self.parent(node);
        let n = p.len();
        let mut bounds = Vec::with_capacity(2 * n);
        {
            let (a, b) = self.bbox(node);
            bounds.extend_from_slice(a);
            bounds.extend_from_slice(b);
        }
        for d in 0..n {
            bounds[d] = bounds[d].min(p[d]);
            bounds[n + d] = bounds[n + d].max(p[d]);
        }
        let leaf = self.alloc(
            Node::Leaf {
                count: 1,
                parent: NONE,
            },
            p,
            p,
        );
        let (left, right) = if p_left { (leaf, node) } else { (node, leaf) };
        let (min, max) = bounds.split_at(n);
        let branch = self.alloc(
            Node::Branch {
                dim: dim as u32,
                cut,
                left,
                right,
                parent,
                count: self.count(node) + 1,
            },
            min,
            max,
        );
        self.set_parent(leaf, branch);
        self.set_parent(node, branch);
        self.replace_child(parent, node, branch);
        let mut i = parent;
        while i != NONE {
            let up = match &mut self.nodes[i as usize] {
                Node::Branch { count, parent, .. } => {
                    *count += 1;
                    *parent
                }
                _ => break,
            };
            let (min, max) = self.bbox_mut(i);
            for d in 0..n {
                min[d] = min[d].min(p[d]);
                max[d] = max[d].max(p[d]);
            }
            i = up;
        }
        leaf
    }

    /// Removes one copy of the point at `leaf` (the paper's `DeletePoint`).
    fn remove(&mut self, leaf: u32) {
        let (parent, remaining) = match &mut self.nodes[leaf as usize] {
            Node::Leaf { count, parent } => {
                *count -= 1;
                (*parent, *count)
            }
            _ => return,
        };
        let d = self.sum.len();
        let at = 2 * d * leaf as usize;
        for (s, x) in self.sum.iter_mut().zip(&self.bounds[at..at + d]) {
            *s -= x;
        }
        if remaining > 0 {
            let mut i = parent;
            while i != NONE {
                match &mut self.nodes[i as usize] {
                    Node::Branch { count, parent, .. } => {
                        *count -= 1;
                        i = *parent;
                    }
                    _ => break,
                }
            }
            return;
        }
        if parent == NONE {
            self.release(leaf);
            self.root = NONE;
            return;
        }
        let sibling = match &self.nodes[parent as usize] {
            Node::Branch { left, right, .. } => {
                if *left == leaf {
                    *right
                } else {
                    *left
                }
            }
            _ => return,
        };
        let grandparent = self.parent(parent);
        self.replace_child(grandparent, parent, sibling);
        self.set_parent(sibling, grandparent);
        self.release(leaf);
        self.release(parent);
        let mut i = grandparent;
        let mut boxes_settled = false;
        while i != NONE {
            let (l, r, up) = match &self.nodes[i as usize] {
                Node::Branch {
                    left,
                    right,
                    parent,
                    ..
                } => (*left, *right, *parent),
                _ => break,
            };
            if !boxes_settled {
                // A box is the union of its children's; once one is unchanged, so are
                // all above it.
                let mut changed = false;
                let (li, ri, ii) = (2 * d * l as usize, 2 * d * r as usize, 2 * d * i as usize);
                for k in 0..d {
                    let lo = self.bounds[li + k].min(self.bounds[ri + k]);
                    let hi = self.bounds[li + d + k].max(self.bounds[ri + d + k]);
                    changed |= self.bounds[ii + k] != lo || self.bounds[ii + d + k] != hi;
                    self.bounds[ii + k] = lo;
                    self.bounds[ii + d + k] = hi;
                }
                boxes_settled = !changed;
            }
            if let Node::Branch { count, .. } = &mut self.nodes[i as usize] {
                *count -= 1;
            }
            i = up;
        }
    }

    /// Splits `d.codisp` over the dimensions by how far `p` lies outside the box of
    /// the subtree it displaced, above (`high`) or below (`low`).
    fn attribute(&self, p: &[f64], d: &Displacement, high: &mut [f64], low: &mut [f64]) {
        if d.sibling == NONE || d.codisp == 0.0 {
            return;
        }
        let (min, max) = self.bbox(d.sibling);
        let mut total = 0.0;
        for k in 0..p.len() {
            total += (p[k] - max[k]).max(0.0) + (min[k] - p[k]).max(0.0);
        }
        if total > 0.0 {
            for k in 0..p.len() {
                high[k] += d.codisp * (p[k] - max[k]).max(0.0) / total;
                low[k] += d.codisp * (min[k] - p[k]).max(0.0) / total;
            }
        } else {
            let share = d.codisp / (2 * p.len()) as f64;
            for k in 0..p.len() {
                high[k] += share;
                low[k] += share;
            }
        }
    }

    // The reservoir's max-heap on weight.

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let up = (i - 1) / 2;
            if self.sample[up].weight >= self.sample[i].weight {
                break;
            }
            self.sample.swap(up, i);
            i = up;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.sample.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut top = i;
            if l < n && self.sample[l].weight > self.sample[top].weight {
                top = l;
            }
            if r < n && self.sample[r].weight > self.sample[top].weight {
                top = r;
            }
            if top == i {
                break;
            }
            self.sample.swap(i, top);
            i = top;
        }
    }

    /// Learns `p` if its weight earns it a place in the reservoir (evicting the
    /// heaviest entry of a full one).
    fn offer(&mut self, p: &[f64], plan: Plan, weight: f64, capacity: usize) {
        if self.sample.len() < capacity {
            let leaf = self.insert(p, plan);
            self.sample.push(Sample { weight, leaf });
            let last = self.sample.len() - 1;
            self.sift_up(last);
        } else if self.sample.first().is_some_and(|top| weight < top.weight) {
            let leaf = self.insert(p, plan);
            let evicted = self.sample[0].leaf;
            self.sample[0] = Sample { weight, leaf };
            self.sift_down(0);
            self.remove(evicted);
        }
    }

    /// Checks a deserialized tree: indices in range, a proper tree from the root with
    /// consistent parents, counts, boxes of the right dimension, finite values, and a
    /// reservoir whose entries are exactly the leaves' copies.
    fn check(&self, dim: usize, capacity: usize) -> Result<(), String> {
        let n = self.nodes.len();
        if n > 4 * capacity + 4
            || self.sum.len() != dim
            || self.sample.len() > capacity
            || self.bounds.len() != 2 * dim * n
        {
            return Err("tree: sizes out of bounds".into());
        }
        if self.bounds.iter().chain(&self.sum).any(|x| !x.is_finite()) {
            return Err("tree: non-finite values".into());
        }
        let mut seen = vec![false; n];
        let mut copies = vec![0u64; n];
        for s in &self.sample {
            let i = s.leaf as usize;
            if i >= n || !matches!(self.nodes[i], Node::Leaf { .. }) || !s.weight.is_finite() {
                return Err("tree: reservoir entry without a leaf".into());
            }
            copies[i] += 1;
        }
        let mut total = 0u64;
        if self.root != NONE {
            let mut stack = vec![(self.root, NONE)];
            while let Some((i, parent)) = stack.pop() {
                let iu = i as usize;
                if iu >= n || seen[iu] || self.parent(i) != parent {
                    return Err("tree: malformed links".into());
                }
                seen[iu] = true;
                match &self.nodes[iu] {
                    Node::Free => return Err("tree: link to a free slot".into()),
                    Node::Leaf { count, .. } => {
                        let (min, max) = self.bbox(i);
                        if min != max || *count == 0 || u64::from(*count) != copies[iu] {
                            return Err("tree: malformed leaf".into());
                        }
                        total += u64::from(*count);
                    }
                    Node::Branch {
                        dim: d,
                        cut,
                        left,
                        right,
                        count,
                        ..
                    } => {
                        if *d as usize >= dim
                            || !cut.is_finite()
                            || *left as usize >= n
                            || *right as usize >= n
                            || *count != self.count(*left).saturating_add(self.count(*right))
                        {
                            return Err("tree: malformed branch".into());
                        }
                        stack.push((*left, i));
                        stack.push((*right, i));
                    }
                }
            }
        }
        if total != self.sample.len() as u64 {
            return Err("tree: reservoir and leaves disagree".into());
        }
        let mut free_seen = vec![false; n];
        for &f in &self.free {
            let fu = f as usize;
            if fu >= n || free_seen[fu] || !matches!(self.nodes[fu], Node::Free) {
                return Err("tree: malformed free list".into());
            }
            free_seen[fu] = true;
        }
        if (0..n).any(|i| !seen[i] && !free_seen[i]) {
            return Err("tree: unreachable node".into());
        }
        Ok(())
    }
}

/// Draws the cut of the paper's `InsertPoint` for `p` against the box `[min, max]`:
/// the dimension with probability proportional to the span of the box grown to hold
/// `p`, the position uniform along it.
fn random_cut(p: &[f64], min: &[f64], max: &[f64], rng: &mut Rng) -> (usize, f64) {
    let mut range = 0.0;
    for d in 0..p.len() {
        range += max[d].max(p[d]) - min[d].min(p[d]);
    }
    let mut r = rng.unit() * range;
    for d in 0..p.len() {
        let lo = min[d].min(p[d]);
        let span = max[d].max(p[d]) - lo;
        if r < span || d == p.len() - 1 {
            return (d, lo + r.min(span));
        }
        r -= span;
    }
    (0, p.first().copied().unwrap_or(0.0))
}

/// The whole state of a forest, as checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ForestState {
    params: RcfParams,
    rng: Rng,
    /// Numeric columns per row, fixed by the first row learnt.
    input_dim: Option<usize>,
    /// The last `shingleSize` rows, oldest first, flattened.
    shingle: VecDeque<f64>,
    /// Shingled points seen: the sampler's clock and the warm-up counter.
    points: u64,
    trees: Vec<Tree>,
}

/// A random cut forest over a stream of rows of numeric columns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ForestState")]
pub struct RandomCutForest {
    state: ForestState,
}

impl Serialize for RandomCutForest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.state.serialize(s)
    }
}

impl TryFrom<ForestState> for RandomCutForest {
    type Error = String;

    fn try_from(state: ForestState) -> Result<Self, String> {
        state.params.validate()?;
        let shingle = state.params.shingle_size as usize;
        match state.input_dim {
            // The trees are made with the first row (which fixes the dimension).
            None => {
                if !state.shingle.is_empty() || !state.trees.is_empty() || state.points != 0 {
                    return Err("forest: points without a dimension".into());
                }
            }
            Some(dim) => {
                if state.trees.len() != state.params.number_of_trees as usize {
                    return Err("forest: wrong number of trees".into());
                }
                if dim == 0
                    || dim * shingle > MAX_DIMENSIONS
                    || state.shingle.len() > dim * shingle
                    || !state.shingle.len().is_multiple_of(dim)
                    || state.shingle.iter().any(|x| !x.is_finite())
                {
                    return Err("forest: malformed shingle".into());
                }
                let capacity = state.params.sub_sample_size as usize;
                for tree in &state.trees {
                    tree.check(dim * shingle, capacity)?;
                }
            }
        }
        Ok(RandomCutForest { state })
    }
}

/// Coordinates of a shingled point (numeric columns times `shingleSize`): a cap on
/// memory, which is about `numberOfTrees * 2 * subSampleSize * (2 * 8 * D + 64)` bytes
/// for D coordinates: 4 MB with the default trees and samples and one column, 210 MB
/// at the cap.
pub const MAX_DIMENSIONS: usize = 256;

impl RandomCutForest {
    /// A forest with the given parameters (checked against the reference's limits) and
    /// random seed.
    pub fn new(params: RcfParams, seed: u64) -> Result<Self, String> {
        params.validate()?;
        Ok(RandomCutForest {
            state: ForestState {
                params,
                rng: Rng::new(seed),
                input_dim: None,
                shingle: VecDeque::new(),
                points: 0,
                trees: Vec::new(),
            },
        })
    }

    pub fn params(&self) -> &RcfParams {
        &self.state.params
    }

    /// The `ANOMALY_SCORE` of a row of numeric column values, then learns the row.
    pub fn score_and_update(&mut self, point: &[f64]) -> f64 {
        self.process(point, false).0
    }

    /// `ANOMALY_SCORE` and one [`Attribution`] per column (summing to the score), then
    /// learns the row. During warm-up and for skipped rows the attributions are zero.
    pub fn explain_and_update(&mut self, point: &[f64]) -> (f64, Vec<Attribution>) {
        self.process(point, true)
    }

    fn process(&mut self, point: &[f64], explain: bool) -> (f64, Vec<Attribution>) {
        let zeros = || vec![Attribution::default(); point.len()];
        let too_wide = point.len() * self.state.params.shingle_size as usize > MAX_DIMENSIONS;
        if point.is_empty() || too_wide || point.iter().any(|x| !x.is_finite()) {
            return (0.0, zeros());
        }
        let st = &mut self.state;
        let dim = *st.input_dim.get_or_insert(point.len());
        if dim != point.len() {
            return (0.0, zeros());
        }
        let shingle = st.params.shingle_size as usize;
        let full = dim * shingle;
        if st.trees.is_empty() {
            st.trees = (0..st.params.number_of_trees)
                .map(|_| Tree::new(full))
                .collect();
        }
        st.shingle.extend(point.iter().copied());
        while st.shingle.len() > full {
            st.shingle.pop_front();
        }
        if st.shingle.len() < full {
            return (0.0, zeros());
        }
        let p: Vec<f64> = st.shingle.iter().copied().collect();
        st.points += 1;
        let scoring = st.points > st.params.output_after();
        let capacity = st.params.sub_sample_size as usize;
        let decay = st.params.time_decay as f64;
        let clock = st.points as f64;
        let mut total = 0.0;
        let mut high = vec![0.0; full];
        let mut low = vec![0.0; full];
        let mut strength = vec![0.0; dim];
        let newest = full - dim;
        for tree in &mut st.trees {
            if scoring && explain {
                let n = f64::from(tree.points());
                if n > 0.0 {
                    let (min, max) = tree.bbox(tree.root);
                    for (c, s) in strength.iter_mut().enumerate() {
                        let k = newest + c;
                        let range = max[k] - min[k];
                        if range > 0.0 {
                            *s += (p[k] - tree.sum[k] / n).abs() / range;
                        }
                    }
                }
            }
            let plan = tree.plan(&p, &mut st.rng);
            if scoring {
                let d = tree.codisp(&plan);
                total += d.codisp;
                if explain {
                    tree.attribute(&p, &d, &mut high, &mut low);
                }
            }
            let weight = -clock / decay + (-st.rng.open_unit().ln()).ln();
            tree.offer(&p, plan, weight, capacity);
        }
        if !scoring {
            return (0.0, zeros());
        }
        let trees = st.trees.len() as f64;
        let mut attributions = zeros();
        if explain {
            for (k, (h, l)) in high.iter().zip(&low).enumerate() {
                let a = &mut attributions[k % dim];
                a.high += h / trees;
                a.low += l / trees;
            }
            for (a, s) in attributions.iter_mut().zip(&strength) {
                a.strength = s / trees;
            }
        }
        (total / trees, attributions)
    }
}

/// The seed of the forests that SQL creates: fixed, so that an application's scores are
/// the same on every run over the same rows.
pub const SQL_SEED: u64 = 0x5EED_F0E5_7000_0001;

/// `RANDOM_CUT_FOREST(CURSOR(...) [, numberOfTrees [, subSampleSize [, timeDecay [,
/// shingleSize]]]])`: the cursor's columns and `ANOMALY_SCORE DOUBLE`.
pub struct RandomCutForestFactory;

/// `RANDOM_CUT_FOREST_WITH_EXPLANATION(CURSOR(...) [, numberOfTrees [, subSampleSize [,
/// timeDecay [, shingleSize [, withDirectionality]]]]])`: the cursor's columns,
/// `ANOMALY_SCORE DOUBLE` and `ANOMALY_EXPLANATION VARCHAR`.
pub struct RandomCutForestWithExplanationFactory;

impl crate::functions::TableFunctionFactory for RandomCutForestFactory {
    fn name(&self) -> &str {
        "RANDOM_CUT_FOREST"
    }

    fn create(
        &self,
        args: &[Value],
        input: &[Column],
    ) -> Result<(Vec<Column>, Box<dyn crate::functions::TableFunction>), String> {
        create_function(self.name(), args, input, false)
    }
}

impl crate::functions::TableFunctionFactory for RandomCutForestWithExplanationFactory {
    fn name(&self) -> &str {
        "RANDOM_CUT_FOREST_WITH_EXPLANATION"
    }

    fn create(
        &self,
        args: &[Value],
        input: &[Column],
    ) -> Result<(Vec<Column>, Box<dyn crate::functions::TableFunction>), String> {
        create_function(self.name(), args, input, true)
    }
}

fn create_function(
    name: &str,
    args: &[Value],
    input: &[Column],
    explain: bool,
) -> Result<(Vec<Column>, Box<dyn crate::functions::TableFunction>), String> {
    let max_args = if explain { 5 } else { 4 };
    if args.len() > max_args {
        return Err(format!(
            "{name} takes a cursor and at most {max_args} parameters, got {}",
            args.len()
        ));
    }
    let mut params = RcfParams::default();
    let mut with_directionality = false;
    let names = ["numberOfTrees", "subSampleSize", "timeDecay", "shingleSize"];
    for (i, arg) in args.iter().enumerate() {
        if i == 4 {
            match arg {
                Value::Boolean(b) => with_directionality = *b,
                Value::Null => {}
                _ => return Err(format!("{name}: withDirectionality must be a BOOLEAN")),
            }
            continue;
        }
        let v = match arg {
            Value::Null => continue,
            Value::Integer(v) => *v,
            _ => return Err(format!("{name}: {} must be an INTEGER", names[i])),
        };
        let out_of_range = || format!("{name}: {} out of range: {v}", names[i]);
        match i {
            0 => params.number_of_trees = u32::try_from(v).map_err(|_| out_of_range())?,
            1 => params.sub_sample_size = u32::try_from(v).map_err(|_| out_of_range())?,
            2 => params.time_decay = u64::try_from(v).map_err(|_| out_of_range())?,
            _ => params.shingle_size = u32::try_from(v).map_err(|_| out_of_range())?,
        }
    }
    params.validate().map_err(|e| format!("{name}: {e}"))?;
    let numeric: Vec<usize> = input
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c.ty,
                SqlType::Integer | SqlType::Double | SqlType::Decimal { .. }
            )
        })
        .map(|(i, _)| i)
        .collect();
    if numeric.is_empty() {
        return Err(format!("{name}: the cursor has no numeric column"));
    }
    let columns: Vec<String> = numeric.iter().map(|&i| input[i].name.clone()).collect();
    let mut output = input.to_vec();
    output.push(Column {
        name: "ANOMALY_SCORE".into(),
        ty: SqlType::Double,
    });
    let explanation = explain.then_some(with_directionality);
    if explain {
        // Room for every column's member with four-decimal numbers.
        let width: usize = columns.iter().map(|c| c.len() + 96).sum::<usize>() + 2;
        output.push(Column {
            name: "ANOMALY_EXPLANATION".into(),
            ty: SqlType::Varchar(u32::try_from(width).unwrap_or(u32::MAX)),
        });
    }
    let forest = RandomCutForest::new(params, SQL_SEED)?;
    Ok((
        output,
        Box::new(RcfFunction {
            forest,
            numeric,
            columns,
            explanation,
        }),
    ))
}

/// One pump's forest.
struct RcfFunction {
    forest: RandomCutForest,
    /// Positions of the numeric columns in the cursor's rows.
    numeric: Vec<usize>,
    /// Their names, for the explanation.
    columns: Vec<String>,
    /// `Some(withDirectionality)` for the explanation variant.
    explanation: Option<bool>,
}

impl crate::functions::TableFunction for RcfFunction {
    fn process(&mut self, _rowtime: i64, row: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        // A NULL (or a value of another type) makes the point unusable: NaN, which
        // the forest skips (score 0).
        let point: Vec<f64> = self
            .numeric
            .iter()
            .map(|&i| match row.get(i) {
                Some(Value::Integer(v)) => *v as f64,
                Some(Value::Double(v)) => *v,
                Some(Value::Decimal { mantissa, scale }) => {
                    *mantissa as f64 / 10f64.powi(i32::from(*scale))
                }
                _ => f64::NAN,
            })
            .collect();
        let mut out = row.to_vec();
        match self.explanation {
            None => {
                let score = self.forest.score_and_update(&point);
                out.push(Value::Double(score));
            }
            Some(with_directionality) => {
                let (score, attributions) = self.forest.explain_and_update(&point);
                let names: Vec<&str> = self.columns.iter().map(String::as_str).collect();
                let json = explanation_json(&names, &attributions, with_directionality);
                out.push(Value::Double(score));
                out.push(Value::Varchar(json.into()));
            }
        }
        Ok(vec![out])
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::to_value(&self.forest).unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let forest = RandomCutForest::deserialize(state).map_err(|e| e.to_string())?;
        if forest.params() != self.forest.params() {
            return Err("the checkpoint is of a forest with other parameters".into());
        }
        self.forest = forest;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_then_remove_restores_the_tree() {
        let mut rng = Rng::new(7);
        let mut tree = Tree::new(2);
        let mut leaves = Vec::new();
        for i in 0..50 {
            let p = [f64::from(i % 7), f64::from(i * 3 % 11)];
            let plan = tree.plan(&p, &mut rng);
            let leaf = tree.insert(&p, plan);
            tree.sample.push(Sample {
                weight: f64::from(i),
                leaf,
            });
            leaves.push(leaf);
        }
        tree.check(2, 64).unwrap();
        let before = tree.clone();
        let far = [100.0, -3.0];
        let plan = tree.plan(&far, &mut rng);
        assert!(tree.codisp(&plan).codisp >= 1.0);
        let leaf = tree.insert(&far, plan);
        tree.remove(leaf);
        assert_eq!(tree.root, before.root);
        assert_eq!(tree.points(), before.points());
        assert_eq!(tree.bbox(tree.root), before.bbox(before.root));
        tree.check(2, 64).unwrap();
    }

    fn check_all(forest: &RandomCutForest) {
        let st = &forest.state;
        if let Some(dim) = st.input_dim {
            for tree in &st.trees {
                tree.check(
                    dim * st.params.shingle_size as usize,
                    st.params.sub_sample_size as usize,
                )
                .unwrap();
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any rows (duplicates, NaNs, changing widths), small reservoirs that evict all
        /// the time: no panic, and the trees and reservoirs stay consistent.
        #[test]
        fn any_rows_keep_the_forest_consistent(
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        -1e3..1e3f64,
                        proptest::strategy::Just(0.0),
                        proptest::strategy::Just(1.0),
                        proptest::strategy::Just(f64::NAN),
                    ],
                    1..3,
                ),
                0..300,
            ),
            seed in proptest::prelude::any::<u64>(),
            shingle in 1u32..4,
            time_decay in 11u64..40,
        ) {
            let params = RcfParams {
                number_of_trees: 3,
                sub_sample_size: 10,
                time_decay,
                shingle_size: shingle,
            };
            let mut forest = RandomCutForest::new(params, seed).unwrap();
            for (i, row) in rows.iter().enumerate() {
                let (score, attr) = if i % 2 == 0 {
                    forest.explain_and_update(row)
                } else {
                    (forest.score_and_update(row), vec![Attribution::default(); row.len()])
                };
                proptest::prop_assert!(score.is_finite() && score >= 0.0);
                proptest::prop_assert_eq!(attr.len(), row.len());
                let sum: f64 = attr.iter().map(|a| a.score()).sum();
                if i % 2 == 0 {
                    proptest::prop_assert!((sum - score).abs() <= 1e-9 * score.max(1.0));
                }
            }
            check_all(&forest);
            let mut bytes = Vec::new();
            ciborium::into_writer(&forest, &mut bytes).unwrap();
            let restored: RandomCutForest = ciborium::from_reader(bytes.as_slice()).unwrap();
            proptest::prop_assert_eq!(restored, forest);
        }
    }

    #[test]
    fn the_rng_is_uniform_enough() {
        let mut rng = Rng::new(1);
        let mean: f64 = (0..10_000).map(|_| rng.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
