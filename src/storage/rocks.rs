//! The embedded bound store: RocksDB in a local data directory.
//!
//! Layout (default column family, keys are ASCII):
//! * `meta/format_version` — the on-disk format version as a big-endian `u32`, written when the
//!   directory is created. A binary refuses to open a directory whose format it does not know.
//! * `meta/server_version` — the version of the last timelock binary that opened the directory
//!   for writing (UTF-8), so that a backup can say which server wrote its data.
//! * `meta/new_namespace` — after a restore, the record a namespace created later starts from
//!   (a floor for its bound, and whether it is fenced), in the record encoding; absent means
//!   "bound 0, not fenced".
//! * `ns/<name>` — one [`NamespaceRecord`] per namespace (see `storage::codec`).
//!
//! Every write uses `WriteOptions::set_sync(true)`: `put` returns only after the WAL is fsynced,
//! which is the promise the allocator relies on. RocksDB's own `LOCK` file keeps a second server
//! from opening the same directory. Writes run on Tokio's blocking pool so a slow disk never
//! stalls the request threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rocksdb::{IteratorMode, Options, WriteOptions, DB};

use super::{codec, BoundStore, NamespaceRecord, StoreError};

/// The on-disk format this binary writes and understands.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_KEY: &[u8] = b"meta/format_version";
const SERVER_VERSION_KEY: &[u8] = b"meta/server_version";
const NEW_NAMESPACE_KEY: &[u8] = b"meta/new_namespace";
const NAMESPACE_PREFIX: &[u8] = b"ns/";

/// What to do before upgrading an older data dir: take a `pre-upgrade` backup (see
/// `crate::operations::backup`). Called with the open database and its format version.
pub type UpgradeHook<'a> = &'a dyn Fn(&DB, u32) -> Result<(), StoreError>;

pub struct RocksStore {
    db: Arc<DB>,
    path: PathBuf,
    min_free_bytes: u64,
}

fn open_error(path: &Path, e: rocksdb::Error) -> StoreError {
    let text = e.to_string();
    // RocksDB's own wording for a LOCK file held by another process ("While lock file: .../LOCK:
    // Resource temporarily unavailable") or by this one. Not any "lock" in the text: the error
    // quotes paths, and every path under /var/lib/timelock contains one.
    if text.contains("While lock file") || text.contains("lock hold by current process") {
        StoreError(format!(
            "data dir {} is in use by another timelock process ({text})",
            path.display()
        ))
    } else if text.contains("Permission denied") {
        StoreError(format!(
            "cannot open RocksDB at {}: {text} (every file in the data dir must belong to the user the server runs as, e.g. after an offline command run as root: chown -R)",
            path.display()
        ))
    } else {
        StoreError(format!("cannot open RocksDB at {}: {text}", path.display()))
    }
}

/// Test-only negative control (`faults.skip_sync`): when set, writes are NOT synced, so a power
/// cut can lose an acknowledged bound. Exists so that the power-cut test can prove it detects
/// exactly that bug; never set it otherwise.
pub static SKIP_SYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn sync_writes() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(!SKIP_SYNC.load(std::sync::atomic::Ordering::Relaxed));
    wo
}

/// Opens an existing data dir for writing, without creating it (offline tools). Fails if a
/// server holds it.
pub fn open_existing(path: &Path) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(false);
    DB::open(&opts, path).map_err(|e| open_error(path, e))
}

/// Opens a data dir (or a checkpoint) read-only.
pub fn open_read_only(path: &Path) -> Result<DB, StoreError> {
    DB::open_for_read_only(&Options::default(), path, false).map_err(|e| open_error(path, e))
}

/// The recorded on-disk format version, if any.
pub fn read_format_version(db: &DB) -> Result<Option<u32>, StoreError> {
    match db
        .get(FORMAT_KEY)
        .map_err(|e| StoreError(format!("reading format version: {e}")))?
    {
        None => Ok(None),
        Some(bytes) => <[u8; 4]>::try_from(bytes.as_slice())
            .map(|b| Some(u32::from_be_bytes(b)))
            .map_err(|_| StoreError("unreadable format version in data dir".into())),
    }
}

