//! Buffers for rows that kernels gather at random.

use std::ops::{Deref, DerefMut};

use crate::exec::Execution;

/// Below this size a buffer stays on the heap: its pages fit in the TLB anyway.
const HUGE_PAGE_THRESHOLD: usize = 4 << 20;

/// A zero-initialised `f32` buffer. Large ones are anonymous mappings advised to use
/// transparent huge pages: the aggregation reads a random source row per edge, and with
/// 4 KiB pages nearly every such read also misses the TLB (a 100k x 128 `z` spans 12 500
/// pages; 2 MiB pages cut that to 25).
pub struct RowBuffer {
    storage: Storage,
    len: usize,
}

enum Storage {
    Heap(Vec<f32>),
    Mapped(memmap2::MmapMut),
}

impl RowBuffer {
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<f32>();
        if bytes >= HUGE_PAGE_THRESHOLD {
            if let Ok(map) = memmap2::MmapMut::map_anon(bytes) {
                // Only a hint: without THP support the buffer still works, just slower.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return RowBuffer {
                    storage: Storage::Mapped(map),
                    len,
                };
            }
        }
        RowBuffer {
            storage: Storage::Heap(vec![0.0; len]),
            len,
        }
    }
}

impl RowBuffer {
    /// `values` as a buffer, in their own allocation (no copy).
    pub fn from_vec(values: Vec<f32>) -> Self {
        RowBuffer {
            len: values.len(),
            storage: Storage::Heap(values),
        }
    }

    /// A zeroed buffer of `len` values: `kept`, zeroed again (on rayon's threads under
    /// [`Execution::Parallel`]), when it has that length (its pages are resident), else
    /// [`RowBuffer::zeroed`].
    pub fn zeroed_reusing(kept: Option<RowBuffer>, len: usize, exec: Execution) -> Self {
        match kept {
            Some(mut b) if b.len == len => {
                use rayon::prelude::*;
                match exec {
                    Execution::Sequential => b.fill(0.0),
                    Execution::Parallel => b.par_chunks_mut(64 * 1024).for_each(|c| c.fill(0.0)),
                }
                b
            }
            _ => RowBuffer::zeroed(len),
        }
    }
}

impl Deref for RowBuffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.storage {
            Storage::Heap(v) => v,
            // Anonymous mappings are page aligned, so the cast cannot fail.
            Storage::Mapped(m) => bytemuck::cast_slice(&m[..self.len * 4]),
        }
    }
}

impl DerefMut for RowBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped(m) => bytemuck::cast_slice_mut(&mut m[..self.len * 4]),
        }
    }
}

impl std::fmt::Debug for RowBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowBuffer").field("len", &self.len).finish()
    }
}
