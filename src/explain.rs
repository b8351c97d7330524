//! Reason codes: the exact TreeSHAP contribution of each feature to one row's margin, computed on the model's own tree ensemble.
//!
//! The trees (splits, thresholds, leaf values) are read from the ONNX graph's `TreeEnsemble`
//! node, so the explanation is of the very model that scored. ONNX does not store how many
//! training rows went through each node (the covers), which path-dependent TreeSHAP weighs paths
//! by; the model build writes them into the metadata (`fraudscore.tree_covers`). The values are
//! those of Lundberg et al.'s (2018) Algorithm 2, as LightGBM's `pred_contrib` and the `shap`
//! package compute them: contributions are in margin units (log-odds) and sum, with the bias
//! (the cover-weighted mean margin), to the row's margin.

use prost::Message;

use crate::engine::Decision;

/// Which transactions carry reason codes (`model.reasons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonsFor {
    /// Reviews and declines: what an analyst or a customer asks about.
    #[default]
    Flagged,
    All,
    None,
}

/// Which transactions get reasons, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonPolicy {
    pub reasons_for: ReasonsFor,
    pub top: usize,
}

impl Default for ReasonPolicy {
    fn default() -> Self {
        ReasonPolicy {
            reasons_for: ReasonsFor::Flagged,
            top: 5,
        }
    }
}

impl ReasonPolicy {
    pub fn wants(&self, decision: Decision) -> bool {
        match self.reasons_for {
            ReasonsFor::Flagged => decision != Decision::Approve,
            ReasonsFor::All => true,
            ReasonsFor::None => false,
        }
    }
}

/// One feature's part in a score: its model column, the value the model saw, and how much it
/// moved the margin (log-odds) from the bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub column: usize,
    pub value: f32,
    pub contribution: f32,
}

/// The `top` columns with the largest absolute contributions, largest first; columns that moved
/// nothing are left out. Ties keep column order, so the same row gives the same reasons.
pub fn top_reasons(row: &[f32], phi: &[f64], top: usize) -> Vec<Reason> {
    let mut reasons: Vec<Reason> = phi
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 0.0)
        .map(|(column, &c)| Reason {
            column,
            value: row[column],
            contribution: c as f32,
        })
        .collect();
    reasons.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
    reasons.truncate(top);
    reasons
}

/// `{"trees": [[cover of node 0, cover of node 1, ...], ...]}`, per tree and ONNX node id.
pub const META_COVERS: &str = "fraudscore.tree_covers";

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("not a readable ONNX model: {0}")]
    Decode(String),
    /// A model these reason codes cannot describe exactly; it still scores, without reasons.
    #[error("cannot explain this model: {0}")]
    Unsupported(String),
    #[error("tree ensemble: {0}")]
    Ensemble(String),
    #[error("`{META_COVERS}`: {0}")]
    Covers(String),
}

/// The parts of onnx.proto the tree ensemble lives in; prost skips every other field.
mod onnx {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Test {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

#[derive(Debug, Clone, Copy)]
enum Node {
    Split {
        feature: usize,
        test: Test,
        threshold: f32,
        /// Where a NaN goes: the true branch when set, else where the comparison sends it.
        missing_true: bool,
        yes: usize,
        no: usize,
        cover: f64,
    },
    Leaf {
        value: f64,
        cover: f64,
    },
}

impl Node {
    /// Whether `x` takes the true branch here; None at a leaf.
    fn goes_true(&self, x: &[f32]) -> Option<bool> {
        match *self {
            Node::Split {
                feature,
                test,
                threshold,
                missing_true,
                ..
            } => Some(Tree::branch(x, feature, test, threshold, missing_true)),
            Node::Leaf { .. } => None,
        }
    }

