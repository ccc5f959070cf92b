//! Buffers for rows that kernels gather at random.

use std::ops::{Deref, DerefMut};

use crate::exec::Execution;

/// Below this size a buffer stays on the heap: its pages fit in the TLB anyway.
const HUGE_PAGE_THRESHOLD: usize = 4 << 20;

/// Bytes in a cache line (x86-64 and most AArch64).
const CACHE_LINE: usize = 64;

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
    /// The allocation of a `u64` vector its owner no longer needs (the edge ids once the
    /// CSR is built), two `f32` slots per word, the rows starting at the given `f32`
    /// offset (the first cache-line boundary); see [`RowBuffer::spare_words`].
    Words(Vec<u64>, usize),
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

    /// An empty buffer (`len() == 0`) whose room is `words`' memory: two `f32` values per
    /// word, `2 * words.len()` in all. Its pages are resident (the words were written), so
    /// [`RowBuffer::zeroed_reusing`] fills it with a parallel memset where new pages would
    /// each cost a fault and a kernel zero fill. Read `words` into transparent huge pages
    /// if the rows put here are gathered at random.
    ///
    /// The rows start at the first 64-byte boundary in it: unless the allocator aligns
    /// large blocks (`distgat_graph::LargePageAligned` does), a large vector's data starts
    /// 16 bytes into its mapping (glibc's chunk header), and unaligned 128-byte rows span
    /// three cache lines instead of two.
    pub fn spare_words(words: Vec<u64>) -> Self {
        let skip = (words.as_ptr() as usize).wrapping_neg() % CACHE_LINE / 4;
        let skip = skip.min(2 * words.len());
        RowBuffer {
            storage: Storage::Words(words, skip),
            len: 0,
        }
    }

    /// How many `f32` values the buffer's memory holds (at least `len()`).
    pub fn room(&self) -> usize {
        match &self.storage {
            Storage::Heap(v) => v.len(),
            Storage::Mapped(m) => m.len() / 4,
            Storage::Words(w, skip) => 2 * w.len() - skip,
        }
    }

    /// A zeroed buffer of `len` values: `kept`, zeroed again (on rayon's threads under
    /// [`Execution::Parallel`]), when its [`room`](RowBuffer::room) holds `len` values
    /// (its pages are resident), else [`RowBuffer::zeroed`].
    pub fn zeroed_reusing(kept: Option<RowBuffer>, len: usize, exec: Execution) -> Self {
        match kept {
            Some(mut b) if b.room() >= len => {
                use rayon::prelude::*;
                if let Storage::Heap(v) = &mut b.storage {
                    v.truncate(len);
                }
                b.len = len;
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
            // u64 is 8-aligned, so the cast to f32 (4-aligned) cannot fail.
            Storage::Words(w, skip) => &bytemuck::cast_slice(w)[*skip..*skip + self.len],
        }
    }
}

impl DerefMut for RowBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            Storage::Mapped(m) => bytemuck::cast_slice_mut(&mut m[..self.len * 4]),
            Storage::Words(w, skip) => &mut bytemuck::cast_slice_mut(w)[*skip..*skip + self.len],
        }
    }
}

impl std::fmt::Debug for RowBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowBuffer").field("len", &self.len).finish()
    }
}
