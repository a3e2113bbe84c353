//! A fault-injecting, in-memory [`Storage`] for tests, driven by one seed.
//!
//! Sector model: every file keeps its durable bytes and its current bytes;
//! a write changes the current bytes and marks its sectors dirty; `sync`
//! makes the file's current bytes durable. [`FaultyStorage::crash`] keeps,
//! drops or tears (a random prefix of the new bytes survives) each dirty
//! sector independently, as a power cut can. Injected faults: EIO on the
//! n-th write or sync, ENOSPC when creating segments, a misdirected n-th
//! write (lands one block further than asked), and latency on every write
//! and sync. Creating a segment is atomic
//! and durable, as `FsStorage` makes it with tmp + fsync + rename.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{SegmentFile, Storage};

/// Faults to inject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Seed of every random choice (crash outcomes).
    pub seed: u64,
    /// The write (0-based, counted across files) that fails with EIO.
    pub eio_on_write: Option<u64>,
    /// The sync (0-based) that fails with EIO.
    pub eio_on_sync: Option<u64>,
    /// The write (0-based) that lands one block after its offset.
    pub misdirect_write: Option<u64>,
    /// Added to every write and sync (a slow device).
    pub latency: Option<std::time::Duration>,
}

#[derive(Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    current: Vec<u8>,
    dirty_sectors: BTreeSet<u64>,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<u64, FileState>,
    config: FaultConfig,
    rng: u64,
    writes: u64,
    syncs: u64,
    no_space: bool,
    /// The manifest (written atomically and durably, as `FsStorage` does).
    manifest: Option<Vec<u8>>,
}

/// The fault-injecting storage. Clones share the same "disk".
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    state: Arc<Mutex<State>>,
    block_size: u32,
}

/// Sector size of the model.
pub const SECTOR: u64 = 512;

impl FaultyStorage {
    /// An empty disk with the given block size and faults.
    pub fn new(block_size: u32, config: FaultConfig) -> Self {
        let rng = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        Self::over(BTreeMap::new(), None, config, rng, block_size)
    }

    /// A disk holding `files`, with fresh fault counters.
    fn over(
        files: BTreeMap<u64, FileState>,
        manifest: Option<Vec<u8>>,
        config: FaultConfig,
        rng: u64,
        block_size: u32,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                files,
                config,
                rng,
                writes: 0,
                syncs: 0,
                no_space: false,
                manifest,
            })),
            block_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes segment creation fail with ENOSPC (or succeed again).
    pub fn set_no_space(&self, no_space: bool) {
        self.lock().no_space = no_space;
    }

    /// Replaces the fault configuration; write and sync counts restart at 0.
    pub fn set_faults(&self, config: FaultConfig) {
        let mut state = self.lock();
        state.config = config;
        state.writes = 0;
        state.syncs = 0;
    }

    /// Power cut: each unsynced sector survives, vanishes or tears. Returns a
    /// storage over the surviving bytes (the old handles keep the old state).
    pub fn crash(&self) -> FaultyStorage {
        let mut state = self.lock();
        let mut rng = state.rng;
        let mut files = BTreeMap::new();
        for (&id, file) in &state.files {
            let mut bytes = file.durable.clone();
            for &sector in &file.dirty_sectors {
                let start = (sector * SECTOR) as usize;
                let end = (start + SECTOR as usize).min(bytes.len());
                let keep = match next(&mut rng) % 3 {
                    0 => 0,
                    1 => end - start,
                    _ => (next(&mut rng) as usize) % (end - start),
                };
                bytes[start..start + keep].copy_from_slice(&file.current[start..start + keep]);
            }
            files.insert(
                id,
                FileState {
                    durable: bytes.clone(),
                    current: bytes,
                    dirty_sectors: BTreeSet::new(),
                },
            );
        }
        state.rng = rng;
        let manifest = state.manifest.clone();
        Self::over(
            files,
            manifest,
            FaultConfig::default(),
            rng,
            self.block_size,
        )
    }

    /// Direct access for tests that damage bytes on purpose (durable and current).
    pub fn corrupt(&self, id: u64, offset: u64, f: impl FnOnce(&mut [u8])) {
        let mut state = self.lock();
        let file = state.files.get_mut(&id).expect("segment exists");
        f(&mut file.durable[offset as usize..]);
        let durable = file.durable.clone();
        file.current = durable;
        file.dirty_sectors.clear();
    }

    fn delay(&self) {
        let latency = self.lock().config.latency;
        if let Some(latency) = latency {
            std::thread::sleep(latency);
        }
    }

    /// Truncates a segment file to `len` bytes (an operator's mistake or an
    /// attack: segment files never change size on their own).
    pub fn truncate(&self, id: u64, len: u64) {
        let mut state = self.lock();
        let file = state.files.get_mut(&id).expect("segment exists");
        file.durable.truncate(len as usize);
        file.current.truncate(len as usize);
        file.dirty_sectors.clear();
    }

    /// Replaces (or deletes, with `None`) the manifest's bytes.
    pub fn set_manifest(&self, bytes: Option<Vec<u8>>) {
        self.lock().manifest = bytes;
    }

    /// The durable bytes of a segment.
    pub fn durable_bytes(&self, id: u64) -> Vec<u8> {
        self.lock().files[&id].durable.clone()
    }
}