    fn cover(&self) -> f64 {
        match *self {
            Node::Split { cover, .. } | Node::Leaf { cover, .. } => cover,
        }
    }
}

/// One tree; node 0 is the root.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    leaves: Vec<LeafPath>,
    /// The leaves' paths, leaf after leaf, in one array each: an explanation reads them front to
    /// back, which the prefetcher follows. Explanations are rare, so these are out of the caches
    /// when one comes (an allocation per leaf cost a cache miss at each: 3x the time).
    paths: Paths,
}

/// The flat arrays [`LeafPath`]s index into.
#[derive(Debug, Default)]
struct Paths {
    /// The distinct features split on from the root to the leaf, in the order first met.
    features: Vec<u32>,
    /// For each, the share of the training rows that kept to the path through its splits.
    zeros: Vec<f64>,
    /// Each split on the way: its node, whether the path takes its true branch, and the slot
    /// of its feature among the leaf's features.
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    node: u32,
    to_true: bool,
    slot: u16,
}

/// A leaf as TreeSHAP sees it. The leaf's value counts, for a set S of known features, as
/// `value × Π_{k∈S} one_k × Π_{k∉S} zero_k` over the distinct features k split on along its path:
/// `one_k` is 1 when the row follows the path at every split on k, else 0, and `zero_k` is the
/// share of training rows that did (products over repeated splits). Each feature's Shapley value
/// in that game is `value × (one_j − zero_j) × ∫₀¹ Π_{k≠j} (t·one_k + (1−t)·zero_k) dt`; the
/// integrand is a polynomial of degree n − 1, which Gauss–Legendre quadrature with ⌈n/2⌉ points
/// integrates exactly. This is Algorithm 2's result without its serial recurrences.
#[derive(Debug)]
struct LeafPath {
    value: f64,
    /// Where its features and zeros are in [`Paths`], and its steps.
    slots: std::ops::Range<usize>,
    steps: std::ops::Range<usize>,
}

impl LeafPath {
    /// The leaf at the end of `way`, its path appended to `paths`.
    fn new(nodes: &[Node], way: &[(usize, bool)], value: f64, paths: &mut Paths) -> LeafPath {
        let (first_slot, first_step) = (paths.features.len(), paths.steps.len());
        for &(node, to_true) in way {
            let Node::Split {
                feature,
                yes,
                no,
                cover,
                ..
            } = nodes[node]
            else {
                continue;
            };
            let child = if to_true { yes } else { no };
            let share = nodes[child].cover() / cover;
            // `Explainer::build` refuses trees of 2³² nodes or more and models of 2¹⁶ features
            // or more; a path's distinct features are at most the model's.
            let feature = feature as u32;
            let slot = match paths.features[first_slot..]
                .iter()
                .position(|&f| f == feature)
            {
                Some(slot) => {
                    paths.zeros[first_slot + slot] *= share;
                    slot
                }
                None => {
                    paths.features.push(feature);
                    paths.zeros.push(share);
                    paths.features.len() - 1 - first_slot
                }
            };
            paths.steps.push(Step {
                node: node as u32,
                to_true,
                slot: slot as u16,
            });
        }
        LeafPath {
            value,
            slots: first_slot..paths.features.len(),
            steps: first_step..paths.steps.len(),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds the leaf's part of each of its features' contributions to `phi`, given the branch
    /// the row takes at every node of the tree.
    fn add_parts(&self, paths: &Paths, goes_true: &[bool], rules: &Quadrature, phi: &mut [f64]) {
        let n = self.len();
        if n == 0 {
            return;
        }
        if n > LANE_FEATURES {
            return self.add_parts_long(paths, goes_true, rules, phi);
        }
        // Stack buffers: the usual path, short enough for the lanes.
        let (mut ones, mut integral) = ([true; LANE_FEATURES], [0.0; LANE_FEATURES]);
        let (ones, integral) = (&mut ones[..n], &mut integral[..n]);
        self.follows(paths, goes_true, ones);
        let zeros = &paths.zeros[self.slots.clone()];
        let rule = rules.points(n.div_ceil(2));
        if n <= 4 {
            integrals_in_lanes::<2>(zeros, ones, rule, integral);
        } else if n <= 8 {
            integrals_in_lanes::<4>(zeros, ones, rule, integral);
        } else {
            integrals_in_lanes::<8>(zeros, ones, rule, integral);
        }
        self.add(paths, ones, integral, phi);
    }

    /// [`LeafPath::add_parts`] for the rare paths with more distinct features than the lanes take.
    fn add_parts_long(
        &self,
        paths: &Paths,
        goes_true: &[bool],
        rules: &Quadrature,
        phi: &mut [f64],
    ) {
        let n = self.len();
        let mut ones = vec![true; n];
        self.follows(paths, goes_true, &mut ones);
        let mut integral = vec![0.0; n];
        integrals(
            &paths.zeros[self.slots.clone()],
            &ones,
            rules.points(n.div_ceil(2)),
            &mut integral,
        );
        self.add(paths, &ones, &integral, phi);
    }

    /// Clears `ones[k]` (all set on entry) for each of the leaf's features at which the row
    /// leaves its path.
    fn follows(&self, paths: &Paths, goes_true: &[bool], ones: &mut [bool]) {
        for step in &paths.steps[self.steps.clone()] {
            ones[usize::from(step.slot)] &= goes_true[step.node as usize] == step.to_true;
        }
    }

    fn add(&self, paths: &Paths, ones: &[bool], integral: &[f64], phi: &mut [f64]) {
        let slots = self.slots.clone();
        for (((&feature, &zero), &one), &integral) in paths.features[slots.clone()]
            .iter()
            .zip(&paths.zeros[slots])
            .zip(ones)
            .zip(integral)
        {
            let one = f64::from(u8::from(one));
            phi[feature as usize] += self.value * (one - zero) * integral;
        }
    }
}

/// The most distinct features on a path that the lanes take (8 quadrature points).
const LANE_FEATURES: usize = 16;

/// `∫₀¹ Π_{k≠j} (t·one_k + (1−t)·zero_k) dt` for each j, by the quadrature `rule`, one point at
/// a time; `out` holds n zeros on entry. For the rare paths too long for the lanes.
fn integrals(zeros: &[f64], ones: &[bool], rule: &[(f64, f64)], out: &mut [f64]) {
    let n = zeros.len();
    let mut before = vec![0.0; n];
    for &(t, w) in rule {
        let factor = |k: usize| (1.0 - t) * zeros[k] + f64::from(u8::from(ones[k])) * t;
        // Π_{k≠j} as (product before j) × (product after j).
        let mut p = 1.0;
        for (j, b) in before.iter_mut().enumerate() {
            *b = p;
            p *= factor(j);
        }
        let mut after = 1.0;
        for j in (0..n).rev() {
            out[j] += w * before[j] * after;
            after *= factor(j);
        }
    }
}

/// [`integrals`] with the quadrature points side by side in `L` lanes (a rule of at most `L`
/// points, the others weighing 0), so that the products over a path run on all points at once;
/// for paths of at most [`LANE_FEATURES`] features.
fn integrals_in_lanes<const L: usize>(
    zeros: &[f64],
    ones: &[bool],
    rule: &[(f64, f64)],
    out: &mut [f64],
) {
    let n = zeros.len().min(LANE_FEATURES);
    let (mut t, mut w) = ([0.0; L], [0.0; L]);
    for (q, &(tq, wq)) in rule.iter().enumerate().take(L) {
        (t[q], w[q]) = (tq, wq);
    }
    // factor[k]: feature k's factor at each point; before[k]: the product of those before k.
    let mut factor = [[0.0; L]; LANE_FEATURES];
    let mut before = [[0.0; L]; LANE_FEATURES];
    let mut p = [1.0; L];
    for k in 0..n {
        let (z, o) = (zeros[k], f64::from(u8::from(ones[k])));
        for q in 0..L {
            factor[k][q] = (1.0 - t[q]) * z + o * t[q];
            before[k][q] = p[q];
            p[q] *= factor[k][q];
        }
    }
    let mut after = [1.0; L];
    for j in (0..n).rev() {
        let mut sum = 0.0;
        for q in 0..L {
            sum += w[q] * before[j][q] * after[q];
            after[q] *= factor[j][q];
        }
        out[j] = sum;
    }
}

/// Gauss–Legendre points and weights on [0, 1], for every point count the leaves need.
#[derive(Debug)]
struct Quadrature {
    /// `rules[q - 1]`: the q-point rule, as (t, weight).
    rules: Vec<Vec<(f64, f64)>>,
}

impl Quadrature {
    fn up_to(points: usize) -> Quadrature {
        Quadrature {
            rules: (1..=points.max(1)).map(gauss_legendre).collect(),
        }
    }

    fn points(&self, q: usize) -> &[(f64, f64)] {
        &self.rules[q - 1]
    }
}

/// The `n`-point Gauss–Legendre rule mapped to [0, 1]: the roots of the Legendre polynomial P_n
/// by Newton's method from Tricomi's estimates, weights 2 / ((1 − x²) P_n'(x)²).
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut derivative = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let k = k as f64;
                    (p0, p1) = (p1, ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k);
                }
                let (pn, pn_1) = if n == 1 { (x, 1.0) } else { (p1, p0) };
                derivative = n as f64 * (x * pn - pn_1) / (x * x - 1.0);
                let step = pn / derivative;
                x -= step;
                if step.abs() < 1e-16 {
                    break;
                }
            }
            let weight = 2.0 / ((1.0 - x * x) * derivative * derivative);
            ((1.0 + x) / 2.0, weight / 2.0)
        })
        .collect()
}

