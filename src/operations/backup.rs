//! Backups of the server's own state, and restoring them without ever handing out a timestamp
//! twice.
//!
//! A backup is a directory `<backups>/<name>/` holding `data/` — a RocksDB checkpoint, a
//! consistent point-in-time copy — and `metadata.json`: name, creation time (UTC), type
//! (`on-demand`, `pre-upgrade`, `scheduled`), the on-disk format version of the data and the
//! version of the server that wrote it (`unknown` if the data does not say: data written before
//! versions were recorded), every namespace with its durable bound and flags, and the size and
//! SHA-256 of every file. It is
//! written under a temporary name and renamed into place when complete, so a crash never leaves
//! a half backup that looks whole.
//!
//! Restoring is offline and destructive, so it is careful: it verifies checksums and refuses a
//! corrupted backup or one in a newer format; it refuses a data dir that a server holds; it moves
//! the current data aside rather than deleting it; and because a restored bound is older than
//! timestamps issued after the backup, every restored namespace comes up *fenced* — refusing
//! timestamps until fast-forwarded past the last timestamp the world may have seen — unless the
//! operator gives that timestamp at restore time.
//!
//! The restored data cannot know the namespaces created after the backup, so the fence (or the
//! operator's timestamp, as a floor) is also recorded for every namespace created later
//! (`meta/new_namespace`, see `storage::rocks`): a namespace absent from the backup comes up
//! fenced on first use, or starts past the floor, after any number of restarts. Where the data
//! dir being replaced can still be read, each of its namespaces' bounds is kept as a floor too.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::rocks::{self, FORMAT_VERSION};
use crate::storage::{NamespaceRecord, StoreError};

pub const METADATA_FILE: &str = "metadata.json";
/// `serverVersion` of data that does not record the server that wrote it.
pub const UNKNOWN_VERSION: &str = "unknown";
const DATA_DIR: &str = "data";

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupType {
    OnDemand,
    PreUpgrade,
    Scheduled,
}

impl BackupType {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupType::OnDemand => "on-demand",
            BackupType::PreUpgrade => "pre-upgrade",
            BackupType::Scheduled => "scheduled",
        }
    }
}

/// One namespace as it stood in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceEntry {
    pub name: String,
    pub bound: i64,
    pub invalidated: bool,
    pub fenced: bool,
}

/// One file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupMetadata {
    pub name: String,
    pub created_at: String,
    pub created_at_unix_ms: u64,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// The version of the server that wrote the data (`unknown` if the data does not record it).
    pub server_version: String,
    /// The on-disk format version of the data in the backup.
    pub format_version: u32,
    pub namespaces: Vec<NamespaceEntry>,
    pub files: Vec<FileEntry>,
}

impl BackupMetadata {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    // The I/O error is part of the message and deliberately not a `source`: error chains are
    // printed whole, and it would appear twice.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |error| BackupError::Io { context, error }
}

/// `2026-11-22T03:59:37Z` for a time since the Unix epoch (no time-zone database needed).
pub fn utc_rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let digest = hasher.finalize();
    Ok((total, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn fsync_file(path: &Path) -> Result<(), BackupError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", path.display())))
}

fn write_metadata(dir: &Path, metadata: &BackupMetadata) -> Result<(), BackupError> {
    let path = dir.join(METADATA_FILE);
    let mut f = fs::File::create(&path).map_err(io(format!("writing {}", path.display())))?;
    let text = serde_json::to_string_pretty(metadata).expect("metadata serialises");
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(format!("writing {}", path.display())))
}

