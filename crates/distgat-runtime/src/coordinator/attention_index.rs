//! `FetchAttention` served from a per-layer index instead of a scan of the whole layer.
//!
//! A finished job's attention files are `layer{L}_att_edge_index.npy` (int64 `[2, E]`,
//! row 0 the sources, row 1 the targets, PyG's edge order) and `layer{L}_alpha.npy`
//! (float32 `[E, H]`). The first request for a layer builds `layer{L}_att_index.npy`, an
//! int64 vector of `N + 1 + E` values: a CSR by target, `row_ptr` (`N + 1`) then the edge
//! ids of each target in increasing order (a stable counting sort by target), written
//! atomically next to the files it indexes (so deleting the job deletes it). Every request
//! then reads, per asked node, two `row_ptr` entries, its edge ids, and per edge one
//! source id and one alpha row, with positioned reads: O(in-degree) bytes, not O(E).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use distgat_graph::{read_graph, write_npy, GraphFormat, NpyBody, NpyDtype};

use crate::error::{Result, RuntimeError};

/// One incoming attention edge of an asked node.
pub(super) struct Incoming {
    /// Position in PyG's edge order (the row of `layer{L}_alpha.npy`).
    pub edge: u64,
    pub source: u64,
    /// `[H]` coefficients.
    pub alpha: Vec<f32>,
}

/// An npy file opened for positioned reads of a C-order array.
struct Positioned {
    path: PathBuf,
    file: File,
    header_len: u64,
    shape: Vec<u64>,
}

impl Positioned {
    fn open(path: &Path, dtype: NpyDtype, dims: usize) -> Result<Self> {
        let body = NpyBody::open(path)?;
        if body.dtype != dtype || body.shape.len() != dims || body.fortran_order {
            return Err(internal(
                path,
                format!(
                    "is {} {:?}{}, expected a C-order {dims}-D {}",
                    body.dtype.name(),
                    body.shape,
                    if body.fortran_order {
                        " (Fortran order)"
                    } else {
                        ""
                    },
                    dtype.name()
                ),
            ));
        }
        let (header_len, shape) = (body.header_len, body.shape.clone());
        Ok(Positioned {
            path: path.to_path_buf(),
            file: body.into_file(),
            header_len,
            shape,
        })
    }

    /// `count` values of 8 bytes from element `first`.
    fn i64s(&self, first: u64, count: usize) -> Result<Vec<i64>> {
        let mut bytes = vec![0u8; count * 8];
        self.file
            .read_exact_at(&mut bytes, self.header_len + first * 8)
            .map_err(|e| io_at(&self.path, e))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }

    fn f32s(&self, first: u64, count: usize) -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; count * 4];
        self.file
            .read_exact_at(&mut bytes, self.header_len + first * 4)
            .map_err(|e| io_at(&self.path, e))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    }
}