impl Tree {
    /// The tree with each leaf's path worked out.
    fn new(nodes: Vec<Node>) -> Tree {
        let (mut leaves, mut paths) = (Vec::new(), Paths::default());
        // (node, the splits on the way to it: node, took its true branch)
        let mut stack = vec![(0usize, Vec::<(usize, bool)>::new())];
        while let Some((i, way)) = stack.pop() {
            match nodes[i] {
                Node::Split { yes, no, .. } => {
                    for (child, to_true) in [(yes, true), (no, false)] {
                        let mut way = way.clone();
                        way.push((i, to_true));
                        stack.push((child, way));
                    }
                }
                Node::Leaf { value, .. } => {
                    leaves.push(LeafPath::new(&nodes, &way, value, &mut paths))
                }
            }
        }
        Tree {
            nodes,
            leaves,
            paths,
        }
    }

    /// The child `x` goes to at a split.
    fn branch(x: &[f32], feature: usize, test: Test, threshold: f32, missing_true: bool) -> bool {
        let v = x[feature];
        if v.is_nan() && missing_true {
            return true;
        }
        match test {
            Test::Leq => v <= threshold,
            Test::Lt => v < threshold,
            Test::Gte => v >= threshold,
            Test::Gt => v > threshold,
            Test::Eq => v == threshold,
            Test::Neq => v != threshold,
        }
    }

