//! Memory for the ledger's large tables: reserved once at full capacity,
//! backed by transparent huge pages where the kernel allows, and touched at
//! construction when asked ([`FixedVec`], [`zeroed_u64s`]: `prefault`), plus
//! a cache prefetch hint. Without prefaulting (the default) a node starts at
//! once and its memory follows its data; with it, start-up pays for the
//! pages the hot path would otherwise fault in.
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

/// `len` zeroed `u64`s in memory advised for huge pages. With `prefault`
/// every page is touched now (start-up pays, not the first commands);
/// without, the kernel's zero pages are committed as they are first written
/// (start-up is instant and memory follows the data).
pub(crate) fn zeroed_u64s(len: usize, prefault: bool) -> Box<[u64]> {
    if !prefault {
        // `vec![0; n]` asks the allocator for zeroed memory: large requests
        // are fresh mappings, untouched until used.
        let v = vec![0u64; len].into_boxed_slice();
        advise(v.as_ptr() as usize, len * std::mem::size_of::<u64>());
        return v;
    }
    let mut v = Vec::with_capacity(len);
    advise(
        v.as_ptr() as usize,
        v.capacity() * std::mem::size_of::<u64>(),
    );
    v.resize(len, 0);
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

/// A fixed-capacity vector reserved once (advised for huge pages): `push`
/// never allocates and panics past capacity (callers check `is_full` first).
#[derive(Debug)]
pub(crate) struct FixedVec<T> {
    items: Vec<T>,
    capacity: usize,
}

impl<T: Copy> Clone for FixedVec<T> {
    fn clone(&self) -> Self {
        let mut items = Vec::with_capacity(self.capacity);
        items.extend_from_slice(&self.items);
        Self {
            items,
            capacity: self.capacity,
        }
    }
}

impl<T: Copy> FixedVec<T> {
    /// Reserves `capacity` items; with `prefault` their pages are touched now.
    pub(crate) fn new(capacity: usize, prefault: bool) -> Self {
        let mut items = Vec::with_capacity(capacity);
        let bytes = capacity * std::mem::size_of::<T>();
        advise(items.as_ptr() as usize, bytes);
        if prefault {
            // Touch every page of the reservation without initialising items.
            items
                .spare_capacity_mut()
                .fill(std::mem::MaybeUninit::zeroed());
        }
        Self { items, capacity }
    }

    pub(crate) fn push(&mut self, item: T) {
        assert!(
            self.items.len() < self.capacity,
            "FixedVec full: callers check capacity"
        );
        self.items.push(item); // within the reservation: never reallocates
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop()
    }
}

impl<T> std::ops::Deref for FixedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> std::ops::DerefMut for FixedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}