/// Creates a backup of the open database `db` in `backups_dir`. `checkpoint` writes the
/// checkpoint (so online backups can go through the running store).
pub fn create(
    backups_dir: &Path,
    name: Option<&str>,
    backup_type: BackupType,
    checkpoint: impl FnOnce(&Path) -> Result<(), StoreError>,
) -> Result<BackupMetadata, BackupError> {
    fs::create_dir_all(backups_dir).map_err(io(format!("creating {}", backups_dir.display())))?;
    let now = SystemTime::now();
    let created_at = utc_rfc3339(now);
    let name = match name {
        Some(n) => {
            validate_backup_name(n)?;
            n.to_string()
        }
        None => unique_name(backups_dir, &created_at, backup_type),
    };
    let final_dir = backups_dir.join(&name);
    if final_dir.exists() {
        return Err(BackupError::Invalid(format!(
            "backup {name:?} already exists in {}",
            backups_dir.display()
        )));
    }
    let partial = backups_dir.join(format!(".{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .map_err(io(format!("removing stale {}", partial.display())))?;
    }
    fs::create_dir_all(&partial).map_err(io(format!("creating {}", partial.display())))?;
    let data = partial.join(DATA_DIR);
    checkpoint(&data)?;
    // The metadata describes the data as checkpointed, not this binary: a pre-upgrade backup
    // holds data in the old format, written by the old server.
    let (namespaces, format_version, server_version) = {
        let db = rocks::open_read_only(&data)?;
        (
            rocks::read_records(&db)?.into_iter().map(entry).collect(),
            rocks::read_format_version(&db)?.unwrap_or(0),
            rocks::read_server_version(&db)?.unwrap_or_else(|| UNKNOWN_VERSION.to_string()),
        )
    };
    let mut files = Vec::new();
    for path in list_files(&data)? {
        let (bytes, sha256) = sha256_file(&path)?;
        fsync_file(&path)?;
        let file_name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        files.push(FileEntry {
            path: format!("{DATA_DIR}/{file_name}"),
            bytes,
            sha256,
        });
    }
    fsync_dir(&data);
    let metadata = BackupMetadata {
        name: name.clone(),
        created_at,
        created_at_unix_ms: now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        backup_type,
        server_version,
        format_version,
        namespaces,
        files,
    };
    write_metadata(&partial, &metadata)?;
    fsync_dir(&partial);
    fs::rename(&partial, &final_dir)
        .map_err(io(format!("renaming {} into place", partial.display())))?;
    fsync_dir(backups_dir);
    tracing::info!(backup = %name, kind = backup_type.as_str(), namespaces = metadata.namespaces.len(), "backup created");
    Ok(metadata)
}

/// Creates a backup of a data dir that no server is running on.
pub fn create_offline(
    data_dir: &Path,
    backups_dir: &Path,
    name: Option<&str>,
    backup_type: BackupType,
) -> Result<BackupMetadata, BackupError> {
    if !data_dir.join("CURRENT").exists() {
        return Err(BackupError::Invalid(format!(
            "{} is not a timelock data dir",
            data_dir.display()
        )));
    }
    let db = rocks::open_existing(data_dir)?;
    create(backups_dir, name, backup_type, |target| {
        rocks::checkpoint(&db, target)
    })
}

fn entry((name, r): (String, NamespaceRecord)) -> NamespaceEntry {
    NamespaceEntry {
        name,
        bound: r.bound,
        invalidated: r.invalidated,
        fenced: r.fenced,
    }
}

pub fn validate_backup_name(name: &str) -> Result<(), BackupError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "invalid backup name {name:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

fn unique_name(dir: &Path, created_at: &str, backup_type: BackupType) -> String {
    let stamp: String = created_at
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let base = format!("{stamp}-{}", backup_type.as_str());
    let mut name = base.clone();
    let mut n = 1;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// Reads a backup's metadata.
pub fn show(backups_dir: &Path, name: &str) -> Result<BackupMetadata, BackupError> {
    validate_backup_name(name)?;
    let path = backups_dir.join(name).join(METADATA_FILE);
    let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BackupError::Invalid(format!(
            "no backup named {name:?} in {}",
            backups_dir.display()
        )),
        _ => BackupError::Io {
            context: format!("reading {}", path.display()),
            error: e,
        },
    })?;
    serde_json::from_str(&text)
        .map_err(|e| BackupError::Invalid(format!("{} is unreadable: {e}", path.display())))
}

