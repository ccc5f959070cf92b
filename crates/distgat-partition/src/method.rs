//! Partitioners: each maps every node to a part `0..parts`.

use std::path::{Path, PathBuf};

use distgat_graph::NpyBody;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{PartitionError, Result};
use crate::symmetric::SymmetricGraph;

/// What METIS minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Edges between parts.
    #[default]
    Cut,
    /// Total communication volume (rows that must be sent).
    Volume,
}

/// How to partition, with the options each method understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Method {
    Metis {
        objective: Objective,
        /// Recursive bisection instead of k-way.
        recursive: bool,
        seed: u64,
        /// Allowed max part weight / average part weight, e.g. 1.03.
        imbalance: f64,
        /// Also balance incoming edges per part (a second METIS constraint).
        balance_edges: bool,
        /// Partitions METIS computes (from different random starts), keeping the best.
        #[serde(default = "one")]
        trials: u32,
    },
    /// Uniformly random owners (a baseline).
    Random { seed: u64 },
    /// Contiguous id blocks of equal size (a baseline).
    Range,
    /// A user-supplied int32/int64 `.npy` of length N.
    File { path: PathBuf },
}

impl Method {
    pub fn metis_default() -> Self {
        Method::Metis {
            objective: Objective::Cut,
            recursive: false,
            seed: 0,
            imbalance: 1.03,
            balance_edges: false,
            trials: 1,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Metis { .. } => "metis",
            Method::Random { .. } => "random",
            Method::Range => "range",
            Method::File { .. } => "file",
        }
    }
}

/// Assigns every node of `graph` to one of `parts` parts. `in_degree` (incoming edges per
/// node) is the second METIS constraint when edges are balanced.
pub fn assign(
    method: &Method,
    graph: &SymmetricGraph,
    in_degree: &[u64],
    parts: usize,
) -> Result<Vec<u32>> {
    let n = graph.num_nodes;
    if parts < 1 || parts > n.max(1) {
        return Err(PartitionError::invalid(
            "--parts",
            format!("{parts} parts for {n} nodes: expected 1..={}", n.max(1)),
        ));
    }
    if parts > u32::MAX as usize {
        return Err(PartitionError::invalid("--parts", "too many parts"));
    }
    match method {
        Method::Range => Ok((0..n).map(|v| (v * parts / n) as u32).collect()),
        Method::Random { seed } => {
            let mut rng = StdRng::seed_from_u64(*seed);
            Ok((0..n).map(|_| rng.random_range(0..parts) as u32).collect())
        }
        Method::File { path } => read_assignment(path, n, parts),
        Method::Metis {
            objective,
            recursive,
            seed,
            imbalance,
            balance_edges,
            trials,
        } => metis(
            graph,
            in_degree,
            parts,
            MetisOptions {
                objective: *objective,
                recursive: *recursive,
                seed: *seed,
                imbalance: *imbalance,
                balance_edges: *balance_edges,
                trials: *trials,
            },
        ),
    }
}

/// Reads a user's node -> part map: int32 or int64 `[N]`, values in `0..parts`.
pub fn read_assignment(path: &Path, n: usize, parts: usize) -> Result<Vec<u32>> {
    let body = NpyBody::open(path)?;
    if body.shape.len() != 1 || body.shape[0] != n as u64 {
        return Err(PartitionError::invalid(
            path.display().to_string(),
            format!(
                "an assignment must have shape [{n}] (one part per node), found {:?}",
                body.shape
            ),
        ));
    }
    let values = body.read_i64(path)?;
    values
        .iter()
        .enumerate()
        .map(|(v, &p)| {
            if p < 0 || p as u64 >= parts as u64 {
                Err(PartitionError::invalid(
                    path.display().to_string(),
                    format!("node {v}: part {p} is outside 0..{parts} (--parts {parts})"),
                ))
            } else {
                Ok(p as u32)
            }
        })
        .collect()
}

fn one() -> u32 {
    1
}

struct MetisOptions {
    objective: Objective,
    recursive: bool,
    seed: u64,
    imbalance: f64,
    balance_edges: bool,
    trials: u32,
}

fn metis(
    graph: &SymmetricGraph,
    in_degree: &[u64],
    parts: usize,
    opts: MetisOptions,
) -> Result<Vec<u32>> {
    let MetisOptions {
        objective,
        recursive,
        seed,
        imbalance,
        balance_edges,
        trials,
    } = opts;
    let n = graph.num_nodes;
    if !(1..=100).contains(&trials) {
        return Err(PartitionError::invalid(
            "--trials",
            format!("{trials}: expected 1..=100"),
        ));
    }
    if !(imbalance.is_finite() && (1.0..=10.0).contains(&imbalance)) {
        return Err(PartitionError::invalid(
            "--imbalance",
            format!("{imbalance}: expected a ratio between 1.0 and 10.0, such as 1.03"),
        ));
    }
    if parts == 1 {
        return Ok(vec![0; n]);
    }
    let ncon = if balance_edges { 2 } else { 1 };
    let vwgt: Vec<i32> = if balance_edges {
        let mut w = Vec::with_capacity(2 * n);
        for &d in in_degree {
            // Every node weighs 1; its edge weight is its incoming edges (at least 1 so
            // no constraint is all zeros).
            w.push(1);
            w.push(i32::try_from(d.max(1)).map_err(|_| {
                PartitionError::TooLarge(format!(
                    "a node has {d} incoming edges, beyond METIS's 32-bit weights"
                ))
            })?);
        }
        w
    } else {
        Vec::new()
    };
    if n == 0 {
        return Ok(Vec::new()); // METIS divides by zero on an empty graph
    }
    let ufactor = ((imbalance - 1.0) * 1000.0).round() as i32;
    let nparts =
        i32::try_from(parts).map_err(|_| PartitionError::invalid("--parts", "too many parts"))?;
    let mut part = vec![0i32; n];
    let mut g = metis::Graph::new(ncon, nparts, &graph.xadj, &graph.adjncy)
        .map_err(|e| PartitionError::Metis(format!("{e}")))?
        // GKlib seeds glibc's rand() with srand(seed), and glibc treats srand(0) as srand(1):
        // seeds 0 and 1 gave the same partition. METIS gets seed + 1 (in 1..=i32::MAX).
        .set_option(metis::option::Seed((seed % i32::MAX as u64) as i32 + 1))
        .set_option(metis::option::UFactor(ufactor.max(1)))
        .set_option(metis::option::NCuts(trials as i32))
        .set_option(match objective {
            Objective::Cut => metis::option::ObjType::Cut,
            Objective::Volume => metis::option::ObjType::Vol,
        });
    if balance_edges {
        g = g.set_vwgt(&vwgt);
    }
    // GKlib keeps its random state in a process-wide global: concurrent calls race and
    // give irreproducible partitions, so METIS runs one call at a time.
    static METIS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = METIS_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let result = if recursive {
        g.part_recursive(&mut part)
    } else {
        g.part_kway(&mut part)
    };
    result.map_err(|e| PartitionError::Metis(format!("{e}")))?;
    Ok(part.into_iter().map(|p| p as u32).collect())
}
