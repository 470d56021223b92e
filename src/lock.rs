//! One exclusive lock per output folder, so two runs never write into the same study.
//!
//! `run` (fresh, resumed or `--force`) and `merge` hold [`OutLock`] on their folder for as long
//! as they may write there. It is an operating-system file lock (`flock` on Unix, `LockFileEx`
//! on Windows) on `<folder>/.lock`: the kernel releases it when the process ends, however it
//! ends, so a run killed with `kill -9` leaves no stale lock behind and the next run simply
//! takes it. The holder writes its process id into the file so that a refused run can say who
//! holds the folder. The file itself stays (removing it would race with a process that has
//! just opened it); only the lock on it matters. A `.lock` that is not such a file (a link, a
//! folder, or content other than a process id) is someone else's: it is refused, never
//! truncated.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on an output folder, held until dropped (or the process dies).
#[derive(Debug)]
pub struct OutLock {
    /// The open, locked file; closing it releases the lock.
    _file: File,
    /// The folder it guards.
    dir: PathBuf,
}

impl OutLock {
    /// Creates `dir` if needed and takes its lock without waiting.
    ///
    /// Fails with [`Error::Locked`] (naming the holder's process id when it has written it)
    /// if another process holds it.
    pub fn acquire(dir: &Path) -> Result<OutLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let foreign = || {
            Error::Output {
            path: path.clone(),
            message: "this is not a lock file fragility wrote (a file holding a process id); fragility never overwrites files it did not write: choose another output folder, or move it away".into(),
        }
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_file() => return Err(foreign()),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut held = String::new();
        // Not a process id (or empty, while a holder writes it): not ours.
        if std::io::Read::read_to_string(&mut file, &mut held).is_err()
            || !held.trim().bytes().all(|b| b.is_ascii_digit())
        {
            return Err(foreign());
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder may not have written its pid yet: then it is simply unknown.
                return Err(Error::Locked { dir: dir.to_path_buf(), holder: held.trim().parse().ok() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        let write = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(pid.as_bytes())?;
            file.flush()
        })();
        write.map_err(|e| Error::io(&path, e))?;
        Ok(OutLock { _file: file, dir: dir.to_path_buf() })
    }

    /// Fails with [`Error::Locked`] if another process holds `dir`'s lock; creates and
    /// changes nothing (for checks that must come before anything is written).
    pub fn check_free(dir: &Path) -> Result<()> {
        let path = dir.join(LOCK_FILE);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        let Ok(mut file) = File::open(&path) else { return Ok(()) };
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = std::io::Read::read_to_string(&mut file, &mut held);
                Err(Error::Locked { dir: dir.to_path_buf(), holder: held.trim().parse().ok() })
            }
            // Free (the lock taken here goes with the file), or not lockable: `acquire` says why.
            _ => Ok(()),
        }
    }

    /// The folder this lock guards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = OutLock::acquire(&out).unwrap();
        // A second open file description conflicts even within one process (flock semantics).
        match OutLock::acquire(&out) {
            Err(Error::Locked { dir, holder }) => {
                assert_eq!(dir, out);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = OutLock::acquire(&out).unwrap();
        assert_eq!(again.dir(), out);
        assert_eq!(std::fs::read_to_string(out.join(LOCK_FILE)).unwrap(), std::process::id().to_string());
    }

    #[test]
    fn a_lock_file_someone_else_wrote_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), b"my notes").unwrap();
        let err = OutLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err:?}");
        assert_eq!(std::fs::read(dir.path().join(LOCK_FILE)).unwrap(), b"my notes");
    }
}
