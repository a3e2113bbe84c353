//! A heap buffer whose start is aligned for direct I/O, built safely by
//! over-allocating a `Vec` and slicing at the aligned offset. Allocated once.

/// An aligned, fixed-capacity byte buffer.
#[derive(Debug)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuf {
    /// `capacity` zeroed bytes starting at an address aligned to `align` (a power of two).
    pub fn new(capacity: usize, align: usize) -> Self {
        assert!(align.is_power_of_two());
        let storage = vec![0u8; capacity + align];
        let start = storage.as_ptr().align_offset(align);
        assert!(start < align, "align_offset on u8 always succeeds");
        Self {
            storage,
            start,
            capacity,
        }
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.capacity]
    }

    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.capacity]
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
