//! The exchange seam of layers that read every node: global attention ([`crate::GlobalKind`])
//! and GPSConv's graph-mode LayerNorm run on a worker's own rows and reach the other
//! workers' rows only through a [`Collective`]. The single-process engine runs the same
//! code with [`SingleProcess`] (one part owning every node), so `distgat infer` and
//! `distgat run` with any worker count execute the same arithmetic on the same values.
//!
//! Two operations suffice:
//! * [`Collective::all_gather_rows`]: every worker's rows, placed by global id (exact
//!   attention needs every key and value row);
//! * [`Collective::all_gather_bytes`]: every worker's partial result of a reduction, which
//!   the caller merges with an **exact, order-independent** merge ([`ExactSum`], integer
//!   sums, maxima), so the merged value does not depend on how nodes were split.
//!
//! The encodings of the partials are here too ([`encode_exact_sums`] and friends: little-
//! endian words, validated when decoded: a peer's bytes are outside input).

use std::borrow::Cow;

use crate::error::{ModelError, Result};
use crate::exact_sum::{ExactSum, LIMBS};
use crate::global::{A3Max, A3Sums};
use crate::progress::Progress;

/// How a worker reaches the rows and partials of the others. Implemented by the
/// distributed runtime over gRPC and by [`SingleProcess`].
pub trait Collective {
    /// N: the nodes over all workers.
    fn num_nodes(&self) -> usize;
    /// Global ids of this worker's rows, strictly increasing, each `< N`.
    fn own_ids(&self) -> &[usize];
    /// Whether this worker owns every node (then `own_ids` is `0..N`).
    fn owns_all(&self) -> bool {
        self.own_ids().len() == self.num_nodes()
    }
    /// All N rows (`[N, width]` float32, node order), given this worker's
    /// (`[own_ids.len(), width]`). Errors: a peer failed, sent a malformed or duplicate row,
    /// or the wait timed out (the message names which).
    fn all_gather_rows<'a>(&mut self, own: &'a [f32], width: usize) -> Result<Cow<'a, [f32]>>;
    /// Every worker's `own` bytes, this worker's included, in part order. Every worker
    /// passes the same number of bytes (a multiple of 4); a peer's of another length is an
    /// error.
    fn all_gather_bytes(&mut self, own: Vec<u8>) -> Result<Vec<Vec<u8>>>;
    /// `rows` more of this worker's output rows are computed (for progress reports).
    fn rows_done(&mut self, _rows: usize) {}
}

/// One process owning all N nodes: gathers return this process's own values.
#[derive(Debug, Clone)]
pub struct SingleProcess<'p> {
    ids: Vec<usize>,
    progress: Option<&'p Progress>,
}

impl SingleProcess<'static> {
    pub fn new(num_nodes: usize) -> Self {
        SingleProcess {
            ids: (0..num_nodes).collect(),
            progress: None,
        }
    }
}

impl<'p> SingleProcess<'p> {
    /// Also counts the rows done as `progress` entries.
    pub fn with_progress(num_nodes: usize, progress: &'p Progress) -> Self {
        SingleProcess {
            ids: (0..num_nodes).collect(),
            progress: Some(progress),
        }
    }
}

impl Collective for SingleProcess<'_> {
    fn rows_done(&mut self, rows: usize) {
        if let Some(p) = self.progress {
            p.add_entries(rows as u64);
        }
    }
    fn num_nodes(&self) -> usize {
        self.ids.len()
    }
    fn own_ids(&self) -> &[usize] {
        &self.ids
    }
    fn all_gather_rows<'a>(&mut self, own: &'a [f32], _width: usize) -> Result<Cow<'a, [f32]>> {
        Ok(Cow::Borrowed(own))
    }
    fn all_gather_bytes(&mut self, own: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        Ok(vec![own])
    }
}

fn bad(what: &str, detail: String) -> ModelError {
    ModelError::Mismatch(format!("a peer's {what}: {detail}"))
}

/// `[len]` exact sums as `len · (LIMBS + 1)` little-endian i64 words (normalised limbs,
/// then the special flags).
pub fn encode_exact_sums(sums: &[ExactSum]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sums.len() * (LIMBS + 1) * 8);
    for s in sums {
        for l in s.to_limbs() {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&i64::from(s.special()).to_le_bytes());
    }
    out
}

/// The inverse of [`encode_exact_sums`]; `what` names the reduction in errors. Refuses a
/// length that is not `len` sums, and limbs outside the normalised form (every limb but
/// the last in `[0, 2^32)`, the last below `2^40` in magnitude), so merging cannot
/// overflow.
pub fn decode_exact_sums(bytes: &[u8], len: usize, what: &str) -> Result<Vec<ExactSum>> {
    let per = (LIMBS + 1) * 8;
    if bytes.len() != len * per {
        return Err(bad(
            what,
            format!("{} bytes, expected {len} sums of {per} bytes", bytes.len()),
        ));
    }
    bytes
        .chunks_exact(per)
        .map(|c| {
            let word = |i: usize| i64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
            let mut limbs = [0i64; LIMBS];
            for (i, l) in limbs.iter_mut().enumerate() {
                *l = word(i);
                let ok = if i + 1 < LIMBS {
                    (0..1 << 32).contains(l)
                } else {
                    l.unsigned_abs() < 1 << 40
                };
                if !ok {
                    return Err(bad(what, format!("limb {i} = {l} is not normalised")));
                }
            }
            let special = word(LIMBS);
            if !(0..8).contains(&special) {
                return Err(bad(what, format!("flags {special} out of range")));
            }
            Ok(ExactSum::from_limbs(limbs, special as u8))
        })
        .collect()
}

