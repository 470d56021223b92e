//! Atomic file output: write to a temporary file beside the target, then rename.
//!
//! A reader (or a user who kills the run) therefore sees either the previous file or the
//! complete new one, never a half-written file. Every output of the tool goes through here.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written (same folder, so the rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// The file a temporary name of [`temp_path`] (`.NAME.tmpPID`) stands for: NAME; `None` for
/// any other name. (A killed write leaves such a file; the manifest treats it as ours.)
pub(crate) fn temp_target(name: &str) -> Option<&str> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(".tmp")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !stem.is_empty()).then_some(stem)
}

/// Writes `path` atomically with the bytes that `fill` writes into the buffered file.
///
/// The parent folder is created if needed. On any error the temporary file is removed and the
/// target is left untouched.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        w.flush().map_err(|e| Error::io(&tmp, e))?;
        w.get_ref().sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_name_reads_back_as_its_target_and_nothing_else_does() {
        let tmp = temp_path(Path::new("out/plots/spearman.png"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_target(name), Some("spearman.png"));
        for other in ["spearman.png", ".spearman.png.tmp", ".spearman.png.tmpx1", "..tmp12", ".tmp12"] {
            assert_eq!(temp_target(other), None, "{other}");
        }
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_bytes(&p, b"old").unwrap();
        let r = write_with(&p, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::Invalid("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
