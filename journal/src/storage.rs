//! The storage seam: what the journal needs from a file system, the real
//! implementation ([`FsStorage`]: `O_DIRECT`, alignment read with `statx`) and
//! the contract the fault-injecting one ([`crate::FaultyStorage`]) follows.

use std::fs::{File, OpenOptions};
use std::io;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One segment file.
pub trait SegmentFile: Send + 'static {
    /// Writes `data` at `offset`. With direct I/O both are block-aligned.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// A directory of segments.
pub trait Storage: Send + Sync + 'static {
    /// The file type.
    type File: SegmentFile;
    /// Ids of the segments present, ascending.
    fn list(&self) -> io::Result<Vec<u64>>;
    /// Creates segment `id` with `size` zero bytes, durably, so that it either
    /// appears complete or not at all.
    fn create(&self, id: u64, size: u64) -> io::Result<Self::File>;
    /// Like [`Storage::create`], for a segment prepared ahead of need: the
    /// storage may spread the work out to stay out of the writer's way
    /// while `hurry` is false, and must go flat out once it is true.
    fn create_ahead(&self, id: u64, size: u64, hurry: &AtomicBool) -> io::Result<Self::File> {
        let _ = hurry;
        self.create(id, size)
    }
    /// Opens an existing segment.
    fn open(&self, id: u64) -> io::Result<Self::File>;
    /// The size of an existing segment.
    fn size(&self, id: u64) -> io::Result<u64>;
    /// Deletes a segment (retention).
    fn remove(&self, id: u64) -> io::Result<()>;
    /// The write alignment (and buffer alignment) this storage needs.
    fn block_size(&self) -> u32;
    /// The manifest's bytes (`None`: there is none).
    fn read_manifest(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the manifest atomically and durably: after a crash either
    /// the old or the new bytes are there, whole.
    fn write_manifest(&self, bytes: &[u8]) -> io::Result<()>;
}

/// Segment file name for `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.keel")
}

/// How [`FsStorage`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoMode {
    /// `O_DIRECT` with `O_DSYNC`: each write is durable when it returns.
    DirectSync,
    /// `O_DIRECT`: writes bypass the page cache; `sync` makes them durable.
    Direct,
    /// Development only: buffered I/O for file systems without direct I/O
    /// (tmpfs). Loudly not for production.
    BufferedDevelopment,
    /// Readers (`verify`, `dump`, `replay`, a projector in another process):
    /// nothing is created, locked or opened for writing; any write fails.
    ReadOnly,
}

impl IoMode {
    /// The I/O a sync policy needs: `sync` writes `O_DIRECT|O_DSYNC` (each
    /// group-commit write is durable when it returns, no `fdatasync`);
    /// `async` and `os` write `O_DIRECT` and sync with `fdatasync` (per
    /// interval; at rolls and shutdown). `buffered` replaces direct I/O
    /// (development on tmpfs), syncing with `fdatasync` under every policy.
    pub fn for_policy(policy: crate::SyncPolicy, buffered: bool) -> Self {
        match (buffered, policy) {
            (true, _) => IoMode::BufferedDevelopment,
            (false, crate::SyncPolicy::Sync) => IoMode::DirectSync,
            (false, _) => IoMode::Direct,
        }
    }
}

/// The real storage: a directory of preallocated segment files. A writer
/// holds an exclusive `flock` on `<dir>/LOCK` (which names its pid) for as
/// long as the storage lives; readers take no lock.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    mode: IoMode,
    block_size: u32,
    /// The writer's lock (None for readers).
    _lock: Option<File>,
    /// `fdatasync` calls made on segment files (shared with every file).
    fdatasyncs: Arc<AtomicU64>,
}

/// Name of the lock file in a journal directory.
pub const LOCK_NAME: &str = "LOCK";

/// Why [`FsStorage`] refused a directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The directory could not be created or probed.
    #[error("journal directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process writes this journal.
    #[error(
        "journal directory {dir} is in use by another writer{}; \
         stop it first (only one node, `keel run` or `keel serve` may write a journal)",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// A reader was pointed at a directory that holds no journal.
    #[error("{dir} is not a Keel journal (no {manifest} and no segment files)", manifest = crate::manifest::MANIFEST_NAME)]
    NotAJournal {
        /// The directory.
        dir: PathBuf,
    },
    /// The file system does not support `O_DIRECT` (e.g. tmpfs).
    #[error(
        "journal directory {dir} is on a file system without usable direct I/O ({source}); \
         use a real disk, or allow buffered I/O for development only"
    )]
    NoDirectIo {
        /// The directory.
        dir: PathBuf,
        /// The open error.
        source: io::Error,
    },
}

