//! The storage seam: what the journal needs from a file system, the real
//! implementation ([`FsStorage`]: `O_DIRECT`, alignment read with `statx`) and
//! the contract the fault-injecting one ([`crate::FaultyStorage`]) follows.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    /// Opens an existing segment.
    fn open(&self, id: u64) -> io::Result<Self::File>;
    /// The size of an existing segment.
    fn size(&self, id: u64) -> io::Result<u64>;
    /// Deletes a segment (retention).
    fn remove(&self, id: u64) -> io::Result<()>;
    /// The write alignment (and buffer alignment) this storage needs.
    fn block_size(&self) -> u32;
}

/// Segment file name for `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.keel")
}

/// How [`FsStorage`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// `O_DIRECT` with `O_DSYNC`: each write is durable when it returns.
    DirectSync,
    /// `O_DIRECT`: writes bypass the page cache; `sync` makes them durable.
    Direct,
    /// Development only: buffered I/O for file systems without direct I/O
    /// (tmpfs). Loudly not for production.
    BufferedDevelopment,
}

/// The real storage: a directory of preallocated segment files.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    mode: IoMode,
    block_size: u32,
}

/// Why [`FsStorage`] refused a directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The directory could not be created or probed.
    #[error("journal directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
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
    /// Opens (creating) `dir` and reads its direct-I/O alignment with
    /// `statx(STATX_DIOALIGN)`. Refuses a file system without direct I/O
    /// unless `mode` is [`IoMode::BufferedDevelopment`].
    pub fn open(dir: impl AsRef<Path>, mode: IoMode) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let io_err = |source| StorageError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let probe_path = dir.join(".keel-probe");
        let probe = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&probe_path)
            .map_err(io_err)?;
        drop(probe);
        let block_size = match mode {
            IoMode::BufferedDevelopment => dio_alignment(&probe_path).unwrap_or(4096),
            IoMode::Direct | IoMode::DirectSync => {
                if let Err(source) = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&probe_path)
                {
                    let _ = std::fs::remove_file(&probe_path);
                    return Err(StorageError::NoDirectIo { dir, source });
                }
                if is_memory_fs(&dir) {
                    let _ = std::fs::remove_file(&probe_path);
                    return Err(StorageError::NoDirectIo {
                        dir,
                        source: io::Error::other("tmpfs/ramfs accepts O_DIRECT but keeps data in memory and ignores alignment"),
                    });
                }
                dio_alignment(&probe_path).map_err(io_err)?
            }
        };
        let _ = std::fs::remove_file(&probe_path);
        Ok(Self {
            dir,
            mode,
            block_size: block_size.max(crate::format::BLOCK_SIZE_MIN),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    fn open_flags(&self) -> i32 {
        match self.mode {
            IoMode::DirectSync => libc::O_DIRECT | libc::O_DSYNC,
            IoMode::Direct => libc::O_DIRECT,
            IoMode::BufferedDevelopment => 0,
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
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
            false => self.file.sync_data(),
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
        let tmp = self.dir.join(format!("{}.tmp", segment_name(id)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        // Zero-fill (not a sparse hole): fdatasync later never commits extents.
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.path(id))?;
        self.sync_dir()?;
        self.open(id)
    }

    fn open(&self, id: u64) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(self.open_flags())
            .open(self.path(id))?;
        let reader = File::open(self.path(id))?;
        Ok(FsFile {
            file,
            reader,
            dsync: self.mode == IoMode::DirectSync,
        })
    }

    fn size(&self, id: u64) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(id))?.len())
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(id))?;
        self.sync_dir()
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }
}