    fn leaf_value(&self, x: &[f32]) -> f64 {
        let mut i = 0;
        loop {
            match self.nodes[i] {
                Node::Leaf { value, .. } => return value,
                Node::Split { yes, no, .. } => {
                    i = if self.nodes[i].goes_true(x) == Some(true) {
                        yes
                    } else {
                        no
                    }
                }
            }
        }
    }

    /// The cover-weighted mean of the leaf values: this tree's part of the bias.
    fn expected_value(&self) -> f64 {
        let root = self.nodes[0].cover();
        self.nodes
            .iter()
            .map(|n| match *n {
                Node::Leaf { value, cover } => value * cover / root,
                Node::Split { .. } => 0.0,
            })
            .sum()
    }
}

/// The model's tree ensemble with its covers, ready to explain rows.
#[derive(Debug)]
pub struct Explainer {
    trees: Vec<Tree>,
    width: usize,
    bias: f64,
    quadrature: Quadrature,
}

impl Explainer {
    /// Reads the tree ensemble of the ONNX model in `bytes`, taking `width` features, with the
    /// covers of `covers_json` (the `fraudscore.tree_covers` metadata).
    pub fn from_onnx(
        bytes: &[u8],
        covers_json: &str,
        width: usize,
    ) -> Result<Explainer, ExplainError> {
        let model =
            onnx::ModelProto::decode(bytes).map_err(|e| ExplainError::Decode(e.to_string()))?;
        let unsupported = |m: &str| ExplainError::Unsupported(m.to_string());
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| unsupported("no graph"))?;
        let node = graph
            .node
            .iter()
            .find(|n| n.op_type == "TreeEnsembleClassifier" || n.op_type == "TreeEnsembleRegressor")
            .ok_or_else(|| {
                unsupported("no TreeEnsembleClassifier or TreeEnsembleRegressor node")
            })?;
        // Contributions are to the trees' own inputs: a step before them (scaling, imputing)
        // would make them contributions to something else than the features.
        if node.input.first() != graph.input.first().map(|i| &i.name) {
            return Err(unsupported(
                "the tree ensemble does not read the model's input directly",
            ));
        }
        #[derive(serde::Deserialize)]
        struct Covers {
            trees: Vec<Vec<f64>>,
        }
        let covers: Covers =
            serde_json::from_str(covers_json).map_err(|e| ExplainError::Covers(e.to_string()))?;
        Explainer::build(node, &covers.trees, width)
    }

    fn build(
        node: &onnx::NodeProto,
        covers: &[Vec<f64>],
        width: usize,
    ) -> Result<Explainer, ExplainError> {
        let bad = |m: String| ExplainError::Ensemble(m);
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let ints = |name: &str| attr(name).map(|a| a.ints.as_slice()).unwrap_or_default();
        let floats = |name: &str| attr(name).map(|a| a.floats.as_slice()).unwrap_or_default();
        let (weight_prefix, post) = if node.op_type == "TreeEnsembleClassifier" {
            (
                "class",
                attr("post_transform")
                    .map(|a| a.s.as_slice())
                    .unwrap_or_default(),
            )
        } else {
            (
                "target",
                attr("post_transform")
                    .map(|a| a.s.as_slice())
                    .unwrap_or_default(),
            )
        };
        // Steps keep node ids in 32 bits and feature slots in 16.
        if width > usize::from(u16::MAX) || covers.iter().any(|c| c.len() > u32::MAX as usize) {
            return Err(ExplainError::Unsupported(format!(
                "{width} features or a tree of over 2³² nodes"
            )));
        }
        // A margin is what LOGISTIC maps to a probability; the other transforms have no log-odds to split.
        if !matches!(post, b"LOGISTIC" | b"NONE" | b"") {
            return Err(ExplainError::Unsupported(format!(
                "post_transform {} is not LOGISTIC or NONE",
                String::from_utf8_lossy(post)
            )));
        }
        // Contributions add up as the trees do: by a sum, not an average or an extreme.
        if let Some(a) = attr("aggregate_function").filter(|a| a.s.as_slice() != b"SUM") {
            return Err(ExplainError::Unsupported(format!(
                "aggregate_function {} is not SUM",
                String::from_utf8_lossy(&a.s)
            )));
        }
        let tree_ids = ints("nodes_treeids");
        let node_ids = ints("nodes_nodeids");
        let features = ints("nodes_featureids");
        let thresholds = floats("nodes_values");
        let yes = ints("nodes_truenodeids");
        let no = ints("nodes_falsenodeids");
        let missing = ints("nodes_missing_value_tracks_true");
        let modes = attr("nodes_modes")
            .map(|a| a.strings.as_slice())
            .unwrap_or_default();
        let n = node_ids.len();
        if [
            tree_ids.len(),
            features.len(),
            thresholds.len(),
            yes.len(),
            no.len(),
            modes.len(),
        ]
        .iter()
        .any(|&l| l != n)
            || !(missing.is_empty() || missing.len() == n)
        {
            return Err(bad("the nodes_* attributes differ in length".into()));
        }
        if covers.len()
            != tree_ids
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        {
            return Err(ExplainError::Covers(format!(
                "{} trees of covers for an ensemble of {} trees",
                covers.len(),
                tree_ids
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            )));
        }
        let index = |v: i64, len: usize, what: &str| -> Result<usize, ExplainError> {
            usize::try_from(v)
                .ok()
                .filter(|&i| i < len)
                .ok_or_else(|| bad(format!("{what} {v} is out of range (0..{len})")))
        };
        let mut trees: Vec<Vec<Option<Node>>> =
            covers.iter().map(|c| vec![None; c.len()]).collect();
        for i in 0..n {
            let t = index(tree_ids[i], trees.len(), "tree id")?;
            let id = usize::try_from(node_ids[i])
                .ok()
                .filter(|&id| id < trees[t].len())
                .ok_or_else(|| {
                    ExplainError::Covers(format!(
                        "tree {t} has node {}, but covers for {} nodes",
                        node_ids[i],
                        trees[t].len()
                    ))
                })?;
            let cover = covers[t][id];
            let size = trees[t].len();
            let test = match modes[i].as_slice() {
                b"LEAF" => None,
                b"BRANCH_LEQ" => Some(Test::Leq),
                b"BRANCH_LT" => Some(Test::Lt),
                b"BRANCH_GTE" => Some(Test::Gte),
                b"BRANCH_GT" => Some(Test::Gt),
                b"BRANCH_EQ" => Some(Test::Eq),
                b"BRANCH_NEQ" => Some(Test::Neq),
                other => return Err(bad(format!("node mode {}", String::from_utf8_lossy(other)))),
            };
            trees[t][id] = Some(match test {
                None => Node::Leaf { value: 0.0, cover },
                Some(test) => Node::Split {
                    feature: index(features[i], width, "feature id")?,
                    test,
                    threshold: thresholds[i],
                    missing_true: missing.get(i).is_some_and(|&m| m != 0),
                    yes: index(yes[i], size, "true node id")?,
                    no: index(no[i], size, "false node id")?,
                    cover,
                },
            });
        }
        // Leaf values: the weights of the one output the margin is (class 1 of a binary
        // classifier stores its weights under one class id; take them whatever the id).
        let w_trees = ints(&format!("{weight_prefix}_treeids"));
        let w_nodes = ints(&format!("{weight_prefix}_nodeids"));
        let w_ids = ints(&format!("{weight_prefix}_ids"));
        let weights = floats(&format!("{weight_prefix}_weights"));
        if w_trees.len() != weights.len() || w_nodes.len() != weights.len() {
            return Err(bad("the leaf weight attributes differ in length".into()));
        }
        if w_ids
            .iter()
            .any(|&c| c != w_ids.first().copied().unwrap_or(0))
        {
            return Err(ExplainError::Unsupported("leaf weights for more than one output: only a single margin (binary or regression) can be explained".into()));
        }
        for ((&t, &id), &w) in w_trees.iter().zip(w_nodes).zip(weights) {
            let t = index(t, trees.len(), "leaf tree id")?;
            let id = index(id, trees[t].len(), "leaf node id")?;
            match &mut trees[t][id] {
                Some(Node::Leaf { value, .. }) => *value += f64::from(w),
                _ => {
                    return Err(bad(format!(
                        "a weight for tree {t} node {id}, which is not a leaf"
                    )))
                }
            }
        }
        let base = floats("base_values")
            .first()
            .copied()
            .map_or(0.0, f64::from);
        let mut built = Vec::with_capacity(trees.len());
        for (t, nodes) in trees.into_iter().enumerate() {
            let nodes: Vec<Node> = nodes
                .into_iter()
                .enumerate()
                .map(|(id, n)| {
                    n.ok_or_else(|| bad(format!("tree {t} has no node {id}, but covers for it")))
                })
                .collect::<Result<_, _>>()?;
            check_tree(&nodes).map_err(|e| match e {
                ExplainError::Covers(m) => ExplainError::Covers(format!("tree {t}: {m}")),
                ExplainError::Ensemble(m) => ExplainError::Ensemble(format!("tree {t}: {m}")),
                other => other,
            })?;
            built.push(Tree::new(nodes));
        }
        Ok(Explainer::of(built, base, width))
    }

    fn of(trees: Vec<Tree>, base: f64, width: usize) -> Explainer {
        let most_features = trees
            .iter()
            .flat_map(|t| &t.leaves)
            .map(LeafPath::len)
            .max()
            .unwrap_or(0);
        Explainer {
            bias: base + trees.iter().map(Tree::expected_value).sum::<f64>(),
            trees,
            width,
            quadrature: Quadrature::up_to(most_features.div_ceil(2)),
        }
    }

    /// The expected margin over the training rows: the margin with no feature known.
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// The margin of `row` (the bias plus its contributions), by walking the trees.
    pub fn margin(&self, row: &[f32]) -> f64 {
        self.bias - self.trees.iter().map(Tree::expected_value).sum::<f64>()
            + self.trees.iter().map(|t| t.leaf_value(row)).sum::<f64>()
    }

    /// Each feature's TreeSHAP contribution to the margin of `row`, into `phi` (one per column).
    pub fn contributions(&self, row: &[f32], phi: &mut Vec<f64>) {
        phi.clear();
        phi.resize(self.width, 0.0);
        if row.len() != self.width {
            return;
        }
        let mut goes_true = Vec::new();
        for tree in &self.trees {
            goes_true.clear();
            goes_true.extend(tree.nodes.iter().map(|n| n.goes_true(row) == Some(true)));
            for leaf in &tree.leaves {
                leaf.add_parts(&tree.paths, &goes_true, &self.quadrature, phi);
            }
        }
    }
}

