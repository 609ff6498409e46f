//! The embedded bound store: RocksDB in a local data directory.
//!
//! Layout (default column family, keys are ASCII):
//! * `meta/format_version` — the on-disk format version as a big-endian `u32`, written when the
//!   directory is created. A binary refuses to open a directory whose format it does not know.
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
const NAMESPACE_PREFIX: &[u8] = b"ns/";

pub struct RocksStore {
    db: Arc<DB>,
    path: PathBuf,
    min_free_bytes: u64,
}

impl RocksStore {
    /// Opens (creating if needed) the data directory. Fails with a clear message if another
    /// process holds it or if it was written by a newer, unknown format.
    ///
    /// Every bound write first checks that the data dir's file system has at least
    /// `min_free_bytes` available and refuses (fail-stop) if not: RocksDB as packaged by Debian is
    /// built with assertions on, and a WAL write that hits `ENOSPC` aborts the whole process
    /// instead of returning an error. Refusing while a margin is left turns a filling disk into a
    /// clean, per-namespace fail-stop (503, readiness red) instead of a crash.
    pub fn open(path: &Path, min_free_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create data dir {}: {e}", path.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(5);
        let db = DB::open(&opts, path).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") || text.contains("LOCK") {
                StoreError(format!(
                    "data dir {} is in use by another timelock process ({text})",
                    path.display()
                ))
            } else {
                StoreError(format!("cannot open RocksDB at {}: {text}", path.display()))
            }
        })?;
        let store = Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            min_free_bytes,
        };
        store.check_format()?;
        Ok(store)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let err = |e: rocksdb::Error| StoreError(format!("reading format version: {e}"));
        match self.db.get(FORMAT_KEY).map_err(err)? {
            Some(bytes) => {
                let version = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError("unreadable format version in data dir".into()))?;
                if version > FORMAT_VERSION {
                    return Err(StoreError(format!(
                        "data dir {} has on-disk format {version}, newer than this binary's {FORMAT_VERSION}; run the newer timelock version (or restore a backup taken before the upgrade)",
                        self.path.display()
                    )));
                }
                Ok(())
            }
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                self.db
                    .put_opt(FORMAT_KEY, FORMAT_VERSION.to_be_bytes(), &wo)
                    .map_err(|e| StoreError(format!("writing format version: {e}")))
            }
        }
    }

    fn namespace_key(namespace: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(NAMESPACE_PREFIX.len() + namespace.len());
        key.extend_from_slice(NAMESPACE_PREFIX);
        key.extend_from_slice(namespace.as_bytes());
        key
    }
}

#[async_trait]
impl BoundStore for RocksStore {
    async fn load_all(&self) -> Result<Vec<(String, NamespaceRecord)>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mode = IteratorMode::From(NAMESPACE_PREFIX, rocksdb::Direction::Forward);
            for item in db.iterator(mode) {
                let (key, value) = item.map_err(|e| StoreError(format!("reading bounds: {e}")))?;
                let Some(name) = key.strip_prefix(NAMESPACE_PREFIX) else {
                    break;
                };
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| StoreError("namespace key is not UTF-8".into()))?;
                let record = codec::decode(&value)
                    .map_err(|e| StoreError(format!("namespace {name:?}: {e}")))?;
                out.push((name, record));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError(format!("bound reader task failed: {e}")))?
    }

    async fn put(&self, namespace: &str, record: NamespaceRecord) -> Result<(), StoreError> {
        let db = self.db.clone();
        let key = Self::namespace_key(namespace);
        let path = self.path.clone();
        let min_free = self.min_free_bytes;
        tokio::task::spawn_blocking(move || {
            check_free_space(&path, min_free)?;
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.put_opt(key, codec::encode(record), &wo)
                .map_err(|e| StoreError(format!("synced RocksDB write failed: {e}")))
        })
        .await
        .map_err(|e| StoreError(format!("bound writer task failed: {e}")))?
    }

    fn describe(&self) -> String {
        format!("rocksdb at {}", self.path.display())
    }
}

/// Refuses when the file system holding `path` has fewer than `min_free` bytes available to us.
fn check_free_space(path: &Path, min_free: u64) -> Result<(), StoreError> {
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
        return Err(StoreError(format!(
            "file system of {} has only {available} bytes available (storage.min_free_bytes = {min_free}); refusing to write the bound",
            path.display()
        )));
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
