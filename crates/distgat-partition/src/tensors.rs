//! A shard's safetensors, as typed arrays: from bytes in memory, or read from the file
//! straight into the arrays they end in.
//!
//! A worker of `distgat run` used to read its whole shard into one buffer (356 MB for part
//! 0 of R-MAT 1M/10M), hash it, and copy every tensor out into its own array: each byte
//! landed in fresh memory twice. [`ShardTensors::read_file`] reads each tensor with a
//! positioned read into the array that keeps it, hashing the file's bytes in file order on
//! the way, so each byte lands in fresh memory once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

/// One tensor's values, kept as the type its dtype names (`I64` as the bits of each value,
/// so a caller can refuse negative ones).
pub(crate) enum TensorData {
    I64(Vec<u64>),
    U32(Vec<u32>),
    F32(Vec<f32>),
    /// Any other dtype (no distgat tensor has one; its `dtype` is an error where read).
    Other,
    /// Hashed but not kept ([`ShardTensors::read_file`]'s `skip`): only its shape is known.
    Skipped,
}

pub(crate) struct Tensor {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: TensorData,
}

/// The tensors of a shard by name, and its `__metadata__`.
pub(crate) struct ShardTensors {
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) tensors: HashMap<String, Tensor>,
}

/// What went wrong reading a shard file: its bytes are not what the manifest says (size or
/// BLAKE3), or its header is not one this reader takes (the caller then reads the file
/// whole, which names the precise problem).
pub(crate) enum ReadError {
    Io(std::io::Error),
    Size(u64),
    Hash(String),
    Header,
}

impl ShardTensors {
    /// Copies each tensor of a safetensors buffer out into its typed array.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, safetensors::SafeTensorError> {
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes)?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = typed(view.dtype(), view.data());
                let tensor = Tensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data,
                };
                (name, tensor)
            })
            .collect();
        Ok(ShardTensors { metadata, tensors })
    }

    /// Reads the shard file `path` of `len` bytes whose BLAKE3 must be `blake3` (hex),
    /// each tensor straight into its typed array, in file order, hashing as it goes. The
    /// tensors named in `skip` are hashed through one reused 8 MiB buffer and not kept
    /// ([`TensorData::Skipped`]): no fresh memory for an array the caller will not read.
    pub(crate) fn read_file(
        path: &Path,
        len: u64,
        blake3: &str,
        skip: &[&str],
    ) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(ReadError::Io)?;
        let meta = file.metadata().map_err(ReadError::Io)?;
        if !meta.is_file() {
            return Err(ReadError::Header);
        }
        if meta.len() != len {
            return Err(ReadError::Size(meta.len()));
        }
        let mut hasher = blake3::Hasher::new();
        let mut prefix = [0u8; 8];
        if len < 8 {
            return Err(ReadError::Header);
        }
        file.read_exact_at(&mut prefix, 0).map_err(ReadError::Io)?;
        hasher.update(&prefix);
        let n = u64::from_le_bytes(prefix);
        // safetensors' own bound on the header.
        if n > 100_000_000 || 8 + n > len {
            return Err(ReadError::Header);
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8).map_err(ReadError::Io)?;
        hasher.update(&header);
        // The safetensors crate's own header parser (so exactly its headers are taken).
        let parsed: safetensors::tensor::Metadata =
            serde_json::from_slice(&header).map_err(|_| ReadError::Header)?;
        let metadata = parsed.metadata().clone().unwrap_or_default();
        let mut infos: Vec<(String, Info)> = parsed
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let info = Info {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data_offsets: [t.data_offsets.0 as u64, t.data_offsets.1 as u64],
                };
                (name, info)
            })
            .collect();
        // The data section is exactly the tensors, back to back (as safetensors checks).
        infos.sort_by_key(|(_, i)| i.data_offsets);
        let data_start = 8 + n;
        let mut at = 0u64;
        for (_, info) in &infos {
            let [start, end] = info.data_offsets;
            let elements = info
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .ok_or(ReadError::Header)?;
            let bytes = elements.checked_mul(info.dtype.size() as u64);
            if start != at || end < start || Some(end - start) != bytes {
                return Err(ReadError::Header);
            }
            at = end;
        }
        if data_start.checked_add(at) != Some(len) {
            return Err(ReadError::Header);
        }
        let mut tensors = HashMap::with_capacity(infos.len());
        for (name, info) in infos {
            let [start, end] = info.data_offsets;
            let offset = data_start + start;
            let count = usize::try_from(end - start).map_err(|_| ReadError::Header)?;
            let (dtype, data) = match info.dtype {
                Dtype::I64 | Dtype::U32 | Dtype::F32 if skip.contains(&name.as_str()) => {
                    let mut buf = vec![0u8; count.min(8 << 20)];
                    let mut done = 0usize;
                    while done < count {
                        let take = (count - done).min(buf.len());
                        read_into(&file, offset + done as u64, &mut buf[..take], &mut hasher)?;
                        done += take;
                    }
                    (info.dtype, TensorData::Skipped)
                }
                Dtype::I64 => {
                    let mut v = vec![0u64; count / 8];
                    read_into(&file, offset, bytemuck::cast_slice_mut(&mut v), &mut hasher)?;
                    v.iter_mut().for_each(|x| *x = u64::from_le(*x));
                    (Dtype::I64, TensorData::I64(v))
                }
                Dtype::U32 => {
                    let mut v = vec![0u32; count / 4];
                    read_into(&file, offset, bytemuck::cast_slice_mut(&mut v), &mut hasher)?;
                    v.iter_mut().for_each(|x| *x = u32::from_le(*x));
                    (Dtype::U32, TensorData::U32(v))
                }
                Dtype::F32 => {
                    let mut v = vec![0f32; count / 4];
                    read_into(&file, offset, bytemuck::cast_slice_mut(&mut v), &mut hasher)?;
                    if cfg!(target_endian = "big") {
                        v.iter_mut()
                            .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
                    }
                    (Dtype::F32, TensorData::F32(v))
                }
                // Not a dtype distgat writes: the whole-file reader names it.
                _ => return Err(ReadError::Header),
            };
            let tensor = Tensor {
                dtype,
                shape: info.shape,
                data,
            };
            tensors.insert(name, tensor);
        }
        let hash = hasher.finalize().to_hex().to_string();
        if hash != blake3 {
            return Err(ReadError::Hash(hash));
        }
        Ok(ShardTensors { metadata, tensors })
    }
}

