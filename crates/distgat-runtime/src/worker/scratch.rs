//! Buffers one layer of a part leaves for the next, so a worker touches fresh memory once
//! per job instead of once per layer and subset.
//!
//! A fresh page costs the kernel a fault and a zero fill; on a VM the host backs the page
//! as well. On the 2-core test VM that is about 0.7 s of CPU per GB (docs/performance.md,
//! "Where `run --workers 2`'s extra time goes"), and a worker of R-MAT 1M/10M touched
//! 2.5 GB in a 2-layer job. A kept buffer is zeroed again in user space instead, so every
//! buffer handed out is exactly what a fresh allocation would be.

use std::sync::Mutex;

use distgat_attention::{Execution, RowBuffer};

/// Buffers smaller than this are not worth keeping (their pages are few).
const KEEP_MIN_BYTES: usize = 1 << 20;
/// At most this many `Vec`s are kept (the largest win).
const KEEP_MAX: usize = 4;
/// A kept buffer serves a request only if it is at most this many times larger: a small
/// request that took a large buffer would leave a later large one to fresh memory while
/// the kept large one sits under a few values (the peak would grow).
const MAX_WASTE: usize = 8;

/// Kept `f32` buffers and one kept [`RowBuffer`]. `Sync` (a `Mutex` each) because the
/// part's state is shared with its pool's threads; it is only used between kernels.
#[derive(Default)]
pub(super) struct Scratch {
    vecs: Mutex<Vec<Vec<f32>>>,
    rows: Mutex<Option<RowBuffer>>,
}

impl Scratch {
    /// A zeroed buffer of `len` values: the smallest kept one large enough (and at most
    /// [`MAX_WASTE`] times larger), else new.
    pub(super) fn take(&self, len: usize) -> Vec<f32> {
        let mut v = self.take_empty(len);
        v.resize(len, 0.0);
        v
    }

    /// An empty buffer with room for `len` values (chosen as by [`Scratch::take`]), for a
    /// caller that appends every value.
    pub(super) fn take_empty(&self, len: usize) -> Vec<f32> {
        let mut vecs = self.vecs.lock().unwrap_or_else(|p| p.into_inner());
        let best = vecs
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() <= len.saturating_mul(MAX_WASTE))
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut v = vecs.swap_remove(i);
                v.clear();
                v
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `v` for a later [`Scratch::take`] (its values do not matter).
    pub(super) fn give(&self, v: Vec<f32>) {
        if v.capacity() * 4 < KEEP_MIN_BYTES {
            return;
        }
        let mut vecs = self.vecs.lock().unwrap_or_else(|p| p.into_inner());
        vecs.push(v);
        if vecs.len() > KEEP_MAX {
            // Drop the smallest.
            let smallest = (0..vecs.len())
                .min_by_key(|&i| vecs[i].capacity())
                .expect("not empty");
            vecs.swap_remove(smallest);
        }
    }

    /// A zeroed [`RowBuffer`] of `len` values: the kept one when it has that length.
    pub(super) fn take_rows(&self, len: usize) -> RowBuffer {
        let kept = self.rows.lock().unwrap_or_else(|p| p.into_inner()).take();
        RowBuffer::zeroed_reusing(kept, len, Execution::Sequential)
    }

    /// Frees every kept buffer (after the last layer, so they do not add to the memory
    /// the output's messages need).
    pub(super) fn clear(&self) {
        self.vecs.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.rows.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Keeps `b` for a later [`Scratch::take_rows`].
    pub(super) fn give_rows(&self, b: RowBuffer) {
        *self.rows.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is taken is zeroed and of the asked length, whether kept or new; the smallest
    /// large-enough buffer is reused; small buffers are not kept.
    #[test]
    fn taken_buffers_are_zeroed_and_reused() {
        let s = Scratch::default();
        let big = 1 << 20;
        let mut a = s.take(big);
        assert!(a.iter().all(|&v| v == 0.0) && a.len() == big);
        a.fill(7.0);
        let a_ptr = a.as_ptr();
        s.give(a);
        let mut b = s.take(big / 2);
        assert_eq!(b.as_ptr(), a_ptr, "kept buffer reused");
        assert!(b.len() == big / 2 && b.iter().all(|&v| v == 0.0));
        b.fill(3.0);
        s.give(b);
        s.give(vec![1.0; 4 * big]);
        let c = s.take(big);
        assert_eq!(c.as_ptr(), a_ptr, "the smallest large-enough one");
        assert!(c.iter().all(|&v| v == 0.0));
        let empty = s.take_empty(big / 2);
        assert!(empty.is_empty() && empty.capacity() >= big / 2);
        s.give(empty);
        let small = s.take(big / 16);
        assert_ne!(
            small.as_ptr(),
            a_ptr,
            "a much smaller request gets its own buffer"
        );
        s.give(vec![1.0; 16]);
        assert_eq!(s.vecs.lock().unwrap().len(), 1, "tiny buffers are not kept");

        let mut r = s.take_rows(big);
        r.fill(5.0);
        s.give_rows(r);
        let r = s.take_rows(big);
        assert!(r.len() == big && r.iter().all(|&v| v == 0.0));
        s.give_rows(r);
        assert_eq!(s.take_rows(big / 2).len(), big / 2);
        s.give(vec![0.0; big]);
        s.clear();
        assert!(s.vecs.lock().unwrap().is_empty() && s.rows.lock().unwrap().is_none());
    }
}
