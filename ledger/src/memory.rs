//! Memory for the ledger's large tables: allocated once at full capacity,
//! backed by transparent huge pages where the kernel allows, and touched at
//! construction ([`FixedVec`], [`prefaulted`]), plus a cache prefetch hint.
//!
//! Why: the tables are touched at random (hash-indexed lookups) or in order
//! (appends). With 4 KiB pages every lookup in a 128 MiB index is a TLB miss
//! (huge pages measured: 2x the replay rate), and every 4 KiB of appended
//! records is a page fault that zeroes memory on the hot path (measured: a
//! fifth of the BLP's time). Touching everything at start moves that cost to
//! start-up, as static allocation intends: what the ledger will use is
//! committed before the first command. The advice changes no contents and is
//! only a hint: where THP is off, nothing happens.

#![allow(unsafe_code)]

/// Advises the kernel to back `len_bytes` starting at `start` with huge
/// pages. Only whole 2 MiB-aligned pieces of the range are advised.
fn advise(start: usize, len_bytes: usize) {
    const HUGE_PAGE: usize = 2 << 20;
    let begin = start.next_multiple_of(HUGE_PAGE);
    let end = (start + len_bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= begin {
        return;
    }
    // SAFETY: [begin, end) lies inside one live allocation owned by the
    // caller (a Vec's or boxed slice's buffer, checked by the callers below),
    // and MADV_HUGEPAGE changes neither its contents nor its mapping's
    // validity; it cannot create aliasing or free memory.
    let result =
        unsafe { libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE) };
    // A refusal (e.g. THP compiled out) only costs speed.
    let _ = result;
}

/// `len` copies of `value` in memory advised for huge pages before it is
/// first touched.
pub(crate) fn prefaulted<T: Copy>(len: usize, value: T) -> Box<[T]> {
    let mut v = Vec::with_capacity(len);
    advise(v.as_ptr() as usize, v.capacity() * std::mem::size_of::<T>());
    v.resize(len, value);
    v.into_boxed_slice()
}

/// Hints the CPU to load the cache line at `p` (no fault, no architectural read).
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect; SSE,
    // which the intrinsic requires, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast(),
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A fixed-capacity vector over prefaulted memory: `push` never allocates
/// and panics past capacity (callers check `is_full` first).
#[derive(Debug, Clone)]
pub(crate) struct FixedVec<T> {
    items: Box<[T]>,
    len: usize,
}

impl<T: Copy + Default> FixedVec<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: prefaulted(capacity, T::default()),
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        assert!(
            self.len < self.items.len(),
            "FixedVec full: callers check capacity"
        );
        self.items[self.len] = item;
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        Some(self.items[self.len])
    }
}

impl<T> std::ops::Deref for FixedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T> std::ops::DerefMut for FixedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}