fn io_at(path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

fn internal(path: &Path, detail: String) -> RuntimeError {
    RuntimeError::Io(std::io::Error::other(format!(
        "{}: {detail}",
        path.display()
    )))
}

/// The index file of `layer` in `dir`, built first if missing.
pub(super) fn index_path(dir: &Path, layer: u32, num_nodes: u64) -> Result<PathBuf> {
    let path = dir.join(format!("layer{layer}_att_index.npy"));
    if path.exists() {
        return Ok(path);
    }
    let edges = read_graph(
        &dir.join(format!("layer{layer}_att_edge_index.npy")),
        Some(GraphFormat::Npy),
    )?;
    let n = usize::try_from(num_nodes).map_err(|_| internal(&path, "too many nodes".into()))?;
    let mut index = vec![0i64; n + 1 + edges.len()];
    let (row_ptr, order) = index.split_at_mut(n + 1);
    for &d in edges.dst() {
        let d = usize::try_from(d)
            .ok()
            .filter(|&d| d < n)
            .ok_or_else(|| internal(&path, format!("target {d} beyond the job's {n} nodes")))?;
        row_ptr[d + 1] += 1;
    }
    for i in 0..n {
        row_ptr[i + 1] += row_ptr[i];
    }
    let mut cursor: Vec<i64> = row_ptr[..n].to_vec();
    for (e, &d) in edges.dst().iter().enumerate() {
        let slot = &mut cursor[d as usize];
        order[*slot as usize] = e as i64;
        *slot += 1;
    }
    write_npy(&path, &[index.len() as u64], &index)?;
    Ok(path)
}

/// The incoming attention edges of each of `nodes` (ids below `num_nodes`), in PyG's
/// edge order, from the layer's index (built on first use).
pub(super) fn incoming(
    dir: &Path,
    layer: u32,
    num_nodes: u64,
    nodes: &[u64],
) -> Result<(usize, Vec<Vec<Incoming>>)> {
    let index = Positioned::open(&index_path(dir, layer, num_nodes)?, NpyDtype::I64, 1)?;
    let edge_index = Positioned::open(
        &dir.join(format!("layer{layer}_att_edge_index.npy")),
        NpyDtype::I64,
        2,
    )?;
    let alpha = Positioned::open(
        &dir.join(format!("layer{layer}_alpha.npy")),
        NpyDtype::F32,
        2,
    )?;
    let edges = edge_index.shape[1];
    let heads = alpha.shape[1] as usize;
    if edge_index.shape[0] != 2
        || alpha.shape[0] != edges
        || index.shape[0] != num_nodes + 1 + edges
    {
        return Err(internal(
            &index.path,
            format!(
                "does not fit: index {:?}, edge index {:?}, alpha {:?}, {num_nodes} nodes",
                index.shape, edge_index.shape, alpha.shape
            ),
        ));
    }
    let lists = nodes
        .iter()
        .map(|&v| {
            let ends = index.i64s(v, 2)?;
            let (lo, hi) = (ends[0] as u64, ends[1] as u64);
            let ids = index.i64s(num_nodes + 1 + lo, (hi - lo) as usize)?;
            ids.into_iter()
                .map(|e| {
                    let e = e as u64;
                    Ok(Incoming {
                        edge: e,
                        source: edge_index.i64s(e, 1)?[0] as u64,
                        alpha: alpha.f32s(e * heads as u64, heads)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((heads, lists))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a scan of the whole layer (what FetchAttention did before): the same edges
    /// in the same order, sources and rows, for every node, including one without edges.
    #[test]
    fn index_lookups_equal_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (n, heads) = (7u64, 3usize);
        // Edges in an arbitrary order with repeats, loops and node 5 without in-edges.
        let src: Vec<i64> = vec![1, 2, 0, 3, 6, 6, 4, 0, 2, 1, 3];
        let dst: Vec<i64> = vec![0, 0, 1, 6, 2, 2, 4, 3, 6, 0, 3];
        let e = src.len();
        let mut ei = src.clone();
        ei.extend(&dst);
        write_npy(
            &dir.path().join("layer1_att_edge_index.npy"),
            &[2, e as u64],
            &ei,
        )
        .unwrap();
        let alpha: Vec<f32> = (0..e * heads).map(|i| i as f32 * 0.5).collect();
        write_npy(
            &dir.path().join("layer1_alpha.npy"),
            &[e as u64, heads as u64],
            &alpha,
        )
        .unwrap();
        let nodes: Vec<u64> = (0..n).rev().collect();
        for round in 0..2 {
            // Round 0 builds the index, round 1 reads the one on disk.
            let (h, lists) = incoming(dir.path(), 1, n, &nodes).unwrap();
            assert_eq!(h, heads);
            for (&v, list) in nodes.iter().zip(&lists) {
                let want: Vec<usize> = (0..e).filter(|&k| dst[k] as u64 == v).collect();
                let got: Vec<usize> = list.iter().map(|i| i.edge as usize).collect();
                assert_eq!(got, want, "node {v}, round {round}");
                for i in list {
                    let k = i.edge as usize;
                    assert_eq!(i.source, src[k] as u64);
                    assert_eq!(i.alpha, alpha[k * heads..(k + 1) * heads]);
                }
            }
            assert!(dir.path().join("layer1_att_index.npy").exists());
        }
    }
}