/// Checks that every node is reached once from the root and that each split's cover is its
/// children's sum (so the covers belong to these nodes).
fn check_tree(nodes: &[Node]) -> Result<(), ExplainError> {
    let mut seen = vec![false; nodes.len()];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            return Err(ExplainError::Ensemble(format!("node {i} is reached twice")));
        }
        if let Node::Split { yes, no, cover, .. } = nodes[i] {
            let children = nodes[yes].cover() + nodes[no].cover();
            if cover.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                || (children - cover).abs() > 1e-6 * cover
            {
                return Err(ExplainError::Covers(format!(
                    "node {i} covers {cover}, its children {children}"
                )));
            }
            stack.push(yes);
            stack.push(no);
        }
    }
    match seen.iter().position(|s| !s) {
        Some(i) => Err(ExplainError::Ensemble(format!(
            "node {i} is not reached from the root"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact Shapley values of `value(subset)` by enumerating every subset of `n` features.
    fn brute_force_shapley(n: usize, value: impl Fn(u32) -> f64) -> Vec<f64> {
        let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
        (0..n)
            .map(|i| {
                (0u32..1 << n)
                    .filter(|s| s & (1 << i) == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        fact(k) * fact(n - k - 1) / fact(n) * (value(s | 1 << i) - value(s))
                    })
                    .sum()
            })
            .collect()
    }

    /// The path-dependent expectation TreeSHAP explains: features in `known` follow `x`, the
    /// others split by the covers.
    fn conditional(tree: &Tree, x: &[f32], known: u32, node: usize) -> f64 {
        match tree.nodes[node] {
            Node::Leaf { value, .. } => value,
            Node::Split {
                feature,
                yes,
                no,
                cover,
                ..
            } if known & (1 << feature) == 0 => {
                (tree.nodes[yes].cover() * conditional(tree, x, known, yes)
                    + tree.nodes[no].cover() * conditional(tree, x, known, no))
                    / cover
            }
            Node::Split { yes, no, .. } => {
                let next = if tree.nodes[node].goes_true(x) == Some(true) {
                    yes
                } else {
                    no
                };
                conditional(tree, x, known, next)
            }
        }
    }

    /// A random full tree over `width` features, with covers that add up.
    fn random_tree(rng: &mut u64, width: usize, depth: usize) -> Tree {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        fn grow(
            nodes: &mut Vec<Node>,
            next: &mut dyn FnMut() -> u64,
            width: usize,
            depth: usize,
            cover: f64,
        ) -> usize {
            let id = nodes.len();
            nodes.push(Node::Leaf { value: 0.0, cover });
            if depth == 0 || next().is_multiple_of(5) {
                nodes[id] = Node::Leaf {
                    value: (next() % 2001) as f64 / 1000.0 - 1.0,
                    cover,
                };
                return id;
            }
            let share = (1 + next() % 9) as f64 / 10.0;
            let feature = (next() % width as u64) as usize;
            let threshold = (next() % 10) as f32;
            let yes = grow(nodes, next, width, depth - 1, cover * share);
            let no = grow(nodes, next, width, depth - 1, cover * (1.0 - share));
            nodes[id] = Node::Split {
                feature,
                test: Test::Leq,
                threshold,
                missing_true: false,
                yes,
                no,
                cover,
            };
            id
        }
        let mut nodes = Vec::new();
        grow(&mut nodes, &mut next, width, depth, 1000.0);
        check_tree(&nodes).unwrap();
        Tree::new(nodes)
    }

    /// The q-point rule integrates every polynomial of degree up to 2q − 1 exactly, which is why
    /// ⌈n/2⌉ points suffice for a path of n features.
    #[test]
    fn gauss_legendre_integrates_polynomials_up_to_its_degree_exactly() {
        for q in 1..=24 {
            let rule = gauss_legendre(q);
            assert!(
                (rule.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-14,
                "q {q}"
            );
            for k in 0..2 * q as i32 {
                let integral: f64 = rule.iter().map(|&(t, w)| w * t.powi(k)).sum();
                let exact = 1.0 / f64::from(k + 1);
                assert!(
                    (integral - exact).abs() < 1e-13,
                    "q {q}, t^{k}: {integral} vs {exact}"
                );
            }
        }
    }

    /// One leaf's game, `value × Π_{k∈S} one_k × Π_{k∉S} zero_k`: the integrals, in lanes and
    /// one point at a time, give its Shapley values as enumerated over every subset.
    #[test]
    fn a_leafs_parts_are_the_shapley_values_of_its_game() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let quadrature = Quadrature::up_to(8);
        for n in 1..=14usize {
            let zeros: Vec<f64> = (0..n).map(|_| (1 + next() % 999) as f64 / 1000.0).collect();
            let ones: Vec<bool> = (0..n).map(|_| next() % 2 == 0).collect();
            let value = |s: u32| -> f64 {
                (0..n)
                    .map(|k| match (s & (1 << k) != 0, ones[k]) {
                        (true, one) => f64::from(u8::from(one)),
                        (false, _) => zeros[k],
                    })
                    .product()
            };
            let expected = brute_force_shapley(n, value);
            let rule = quadrature.points(n.div_ceil(2));
            let mut scalar = vec![0.0; n];
            integrals(&zeros, &ones, rule, &mut scalar);
            let mut wide = vec![0.0; n];
            integrals_in_lanes::<8>(&zeros, &ones, rule, &mut wide);
            for j in 0..n {
                let one = f64::from(u8::from(ones[j]));
                for got in [scalar[j], wide[j]] {
                    let got = (one - zeros[j]) * got;
                    assert!(
                        (got - expected[j]).abs() < 1e-12,
                        "n {n}, j {j}: {got} vs {}",
                        expected[j]
                    );
                }
            }
        }
    }

    /// TreeSHAP is an exact algorithm for a brute-force definition: on random trees (features
    /// split on again below themselves included) it must give the enumerated Shapley values.
    #[test]
    fn tree_shap_equals_enumerated_shapley_values() {
        let width = 5;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for case in 0..200 {
            let trees: Vec<Tree> = (0..3)
                .map(|_| random_tree(&mut rng, width, 1 + case % 6))
                .collect();
            let explainer = Explainer::of(trees, 0.0, width);
            rng ^= case as u64;
            let x: Vec<f32> = (0..width).map(|i| ((rng >> (i * 4)) % 11) as f32).collect();
            let mut phi = Vec::new();
            explainer.contributions(&x, &mut phi);
            let expected = brute_force_shapley(width, |known| {
                explainer
                    .trees
                    .iter()
                    .map(|t| conditional(t, &x, known, 0))
                    .sum()
            });
            for (got, want) in phi.iter().zip(&expected) {
                assert!(
                    (got - want).abs() < 1e-9,
                    "case {case}: {phi:?} vs {expected:?}"
                );
            }
            let total = explainer.bias() + phi.iter().sum::<f64>();
            assert!((total - explainer.margin(&x)).abs() < 1e-9, "case {case}");
        }
    }
}
