//! Operations: what an operator does to a server's data rather than what a client asks of it —
//! backups and restores of a data dir ([`backup`]) and the resumable migration of a namespace
//! between two servers ([`migrate`], the tool; [`migration`], its record, which servers keep
//! for the admin view).

pub mod backup;
pub mod migrate;
pub mod migration;

use std::path::Path;

use anyhow::Context;

/// Writes `contents` to `path` atomically and durably.
pub fn write_file_durably(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