impl FsStorage {
    /// Opens (creating, owner-only) `dir` for writing: takes the exclusive
    /// writer lock and reads the direct-I/O alignment with
    /// `statx(STATX_DIOALIGN)`. Refuses a directory another writer holds,
    /// and a file system without direct I/O unless `mode` is
    /// [`IoMode::BufferedDevelopment`]. [`IoMode::ReadOnly`] is
    /// [`FsStorage::open_read_only`].
    pub fn open(dir: impl AsRef<Path>, mode: IoMode) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        if mode == IoMode::ReadOnly {
            return Self::open_read_only(dir);
        }
        let io_err = |source| StorageError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err)?;
        let lock = lock_writer(&dir)?;
        let lock_path = dir.join(LOCK_NAME);
        let block_size = match mode {
            IoMode::BufferedDevelopment | IoMode::ReadOnly => {
                dio_alignment(&lock_path).unwrap_or(4096)
            }
            IoMode::Direct | IoMode::DirectSync => {
                if let Err(source) = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&lock_path)
                {
                    return Err(StorageError::NoDirectIo { dir, source });
                }
                if is_memory_fs(&dir) {
                    return Err(StorageError::NoDirectIo {
                        dir,
                        source: io::Error::other("tmpfs/ramfs accepts O_DIRECT but keeps data in memory and ignores alignment"),
                    });
                }
                dio_alignment(&lock_path).map_err(io_err)?
            }
        };
        Ok(Self {
            dir,
            mode,
            block_size: block_size.max(crate::format::BLOCK_SIZE_MIN),
            _lock: Some(lock),
            fdatasyncs: Arc::default(),
        })
    }

    /// Opens an existing journal directory for reading only: creates,
    /// locks and writes nothing (works in a read-only directory), and
    /// refuses a directory holding neither a manifest nor segments.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let storage = Self {
            block_size: dio_alignment(&dir)
                .unwrap_or(4096)
                .max(crate::format::BLOCK_SIZE_MIN),
            dir,
            mode: IoMode::ReadOnly,
            _lock: None,
            fdatasyncs: Arc::default(),
        };
        let io_err = |source| StorageError::Io {
            dir: storage.dir.clone(),
            source,
        };
        let has_manifest = storage.read_manifest().map_err(io_err)?.is_some();
        if !has_manifest && storage.list().map_err(io_err)?.is_empty() {
            return Err(StorageError::NotAJournal { dir: storage.dir });
        }
        Ok(storage)
    }

    /// Whether a writer holds this directory's lock now (a live journal:
    /// its tail may be mid-write). Takes no lock that outlives the call.
    pub fn writer_active(dir: impl AsRef<Path>) -> bool {
        let Ok(file) = File::open(dir.as_ref().join(LOCK_NAME)) else {
            return false;
        };
        // SAFETY: `file` is an open descriptor for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0 // a shared lock is refused only while a writer holds LOCK_EX
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How it writes.
    pub fn mode(&self) -> IoMode {
        self.mode
    }

    /// `fdatasync` calls made on segment files so far (each sync policy
    /// documents how many it makes).
    pub fn fdatasyncs(&self) -> u64 {
        self.fdatasyncs.load(Ordering::Relaxed)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    fn open_flags(&self) -> i32 {
        match self.mode {
            IoMode::DirectSync => libc::O_DIRECT | libc::O_DSYNC,
            IoMode::Direct => libc::O_DIRECT,
            IoMode::BufferedDevelopment | IoMode::ReadOnly => 0,
        }
    }

    fn refuse_write(&self) -> io::Result<()> {
        match self.mode {
            IoMode::ReadOnly => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "journal opened read-only",
            )),
            _ => Ok(()),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// Takes the exclusive writer lock on `<dir>/LOCK` and writes our pid into
/// it; a held lock is [`StorageError::Locked`] with the holder's pid.
fn lock_writer(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_NAME);
    let io_err = |source| StorageError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    // SAFETY: `file` is an open descriptor for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(err));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(StorageError::Locked {
            dir: dir.to_path_buf(),
            pid: text.trim().parse().ok(),
        });
    }
    file.set_len(0).map_err(io_err)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .map_err(io_err)?;
    Ok(file)
}

/// Whether `dir` is on a memory file system (tmpfs, ramfs): those accept
/// `O_DIRECT` on recent kernels but nothing written there survives a power cut.
fn is_memory_fs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and `st` is writable for the call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs returned 0 and initialised the (zeroed) struct.
    // The field's type differs between architectures: hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let f_type = unsafe { st.assume_init() }.f_type as i64;
    f_type == TMPFS_MAGIC || f_type == RAMFS_MAGIC
}