/// A3 maxima as little-endian f32: `score` then `value`.
pub fn encode_a3_max(max: &A3Max) -> Vec<u8> {
    max.score
        .iter()
        .chain(&max.value)
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// The inverse of [`encode_a3_max`] for `[scores]` and `[values]` entries. NaN is refused
/// (a maximum over finite scores is finite or `-inf`).
pub fn decode_a3_max(bytes: &[u8], scores: usize, values: usize) -> Result<A3Max> {
    if bytes.len() != 4 * (scores + values) {
        return Err(bad(
            "Nyström A3 maxima",
            format!("{} bytes, expected {}", bytes.len(), 4 * (scores + values)),
        ));
    }
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if all.iter().any(|v| v.is_nan()) {
        return Err(bad("Nyström A3 maxima", "NaN".into()));
    }
    Ok(A3Max {
        score: all[..scores].to_vec(),
        value: all[scores..].to_vec(),
    })
}

/// A3 sums as little-endian i128: `sum` then `num`.
pub fn encode_a3_sums(sums: &A3Sums) -> Vec<u8> {
    sums.sum
        .iter()
        .chain(&sums.num)
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// The inverse of [`encode_a3_sums`]. Each value must be below `2^120` in magnitude (a
/// worker's sum of at most `2^32` terms below `2^81`), so merging a bounded number of
/// workers cannot overflow `i128`.
pub fn decode_a3_sums(bytes: &[u8], sums: usize, nums: usize) -> Result<A3Sums> {
    if bytes.len() != 16 * (sums + nums) {
        return Err(bad(
            "Nyström A3 sums",
            format!("{} bytes, expected {}", bytes.len(), 16 * (sums + nums)),
        ));
    }
    let all: Vec<i128> = bytes
        .chunks_exact(16)
        .map(|c| i128::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if all.iter().any(|v| v.unsigned_abs() >= 1 << 120) {
        return Err(bad("Nyström A3 sums", "a value out of range".into()));
    }
    Ok(A3Sums {
        sum: all[..sums].to_vec(),
        num: all[sums..].to_vec(),
    })
}

/// Exact sums of `[len]` values over all workers: this worker's `own` partials merged
/// with every peer's.
pub fn all_reduce_exact_sums(
    comm: &mut dyn Collective,
    own: Vec<ExactSum>,
    what: &str,
) -> Result<Vec<ExactSum>> {
    let len = own.len();
    let all = comm.all_gather_bytes(encode_exact_sums(&own))?;
    if all.len() == 1 {
        return Ok(own);
    }
    let mut merged = vec![ExactSum::default(); len];
    for bytes in all {
        for (m, s) in merged.iter_mut().zip(decode_exact_sums(&bytes, len, what)?) {
            m.merge(&s);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_round_trip_and_bad_bytes_are_refused() {
        let mut a = ExactSum::default();
        a.add(1.5);
        a.add(-1e-30);
        let mut b = ExactSum::default();
        b.add(f64::INFINITY);
        let sums = vec![a.clone(), b.clone(), ExactSum::default()];
        let bytes = encode_exact_sums(&sums);
        let back = decode_exact_sums(&bytes, 3, "landmark sums").unwrap();
        assert_eq!(back[0].value().to_bits(), a.value().to_bits());
        assert_eq!(back[1].value(), f64::INFINITY);
        assert!(decode_exact_sums(&bytes[1..], 3, "landmark sums").is_err());
        let mut bad = bytes.clone();
        bad[7] = 0x40; // limb 0 far above 2^32
        let e = decode_exact_sums(&bad, 3, "landmark sums").unwrap_err();
        assert!(e.to_string().contains("landmark sums"), "{e}");

        let max = A3Max {
            score: vec![1.0, f32::NEG_INFINITY],
            value: vec![0.5],
        };
        assert_eq!(decode_a3_max(&encode_a3_max(&max), 2, 1).unwrap(), max);
        assert!(decode_a3_max(&f32::NAN.to_le_bytes().repeat(3), 2, 1).is_err());
        let s = A3Sums {
            sum: vec![-3, 1 << 100],
            num: vec![7],
        };
        assert_eq!(decode_a3_sums(&encode_a3_sums(&s), 2, 1).unwrap(), s);
        assert!(decode_a3_sums(&i128::MAX.to_le_bytes().repeat(3), 2, 1).is_err());
    }
}
