//! Synthetic inputs with fixed seeds: Erdos-Renyi and R-MAT graphs, N(0,1)-ish features and
//! a random GATConv layer, written in the formats `distgat infer` and PyG read.

use std::path::Path;

use anyhow::Context;
use distgat_graph::write_npy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Generator {
    /// uniform random sources and targets
    Er,
    /// R-MAT (a, b, c, d) = (0.57, 0.19, 0.19, 0.05): power-law degrees
    Rmat,
}

/// `[2, E]` edge index (sources then targets) of a random graph on `n` nodes.
pub fn edges(generator: Generator, n: usize, e: usize, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut src = Vec::with_capacity(2 * e);
    let mut dst = Vec::with_capacity(e);
    match generator {
        Generator::Er => {
            for _ in 0..e {
                src.push(rng.random_range(0..n) as i64);
                dst.push(rng.random_range(0..n) as i64);
            }
        }
        Generator::Rmat => {
            let scale = usize::BITS - (n.max(2) - 1).leading_zeros();
            while dst.len() < e {
                let (mut s, mut d) = (0usize, 0usize);
                for _ in 0..scale {
                    let p: f64 = rng.random();
                    let (bs, bd) = match p {
                        p if p < 0.57 => (0, 0),
                        p if p < 0.76 => (0, 1),
                        p if p < 0.95 => (1, 0),
                        _ => (1, 1),
                    };
                    s = (s << 1) | bs;
                    d = (d << 1) | bd;
                }
                if s < n && d < n {
                    src.push(s as i64);
                    dst.push(d as i64);
                }
            }
        }
    }
    src.append(&mut dst);
    src
}

/// A synthetic one-layer case.
pub struct CaseSpec {
    pub generator: Generator,
    pub nodes: usize,
    pub edges: usize,
    pub in_features: usize,
    pub heads: usize,
    pub channels: usize,
    /// 1: the GATConv layer alone; 2: a second identical-shape layer after an ELU.
    pub layers: usize,
    pub seed: u64,
}

/// Writes edge_index.npy, x.npy, layer.safetensors, layer.json (for PyG) and model.json
/// (for distgat) of a one-layer GATConv case into `dir`.
pub fn write_case(dir: &Path, spec: &CaseSpec) -> anyhow::Result<()> {
    let &CaseSpec {
        generator,
        nodes: n,
        edges: e,
        in_features: f_in,
        heads,
        channels,
        layers,
        seed,
    } = spec;
    let edge_index = edges(generator, n, e, seed);
    write_npy(&dir.join("edge_index.npy"), &[2, e as u64], &edge_index)?;
    drop(edge_index);

    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut uniform = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect()
    };
    let x = uniform(n * f_in, 1.0);
    write_npy(&dir.join("x.npy"), &[n as u64, f_in as u64], &x)?;
    drop(x);

    let hc = heads * channels;
    let mut specs = Vec::new();
    for k in 0..layers.max(1) {
        let fin = if k == 0 { f_in } else { hc };
        let glorot = (6.0 / (fin + hc) as f32).sqrt();
        let tensors = [
            ("lin.weight", vec![hc, fin], uniform(hc * fin, glorot)),
            ("att_src", vec![1, heads, channels], uniform(hc, 0.3)),
            ("att_dst", vec![1, heads, channels], uniform(hc, 0.3)),
            ("bias", vec![hc], uniform(hc, 0.1)),
        ];
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|f| f.to_le_bytes()).collect())
            .collect();
        let views = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                Ok((
                    name.to_string(),
                    TensorView::new(Dtype::F32, shape.clone(), b)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Layer 0 is also `layer.safetensors`, the single layer the PyG script runs.
        let name = if k == 0 {
            "layer.safetensors".to_string()
        } else {
            format!("layer{k}.safetensors")
        };
        safetensors::serialize_to_file(views, &None, &dir.join(&name))
            .with_context(|| format!("writing {name}"))?;
        specs.push(serde_json::json!({
            "weights": name, "heads": heads, "out_channels": channels,
            "concat": true, "negative_slope": 0.2, "add_self_loops": true,
        }));
    }
    let layer = serde_json::json!({
        "heads": heads, "out_channels": channels, "concat": true,
        "negative_slope": 0.2, "add_self_loops": true,
    });
    std::fs::write(dir.join("layer.json"), layer.to_string())?;
    let model = serde_json::json!({
        "format": "gat-model-v1", "activation": if layers > 1 { "elu" } else { "none" },
        "layers": specs,
    });
    std::fs::write(dir.join("model.json"), model.to_string())?;
    Ok(())
}