/// Every complete backup in `backups_dir`, oldest first.
pub fn list(backups_dir: &Path) -> Result<Vec<BackupMetadata>, BackupError> {
    if !backups_dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in
        fs::read_dir(backups_dir).map_err(io(format!("listing {}", backups_dir.display())))?
    {
        let entry = entry.map_err(io(format!("listing {}", backups_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().join(METADATA_FILE).exists() {
            continue;
        }
        out.push(show(backups_dir, &name)?);
    }
    out.sort_by(|a, b| (a.created_at_unix_ms, &a.name).cmp(&(b.created_at_unix_ms, &b.name)));
    Ok(out)
}

/// Deletes the oldest `scheduled` backups beyond `keep`; returns the names deleted.
pub fn prune_scheduled(backups_dir: &Path, keep: usize) -> Result<Vec<String>, BackupError> {
    let scheduled: Vec<BackupMetadata> = list(backups_dir)?
        .into_iter()
        .filter(|b| b.backup_type == BackupType::Scheduled)
        .collect();
    let excess = scheduled.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for old in scheduled.into_iter().take(excess) {
        let dir = backups_dir.join(&old.name);
        fs::remove_dir_all(&dir).map_err(io(format!("deleting {}", dir.display())))?;
        deleted.push(old.name);
    }
    Ok(deleted)
}

/// The newest pre-upgrade backup, if any (what to roll back to after a failed upgrade).
pub fn latest_pre_upgrade(backups_dir: &Path) -> Option<BackupMetadata> {
    list(backups_dir)
        .ok()?
        .into_iter()
        .rev()
        .find(|b| b.backup_type == BackupType::PreUpgrade)
}

/// Checks every file's size and checksum, that no file is missing or extra, and that the
/// checkpoint opens read-only with readable records matching the metadata.
pub fn verify(backups_dir: &Path, name: &str) -> Result<BackupMetadata, BackupError> {
    let metadata = show(backups_dir, name)?;
    let dir = backups_dir.join(name);
    let mut problems = Vec::new();
    for file in &metadata.files {
        let path = dir.join(&file.path);
        match sha256_file(&path) {
            Ok((bytes, sha)) if bytes == file.bytes && sha == file.sha256 => {}
            Ok(_) => problems.push(format!("{} does not match its checksum", file.path)),
            Err(_) => problems.push(format!("{} is missing or unreadable", file.path)),
        }
    }
    let listed: Vec<String> = metadata.files.iter().map(|f| f.path.clone()).collect();
    for path in list_files(&dir.join(DATA_DIR))? {
        let rel = format!(
            "{DATA_DIR}/{}",
            path.file_name().expect("file name").to_string_lossy()
        );
        if !listed.contains(&rel) {
            problems.push(format!("{rel} is not listed in the metadata"));
        }
    }
    if problems.is_empty() {
        let db = rocks::open_read_only(&dir.join(DATA_DIR))?;
        let namespaces: Vec<NamespaceEntry> =
            rocks::read_records(&db)?.into_iter().map(entry).collect();
        if namespaces != metadata.namespaces {
            problems.push("the namespaces in the checkpoint differ from the metadata".to_string());
        }
    }
    if problems.is_empty() {
        Ok(metadata)
    } else {
        Err(BackupError::Invalid(format!(
            "backup {name:?} is corrupted: {}",
            problems.join("; ")
        )))
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    pub metadata: BackupMetadata,
    /// Where the previous data dir was moved, if there was one.
    pub moved_aside: Option<PathBuf>,
    /// True if every namespace came up fenced (no fast-forward given).
    pub fenced: bool,
    /// What the replaced data dir contributed.
    pub replaced_bounds: ReplacedBounds,
}

/// Whether the data dir being replaced gave floors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacedBounds {
    /// There was no data to replace.
    NoData,
    /// It could be read: the bounds of this many namespaces were kept as floors.
    Floors(usize),
    /// It could not be read (why); nothing was taken from it.
    Unreadable(String),
}

/// Largest `--fast-forward-to`: a namespace fast-forwarded there must still be able to reserve
/// and issue (see `timestamp::MAX_WINDOW`).
pub const MAX_RESTORE_FLOOR: i64 = i64::MAX - crate::timestamp::MAX_WINDOW;

/// Checks a restore's `--fast-forward-to`: a positive timestamp with room above it.
pub fn check_restore_floor(t: i64) -> Result<(), BackupError> {
    if t <= 0 {
        return Err(BackupError::Invalid(format!(
            "--fast-forward-to {t} is not a timestamp: give the last timestamp issued before the restore (positive), or leave it out to restore fenced; nothing was changed"
        )));
    }
    if t > MAX_RESTORE_FLOOR {
        return Err(BackupError::Invalid(format!(
            "--fast-forward-to {t} is too close to the largest timestamp (at most {MAX_RESTORE_FLOOR}); nothing was changed"
        )));
    }
    Ok(())
}

/// The records of the data dir about to be replaced, and its new-namespace record, if it can be
/// read. Fails only if a server holds it (the restore must not go on).
fn read_replaced(data_dir: &Path) -> Result<Option<ReplacedData>, BackupError> {
    if !data_dir.join("CURRENT").exists() {
        return Ok(None);
    }
    // Opened for writing so that RocksDB's LOCK refuses a data dir a server holds.
    let db = rocks::open_existing(data_dir).map_err(|e| {
        BackupError::Invalid(format!(
            "refusing to restore into {}: {e}; stop the server first",
            data_dir.display()
        ))
    })?;
    let read = rocks::read_records(&db).and_then(|records| {
        Ok(ReplacedData {
            records: records.into_iter().collect(),
            new_namespace: rocks::read_new_namespace_record(&db)?,
            unreadable: None,
        })
    });
    Ok(Some(match read {
        Ok(data) => data,
        Err(e) => ReplacedData {
            records: Default::default(),
            new_namespace: None,
            unreadable: Some(e.0),
        },
    }))
}

/// What the replaced data dir knew.
struct ReplacedData {
    records: std::collections::BTreeMap<String, NamespaceRecord>,
    new_namespace: Option<NamespaceRecord>,
    unreadable: Option<String>,
}

/// A name for the data dir moved aside that no earlier restore has taken.
fn aside_name(data_dir: &Path) -> PathBuf {
    let stamp: String = utc_rfc3339(SystemTime::now())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let file_name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let base = format!("{file_name}.before-restore-{stamp}");
    let mut aside = data_dir.with_file_name(&base);
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = data_dir.with_file_name(format!("{base}-{n}"));
    }
    aside
}

/// Restores backup `name` into `data_dir` (offline). With `fast_forward_to = Some(T)` (T
/// positive) every namespace's bound is raised past T and left unfenced, and T is the floor of
/// every namespace created later; otherwise every namespace, restored or created later, is
/// fenced. The bounds of the data dir replaced, if it can be read, are kept as floors.
/// Every refusal comes before anything is moved. `progress(done_bytes, total_bytes)` is called
/// as files are copied.
pub fn restore(
    backups_dir: &Path,
    name: &str,
    data_dir: &Path,
    fast_forward_to: Option<i64>,
    mut progress: impl FnMut(u64, u64),
) -> Result<RestoreReport, BackupError> {
    if let Some(t) = fast_forward_to {
        check_restore_floor(t)?;
    }
    let metadata = verify(backups_dir, name)?;
    if metadata.format_version > FORMAT_VERSION {
        return Err(BackupError::Invalid(format!(
            "backup {name:?} has on-disk format {}, newer than this binary's {FORMAT_VERSION}; restore it with the timelock version that made it ({})",
            metadata.format_version, metadata.server_version
        )));
    }
    // Refuses a data dir that a server holds (RocksDB's LOCK), before touching anything, and
    // reads what it still knows.
    let replaced = read_replaced(data_dir)?;
    let moved_aside = if data_dir.exists()
        && fs::read_dir(data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        let aside = aside_name(data_dir);
        fs::rename(data_dir, &aside).map_err(io(format!(
            "moving {} aside to {}",
            data_dir.display(),
            aside.display()
        )))?;
        Some(aside)
    } else {
        None
    };
    let staging = data_dir.with_file_name(format!(
        ".{}.restoring",
        data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into())
    ));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(io(format!("removing stale {}", staging.display())))?;
    }
    fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let total = metadata.total_bytes();
    let mut done = 0;
    for file in &metadata.files {
        let from = backups_dir.join(name).join(&file.path);
        let to = staging.join(Path::new(&file.path).file_name().expect("file name"));
        fs::copy(&from, &to).map_err(io(format!("copying {}", from.display())))?;
        fsync_file(&to)?;
        done += file.bytes;
        progress(done, total);
    }
    fsync_dir(&staging);
    let fenced = fast_forward_to.is_none();
    let floor = fast_forward_to.unwrap_or(0);
    {
        let db = rocks::open_existing(&staging)?;
        let mut records: std::collections::BTreeMap<String, NamespaceRecord> =
            rocks::read_records(&db)?.into_iter().collect();
        let mut new_namespace = rocks::read_new_namespace_record(&db)?.unwrap_or_default();
        if let Some(old) = &replaced {
            // What the replaced data knew is a floor: a namespace it held keeps at least its
            // bound (and its invalidation), one it held that the backup lacks is kept.
            for (ns, old_record) in &old.records {
                let record = records.entry(ns.clone()).or_default();
                record.bound = record.bound.max(old_record.bound);
                record.invalidated |= old_record.invalidated;
            }
            if let Some(old_new) = old.new_namespace {
                new_namespace.bound = new_namespace.bound.max(old_new.bound);
            }
        }
        for (ns, record) in &mut records {
            record.bound = record.bound.max(floor);
            record.fenced = fenced;
            rocks::write_record(&db, ns, *record)?;
        }
        rocks::write_new_namespace_record(
            &db,
            NamespaceRecord {
                bound: new_namespace.bound.max(floor),
                invalidated: false,
                fenced,
            },
        )?;
    }
    if data_dir.exists() {
        fs::remove_dir(data_dir).map_err(io(format!(
            "clearing {} (something was written into it during the restore; stop whatever writes there and run the restore again)",
            data_dir.display()
        )))?;
    }
    fs::rename(&staging, data_dir).map_err(io(format!(
        "moving the restored data into {}",
        data_dir.display()
    )))?;
    if let Some(parent) = data_dir.parent() {
        fsync_dir(parent);
    }
    let replaced_bounds = match replaced {
        None => ReplacedBounds::NoData,
        Some(ReplacedData {
            unreadable: Some(why),
            ..
        }) => ReplacedBounds::Unreadable(why),
        Some(old) => ReplacedBounds::Floors(old.records.len()),
    };
    Ok(RestoreReport {
        metadata,
        moved_aside,
        fenced,
        replaced_bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(utc_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_312_777);
        assert_eq!(utc_rfc3339(t), "2026-11-22T01:59:37Z"); // date -u -d @1795312777
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn backup_names() {
        assert!(validate_backup_name("20261122T033000Z-on-demand").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(validate_backup_name(bad).is_err(), "{bad:?}");
        }
    }
}