impl ShardTensors {
    /// Takes tensor `name`, which must have `dtype`; the error says what is wrong.
    fn take(&mut self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, TensorData), String> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| format!("tensor '{name}' is missing"))?;
        if t.dtype != dtype {
            return Err(format!(
                "tensor '{name}' has dtype {:?}, expected {dtype:?}",
                t.dtype
            ));
        }
        Ok((t.shape, t.data))
    }

    /// Takes int64 tensor `name` as u64 values (a negative value is an error).
    pub(crate) fn u64s(&mut self, name: &str) -> Result<Vec<u64>, String> {
        match self.take(name, Dtype::I64)?.1 {
            TensorData::I64(v) if v.iter().all(|&x| x <= i64::MAX as u64) => Ok(v),
            TensorData::I64(_) => Err(format!("tensor '{name}' holds a negative value")),
            _ => Err(format!("tensor '{name}' was not kept")),
        }
    }

    /// The element count of tensor `name`, which must have `dtype` (kept or skipped); the
    /// tensor is taken.
    pub(crate) fn count(&mut self, name: &str, dtype: Dtype) -> Result<usize, String> {
        let (shape, _) = self.take(name, dtype)?;
        Ok(shape.iter().product())
    }

    /// Takes uint32 tensor `name`.
    pub(crate) fn u32s(&mut self, name: &str) -> Result<Vec<u32>, String> {
        match self.take(name, Dtype::U32)?.1 {
            TensorData::U32(v) => Ok(v),
            _ => Err(format!("tensor '{name}' was not kept")),
        }
    }

    /// Takes float32 tensor `name` with its shape.
    pub(crate) fn f32s(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
        match self.take(name, Dtype::F32)? {
            (shape, TensorData::F32(v)) => Ok((shape, v)),
            _ => Err(format!("tensor '{name}' was not kept")),
        }
    }
}