fn next(rng: &mut u64) -> u64 {
    // xorshift64*: deterministic per seed.
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// A file of the fault-injecting storage.
#[derive(Debug)]
pub struct FaultyFile {
    id: u64,
    storage: FaultyStorage,
}

impl SegmentFile for FaultyFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let block = u64::from(self.storage.block_size);
        self.storage.delay();
        let mut state = self.storage.lock();
        let n = state.writes;
        state.writes += 1;
        if state.config.eio_on_write == Some(n) {
            return Err(eio());
        }
        assert_eq!(offset % block, 0, "unaligned direct write at {offset}");
        assert_eq!(
            data.len() as u64 % block,
            0,
            "unaligned direct write length"
        );
        let offset = match state.config.misdirect_write == Some(n) {
            true => offset + block,
            false => offset,
        };
        let file = state.files.get_mut(&self.id).expect("open file exists");
        let end = offset as usize + data.len();
        if end > file.current.len() {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        file.current[offset as usize..end].copy_from_slice(data);
        for sector in offset / SECTOR..(end as u64).div_ceil(SECTOR) {
            file.dirty_sectors.insert(sector);
        }
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.storage.lock();
        let file = &state.files[&self.id];
        let end = offset as usize + buf.len();
        if end > file.current.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&file.current[offset as usize..end]);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.storage.delay();
        let mut state = self.storage.lock();
        let n = state.syncs;
        state.syncs += 1;
        if state.config.eio_on_sync == Some(n) {
            return Err(eio());
        }
        let file = state.files.get_mut(&self.id).expect("open file exists");
        file.durable.clone_from(&file.current);
        file.dirty_sectors.clear();
        Ok(())
    }
}

impl Storage for FaultyStorage {
    type File = FaultyFile;

    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self.lock().files.keys().copied().collect())
    }

    fn create(&self, id: u64, size: u64) -> io::Result<FaultyFile> {
        let mut state = self.lock();
        if state.no_space {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        state.files.entry(id).or_insert_with(|| FileState {
            durable: vec![0; size as usize],
            current: vec![0; size as usize],
            dirty_sectors: BTreeSet::new(),
        });
        drop(state);
        self.open(id)
    }

    fn open(&self, id: u64) -> io::Result<FaultyFile> {
        match self.lock().files.contains_key(&id) {
            true => Ok(FaultyFile {
                id,
                storage: self.clone(),
            }),
            false => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn size(&self, id: u64) -> io::Result<u64> {
        self.lock()
            .files
            .get(&id)
            .map(|f| f.current.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        self.lock().files.remove(&id);
        Ok(())
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_manifest(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock().manifest.clone())
    }

    fn write_manifest(&self, bytes: &[u8]) -> io::Result<()> {
        self.lock().manifest = Some(bytes.to_vec());
        Ok(())
    }
}
