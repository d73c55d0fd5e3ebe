//! File helpers: transparent gzip input and atomic output (temp file, then rename).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Reads a whole file into memory, decompressing it when it starts with the gzip magic bytes
/// (so `.gz` files need no flag and a mislabelled one still works).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::io(path, e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Writes `path` atomically: the content goes to a temporary file in the same directory,
/// which is flushed, synced and renamed over `path`, and the directory is synced. A crash
/// leaves either the old file or the new one, never a torn file. On error nothing is left
/// behind.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
{
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        {
            let mut w = BufWriter::new(&file);
            write(&mut w)?;
            w.flush()?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Writes `path` atomically through a writer that takes a path (a tensor library's `save`):
/// `write` fills the temporary sibling, which is then synced, renamed over `path`, and the
/// directory synced, exactly as [`write_atomic`]. On error nothing is left behind and the
/// previous `path` is intact; the error names `path`.
pub fn write_atomic_path<E: std::fmt::Display>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| sync_parent(path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Syncs the directory holding `path`, so that a rename into it survives a power loss.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// The temporary sibling used by [`write_atomic`]: `.tmp.<pid>.<name>` in the same directory
/// (hidden, and with the extension of `name`, which writers that pick a format by extension
/// need).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp.{}.{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        std::fs::write(&p, "old").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert!(!temp_path(&p).exists());
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_bytes(Path::new("/nonexistent/x.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/x.txt: "), "{err}");
    }
}