/// Reads the direct-I/O alignment of `path`: `STATX_DIOALIGN` (the larger of
/// the memory and offset alignments), falling back to the file system's
/// preferred I/O block size when the kernel does not report it.
pub fn dio_alignment(path: &Path) -> io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stx` points to
    // writable memory of the right type for the duration of the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_DIOALIGN | libc::STATX_BASIC_STATS,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx returned 0, so it initialised the struct (it was zeroed before).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        return Ok(stx.stx_dio_offset_align.max(stx.stx_dio_mem_align));
    }
    Ok(stx.stx_blksize)
}

/// A segment file on disk: writes through the direct handle, reads through
/// a buffered one (the kernel keeps them coherent: a direct write invalidates
/// the cached range), so readers need no aligned buffers.
#[derive(Debug)]
pub struct FsFile {
    file: File,
    reader: File,
    /// Opened with `O_DSYNC`: every completed write is already durable.
    dsync: bool,
    fdatasyncs: Arc<AtomicU64>,
}

impl SegmentFile for FsFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_exact_at(buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        match self.dsync {
            true => Ok(()),
            false => {
                self.fdatasyncs.fetch_add(1, Ordering::Relaxed);
                self.file.sync_data()
            }
        }
    }
}

impl Storage for FsStorage {
    type File = FsFile;

    fn list(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".keel").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn create(&self, id: u64, size: u64) -> io::Result<FsFile> {
        self.create_ahead(id, size, &AtomicBool::new(true))
    }

    fn create_ahead(&self, id: u64, size: u64, hurry: &AtomicBool) -> io::Result<FsFile> {
        self.refuse_write()?;
        let tmp = self.dir.join(format!("{}.tmp", segment_name(id)));
        let direct = matches!(self.mode, IoMode::Direct | IoMode::DirectSync)
            && size.is_multiple_of(u64::from(self.block_size));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(&tmp)?;
        // Zero-fill (not a sparse hole): fdatasync later never commits extents.
        zero_fill(&file, size, self.block_size as usize, direct, hurry)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.path(id))?;
        self.sync_dir()?;
        self.open(id)
    }

    fn open(&self, id: u64) -> io::Result<FsFile> {
        let reader = File::open(self.path(id))?;
        let file = match self.mode {
            IoMode::ReadOnly => reader.try_clone()?,
            _ => OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(self.open_flags())
                .open(self.path(id))?,
        };
        Ok(FsFile {
            file,
            reader,
            dsync: self.mode == IoMode::DirectSync,
            fdatasyncs: Arc::clone(&self.fdatasyncs),
        })
    }

    fn size(&self, id: u64) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(id))?.len())
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        self.refuse_write()?;
        std::fs::remove_file(self.path(id))?;
        self.sync_dir()
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_manifest(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(crate::manifest::MANIFEST_NAME)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_manifest(&self, bytes: &[u8]) -> io::Result<()> {
        self.refuse_write()?;
        let path = self.dir.join(crate::manifest::MANIFEST_NAME);
        let tmp = path.with_extension("manifest.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        self.sync_dir()
    }
}

/// Bytes per zero-fill write of a new segment.
const ZERO_FILL_CHUNK: usize = 256 << 10;
/// While not hurried, the zero-fill rests this many times as long as each
/// write took (a 20% duty cycle on the device).
const ZERO_FILL_REST_FACTOR: u32 = 4;

/// Writes `size` zero bytes into a new segment. With direct I/O the zeros
/// bypass the page cache in `ZERO_FILL_CHUNK` writes; unless `hurry` is
/// set, each is followed by a rest four times as long as it took, so a
/// group-commit write meets at most one chunk on the device instead of a
/// whole segment's writeback and allocation (issue 17: a 64 MiB buffered
/// fill and its `fsync` raised the durable ack p99 several-fold during the
/// first segment of every fresh journal; docs/performance.md, "Levers").
fn zero_fill(
    file: &File,
    size: u64,
    block: usize,
    direct: bool,
    hurry: &AtomicBool,
) -> io::Result<()> {
    let zeros = crate::aligned::AlignedBuf::new(ZERO_FILL_CHUNK, block.max(4096));
    let mut at = 0;
    while at < size {
        let n = (size - at).min(ZERO_FILL_CHUNK as u64) as usize;
        let started = std::time::Instant::now();
        file.write_all_at(&zeros.as_slice()[..n], at)?;
        at += n as u64;
        if direct && !hurry.load(Ordering::Acquire) {
            std::thread::sleep(started.elapsed() * ZERO_FILL_REST_FACTOR);
        }
    }
    Ok(())
}