/// Records `version` as the on-disk format (synced).
pub fn write_format_version(db: &DB, version: u32) -> Result<(), StoreError> {
    db.put_opt(FORMAT_KEY, version.to_be_bytes(), &sync_writes())
        .map_err(|e| StoreError(format!("writing format version: {e}")))
}

/// The version of the timelock binary that last opened the data for writing, if recorded.
pub fn read_server_version(db: &DB) -> Result<Option<String>, StoreError> {
    db.get(SERVER_VERSION_KEY)
        .map_err(|e| StoreError(format!("reading server version: {e}")))
        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Records `version` as the binary that writes the data (synced).
pub fn write_server_version(db: &DB, version: &str) -> Result<(), StoreError> {
    db.put_opt(SERVER_VERSION_KEY, version.as_bytes(), &sync_writes())
        .map_err(|e| StoreError(format!("writing server version: {e}")))
}

/// The record a namespace created from now on starts from (see the module docs), if one was set
/// by a restore.
pub fn read_new_namespace_record(db: &DB) -> Result<Option<NamespaceRecord>, StoreError> {
    match db
        .get(NEW_NAMESPACE_KEY)
        .map_err(|e| StoreError(format!("reading the new-namespace floor: {e}")))?
    {
        None => Ok(None),
        Some(bytes) => codec::decode(&bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("new-namespace floor: {e}"))),
    }
}

/// Sets the record every namespace created from now on starts from (synced).
pub fn write_new_namespace_record(db: &DB, record: NamespaceRecord) -> Result<(), StoreError> {
    db.put_opt(NEW_NAMESPACE_KEY, codec::encode(record), &sync_writes())
        .map_err(|e| StoreError(format!("writing the new-namespace floor: {e}")))
}

/// Every namespace record, in name order.
pub fn read_records(db: &DB) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
    let mut out = Vec::new();
    let mode = IteratorMode::From(NAMESPACE_PREFIX, rocksdb::Direction::Forward);
    for item in db.iterator(mode) {
        let (key, value) = item.map_err(|e| StoreError(format!("reading bounds: {e}")))?;
        let Some(name) = key.strip_prefix(NAMESPACE_PREFIX) else {
            break;
        };
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| StoreError("namespace key is not UTF-8".into()))?;
        let record =
            codec::decode(&value).map_err(|e| StoreError(format!("namespace {name:?}: {e}")))?;
        out.push((name, record));
    }
    Ok(out)
}

/// Writes one namespace record (synced).
pub fn write_record(db: &DB, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
    db.put_opt(
        namespace_key(namespace),
        codec::encode(record),
        &sync_writes(),
    )
    .map_err(|e| StoreError(format!("synced RocksDB write failed: {e}")))
}

/// A consistent point-in-time copy of `db` in `target` (which must not exist): hard links where
/// possible, after flushing the memtable.
pub fn checkpoint(db: &DB, target: &Path) -> Result<(), StoreError> {
    rocksdb::checkpoint::Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint(target))
        .map_err(|e| {
            StoreError(format!(
                "RocksDB checkpoint to {} failed: {e}",
                target.display()
            ))
        })
}

fn namespace_key(namespace: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(NAMESPACE_PREFIX.len() + namespace.len());
    key.extend_from_slice(NAMESPACE_PREFIX);
    key.extend_from_slice(namespace.as_bytes());
    key
}