/// A tensor's entry in the header.
struct Info {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn read_into(
    file: &File,
    offset: u64,
    dst: &mut [u8],
    hasher: &mut blake3::Hasher,
) -> Result<(), ReadError> {
    file.read_exact_at(dst, offset).map_err(ReadError::Io)?;
    hasher.update(dst);
    Ok(())
}

/// A tensor's bytes (little-endian) as its typed array.
fn typed(dtype: Dtype, d: &[u8]) -> TensorData {
    match dtype {
        Dtype::I64 => TensorData::I64(
            d.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        Dtype::U32 => TensorData::U32(
            d.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        Dtype::F32 => TensorData::F32(
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        _ => TensorData::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn same(a: &TensorData, b: &TensorData) -> bool {
        match (a, b) {
            (TensorData::I64(x), TensorData::I64(y)) => x == y,
            (TensorData::U32(x), TensorData::U32(y)) => x == y,
            (TensorData::F32(x), TensorData::F32(y)) => x
                .iter()
                .map(|v| v.to_bits())
                .eq(y.iter().map(|v| v.to_bits())),
            (TensorData::Other, TensorData::Other) => true,
            _ => false,
        }
    }

    /// A safetensors file of every dtype a shard uses (and an extra one), as bytes.
    fn shard_bytes(extra_dtype: Dtype) -> Vec<u8> {
        let ids: Vec<u8> = [0i64, 5, 1 << 40, -3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let cols: Vec<u8> = [7u32, 0, u32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let x: Vec<u8> = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.25, 1e30, -7.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let extra = vec![9u8; 8];
        let extra_len = 8 / extra_dtype.size();
        let views = vec![
            ("owned", TensorView::new(Dtype::I64, vec![4], &ids).unwrap()),
            ("col", TensorView::new(Dtype::U32, vec![3], &cols).unwrap()),
            (
                "features",
                TensorView::new(Dtype::F32, vec![3, 2], &x).unwrap(),
            ),
            (
                "extra",
                TensorView::new(extra_dtype, vec![extra_len], &extra).unwrap(),
            ),
        ];
        let meta = HashMap::from([("distgat".to_string(), "{}".to_string())]);
        safetensors::serialize(views, &Some(meta)).unwrap()
    }

    #[test]
    fn the_file_reader_gives_the_bytes_readers_tensors_and_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.safetensors");
        let bytes = shard_bytes(Dtype::U32);
        std::fs::write(&path, &bytes).unwrap();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let want = ShardTensors::from_bytes(&bytes).unwrap();
        let got = match ShardTensors::read_file(&path, bytes.len() as u64, &hash, &[]) {
            Ok(t) => t,
            Err(_) => panic!("the file reader refused a valid shard"),
        };
        assert_eq!(got.metadata, want.metadata);
        assert_eq!(got.tensors.len(), 4);
        for (name, w) in &want.tensors {
            let g = &got.tensors[name];
            assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "{name}");
            assert!(same(&g.data, &w.data), "{name}");
        }
        // Another BLAKE3, another size.
        let other = blake3::hash(b"other").to_hex().to_string();
        assert!(matches!(
            ShardTensors::read_file(&path, bytes.len() as u64, &other, &[]),
            Err(ReadError::Hash(h)) if h == hash
        ));
        assert!(matches!(
            ShardTensors::read_file(&path, bytes.len() as u64 + 1, &hash, &[]),
            Err(ReadError::Size(n)) if n == bytes.len() as u64
        ));
    }

    /// A skipped tensor keeps its dtype and shape but no values, the others are read as
    /// before, and the skipped bytes still count in the hash: one changed byte inside them
    /// is refused.
    #[test]
    fn skipped_tensors_are_hashed_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.safetensors");
        let mut bytes = shard_bytes(Dtype::U32);
        std::fs::write(&path, &bytes).unwrap();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let want = ShardTensors::from_bytes(&bytes).unwrap();
        let Ok(mut got) = ShardTensors::read_file(&path, bytes.len() as u64, &hash, &["owned"])
        else {
            panic!("the file reader refused a valid shard");
        };
        let owned = &got.tensors["owned"];
        assert_eq!((owned.dtype, &owned.shape), (Dtype::I64, &vec![4]));
        assert!(matches!(owned.data, TensorData::Skipped));
        for name in ["col", "features", "extra"] {
            assert!(
                same(&got.tensors[name].data, &want.tensors[name].data),
                "{name}"
            );
        }
        assert_eq!(
            got.u64s("owned").unwrap_err(),
            "tensor 'owned' was not kept"
        );
        assert_eq!(got.count("col", Dtype::U32), Ok(3));
        // The owned ids' bytes: 1 << 40 is the third of them; flip one of its bits.
        let at = bytes
            .windows(8)
            .position(|w| w == (1i64 << 40).to_le_bytes())
            .unwrap();
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            ShardTensors::read_file(&path, bytes.len() as u64, &hash, &["owned"]),
            Err(ReadError::Hash(_))
        ));
    }

    #[test]
    fn headers_it_does_not_take_are_left_to_the_whole_file_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.safetensors");
        let header = |bytes: &[u8]| -> bool {
            std::fs::write(&path, bytes).unwrap();
            let hash = blake3::hash(bytes).to_hex().to_string();
            matches!(
                ShardTensors::read_file(&path, bytes.len() as u64, &hash, &[]),
                Err(ReadError::Header)
            )
        };
        // A dtype no shard has.
        assert!(header(&shard_bytes(Dtype::F16)));
        // A header length beyond the file, a truncated file, and JSON that is not a header.
        let good = shard_bytes(Dtype::U32);
        let mut long = good.clone();
        long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
        assert!(header(&long));
        assert!(header(&good[..good.len() - 1]));
        assert!(header(&good[..5]));
        let mut text = 12u64.to_le_bytes().to_vec();
        text.extend_from_slice(b"[1, 2, 3]   ");
        assert!(header(&text));
        // Offsets with a gap between two tensors.
        let json = br#"{"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U32","shape":[1],"data_offsets":[8,12]}}"#;
        let mut gap = (json.len() as u64).to_le_bytes().to_vec();
        gap.extend_from_slice(json);
        gap.extend_from_slice(&[0u8; 12]);
        assert!(header(&gap));
        // Two metadata entries (safetensors refuses them; the last would win in a map).
        let json = br#"{"__metadata__":{"distgat":"a"},"__metadata__":{"distgat":"b"},"a":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut twice = (json.len() as u64).to_le_bytes().to_vec();
        twice.extend_from_slice(json);
        twice.extend_from_slice(&[0u8; 4]);
        assert!(header(&twice));
        // Offsets near 2^64: the data section's end must not overflow.
        let json = br#"{"a":{"dtype":"U8","shape":[18446744073709551608],"data_offsets":[0,18446744073709551608]}}"#;
        let mut huge = (json.len() as u64).to_le_bytes().to_vec();
        huge.extend_from_slice(json);
        assert!(header(&huge));
    }
}
