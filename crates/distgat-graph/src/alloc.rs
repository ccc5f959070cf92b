//! A global allocator that starts every large block on a page boundary.
//!
//! glibc serves a block of 32 MiB or more with its own anonymous mapping, but returns a
//! pointer 16 bytes into it (the chunk header). Rows gathered at random from such a block
//! (features transformed in place, rows put into the edge ids' memory) then straddle one
//! more cache line each: a 512-byte row spans 9 lines instead of 8, a 128-byte row 3
//! instead of 2, and the aggregation is bound by those lines. [`LargePageAligned`] maps
//! large blocks itself, so they start on a page (hence cache-line) boundary; every other
//! block goes to the system allocator unchanged. Binaries opt in with
//! `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes (and alignment at most a page) are mapped directly.
/// glibc maps blocks this large anyway (its largest dynamic mmap threshold on 64-bit
/// targets), so the heap's reuse of smaller freed blocks is kept.
pub const LARGE_BLOCK: usize = 32 << 20;

/// The page size the mappings are rounded to (mmap returns multiples of the real one,
/// which is at least this on the targets we build for).
const PAGE: usize = 4096;

/// [`System`] for small blocks; anonymous page-aligned mappings for blocks of at least
/// [`LARGE_BLOCK`] bytes (Linux; elsewhere [`System`] for everything).
#[derive(Debug, Default, Clone, Copy)]
pub struct LargePageAligned;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    use super::*;

    fn is_large(layout: &Layout) -> bool {
        layout.size() >= LARGE_BLOCK && layout.align() <= PAGE
    }

    /// The mapping length of a large block: its size rounded up to whole pages (no
    /// overflow: a `Layout`'s size is at most `isize::MAX`).
    fn mapped_len(size: usize) -> usize {
        size.next_multiple_of(PAGE)
    }

    /// A fresh private anonymous mapping of `len` bytes: page aligned and zero filled by
    /// the kernel; null when the kernel refuses.
    fn map(len: usize) -> *mut u8 {
        // SAFETY: mmap with a null hint, no file and no fixed address only creates a new
        // mapping; it cannot touch memory the program already uses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    // SAFETY (the GlobalAlloc contract): a large block is exactly one mapping of
    // `mapped_len(layout.size())` bytes made by `map` (or moved by `mremap`), page aligned,
    // which satisfies any alignment up to a page (larger alignments are not "large" and go
    // to System). `dealloc` and `realloc` are given the same layout the block was
    // allocated with (the caller's side of the contract), so `is_large` routes a block
    // back to the allocator that made it and `mapped_len` gives the mapping's exact
    // length. Mappings never overlap live blocks, and fresh anonymous mappings read as
    // zeros, which is what `alloc_zeroed` promises.
    unsafe impl GlobalAlloc for LargePageAligned {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if is_large(&layout) {
                map(mapped_len(layout.size()))
            } else {
                // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
                unsafe { System.alloc(layout) }
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if is_large(&layout) {
                map(mapped_len(layout.size()))
            } else {
                // SAFETY: as in `alloc`.
                unsafe { System.alloc_zeroed(layout) }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if is_large(&layout) {
                // SAFETY: `ptr` is the start of a mapping of exactly this length (above).
                unsafe { libc::munmap(ptr.cast(), mapped_len(layout.size())) };
            } else {
                // SAFETY: System allocated it with this layout.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the contract guarantees `new_size`, rounded up to `layout.align()`,
            // does not overflow isize, so this layout is valid.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            match (is_large(&layout), is_large(&new_layout)) {
                // SAFETY: System's own block, resized by System.
                (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
                (true, true) => {
                    // SAFETY: `ptr` starts a mapping of exactly the old length; mremap
                    // moves or grows it whole (contents kept), page aligned.
                    let p = unsafe {
                        libc::mremap(
                            ptr.cast(),
                            mapped_len(layout.size()),
                            mapped_len(new_size),
                            libc::MREMAP_MAYMOVE,
                        )
                    };
                    if p == libc::MAP_FAILED {
                        std::ptr::null_mut()
                    } else {
                        p.cast()
                    }
                }
                _ => {
                    // Across the threshold: a new block of the other kind, the contents
                    // copied, the old block freed (the old one stays valid on failure).
                    // SAFETY: `new_layout` is valid and non-zero (one side is large).
                    let new = unsafe { self.alloc(new_layout) };
                    if !new.is_null() {
                        // SAFETY: both blocks hold at least the copied bytes and are
                        // distinct allocations; the old one is freed with its own layout.
                        unsafe {
                            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                            self.dealloc(ptr, layout);
                        }
                    }
                    new
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to System.
unsafe impl GlobalAlloc for LargePageAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// Large blocks are page aligned, zeroed when asked, keep their contents across every
    /// kind of resize (within large, and across the threshold both ways), and free.
    #[test]
    fn large_blocks_are_page_aligned_and_resize_keeping_their_bytes() {
        let a = LargePageAligned;
        let big = LARGE_BLOCK + 12_345;
        let layout = Layout::from_size_align(big, 8).unwrap();
        // SAFETY (test): each block is used within its size and freed with its layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % PAGE, 0);
            assert!(std::slice::from_raw_parts(p, big).iter().all(|&b| b == 0));
            for k in (0..big).step_by(4099) {
                *p.add(k) = (k % 251) as u8;
            }
            let check = |p: *mut u8, upto: usize| {
                for k in (0..upto).step_by(4099) {
                    assert_eq!(*p.add(k), (k % 251) as u8, "byte {k}");
                }
            };
            let grown = a.realloc(p, layout, 2 * big);
            assert_eq!(grown as usize % PAGE, 0);
            check(grown, big);
            let small = a.realloc(grown, Layout::from_size_align(2 * big, 8).unwrap(), 10_000);
            check(small, 10_000);
            let again = a.realloc(small, Layout::from_size_align(10_000, 8).unwrap(), big);
            assert_eq!(again as usize % PAGE, 0);
            check(again, 10_000);
            a.dealloc(again, layout);
            // Small blocks and over-aligned ones go to System.
            let s = Layout::from_size_align(64, 8).unwrap();
            let q = a.alloc(s);
            assert!(!q.is_null());
            a.dealloc(q, s);
        }
    }
}