impl RocksStore {
    /// Opens (creating if needed) the data directory. Fails with a clear message if another
    /// process holds it or if it was written by a newer, unknown format. A data dir in an older
    /// format is upgraded, after `before_upgrade` (a pre-upgrade backup) succeeded.
    ///
    /// Every bound write first checks that the data dir's file system has at least
    /// `min_free_bytes` available and refuses (fail-stop) if not: RocksDB as packaged by Debian is
    /// built with assertions on, and a WAL write that hits `ENOSPC` aborts the whole process
    /// instead of returning an error. Refusing while a margin is left turns a filling disk into a
    /// clean, per-namespace fail-stop (503, readiness red) instead of a crash.
    pub fn open(
        path: &Path,
        min_free_bytes: u64,
        before_upgrade: Option<UpgradeHook>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", path.display())))?;
        // Opening writes (a new log, a manifest, the recovered log flushed to a table), and a
        // write that hits ENOSPC aborts inside Debian's RocksDB (assertions on): a full disk
        // must be refused here, with a reason an operator can act on, not become a crash loop.
        check_free_space_to_open(path, min_free_bytes)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(5);
        let db = DB::open(&opts, path).map_err(|e| open_error(path, e))?;
        match read_format_version(&db)? {
            Some(version) if version > FORMAT_VERSION => {
                return Err(StoreError(format!(
                    "data dir {} has on-disk format {version}, newer than this binary's {FORMAT_VERSION}; run the newer timelock version, or roll back by restoring the pre-upgrade backup (timelock backup list)",
                    path.display()
                )));
            }
            Some(version) if version < FORMAT_VERSION => {
                if let Some(hook) = before_upgrade {
                    hook(&db, version)?;
                }
                // Format 0 -> 1 changes no record; the version key is all there is to migrate.
                write_format_version(&db, FORMAT_VERSION)?;
                tracing::warn!(
                    from = version,
                    to = FORMAT_VERSION,
                    "upgraded the data dir's on-disk format"
                );
            }
            Some(_) => {}
            None => write_format_version(&db, FORMAT_VERSION)?,
        }
        if read_server_version(&db)?.as_deref() != Some(crate::VERSION) {
            write_server_version(&db, crate::VERSION)?;
        }
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            min_free_bytes,
        })
    }

    /// The open database (for online backups).
    pub fn db(&self) -> &DB {
        &self.db
    }
}

#[async_trait]
impl BoundStore for RocksStore {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read_records(&db))
            .await
            .map_err(|e| StoreError(format!("bound reader task failed: {e}")))?
    }

    async fn new_namespace_record(&self) -> Result<NamespaceRecord, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read_new_namespace_record(&db))
            .await
            .map_err(|e| StoreError(format!("bound reader task failed: {e}")))?
            .map(Option::unwrap_or_default)
    }

    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
        let db = self.db.clone();
        let namespace = namespace.to_string();
        let path = self.path.clone();
        let min_free = self.min_free_bytes;
        tokio::task::spawn_blocking(move || {
            check_free_space(&path, min_free)?;
            write_record(&db, &namespace, record)
        })
        .await
        .map_err(|e| StoreError(format!("bound writer task failed: {e}")))?
    }

    fn checkpoint(&self, target: &Path) -> Result<(), StoreError> {
        checkpoint(&self.db, target)
    }

    fn describe(&self) -> String {
        format!("rocksdb at {}", self.path.display())
    }
}

/// Refuses when the file system holding `path` has fewer than `min_free` bytes available to us.
fn check_free_space(path: &Path, min_free: u64) -> Result<(), StoreError> {
    free_space_at_least(path, min_free, |available| {
        format!(
            "file system of {} has only {available} bytes available (storage.min_free_bytes = {min_free}); refusing to write the bound",
            path.display()
        )
    })
}

/// Refuses to open the data dir at `path` when its file system has fewer than `min_free`
/// bytes available (see [`RocksStore::open`]).
fn check_free_space_to_open(path: &Path, min_free: u64) -> Result<(), StoreError> {
    free_space_at_least(path, min_free, |available| {
        format!(
            "not starting: the file system holding data dir {} has {available} bytes available, below storage.min_free_bytes = {min_free}; opening the data dir on a full disk could crash inside RocksDB. Free space on that file system (or move the data dir to a larger one), then start again",
            path.display()
        )
    })
}

/// Ok when `min_free` is 0 or at least that many bytes are available at `path`; otherwise the
/// error `refusal` words for the bytes available.
fn free_space_at_least(
    path: &Path,
    min_free: u64,
    refusal: impl FnOnce(u64) -> String,
) -> Result<(), StoreError> {
    if min_free == 0 {
        return Ok(());
    }
    let available = available_bytes(path).map_err(|e| {
        StoreError(format!(
            "cannot check free space of {}: {e}",
            path.display()
        ))
    })?;
    if available < min_free {
        return Err(StoreError(refusal(available)));
    }
    Ok(())
}

fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and stat points to writable memory of
    // the right type; statvfs initialises it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}
