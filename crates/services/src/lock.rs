//! The data directory: created private, and locked so one process at a
//! time owns its journal and indexes.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::Error;

/// Creates `dir` (and its parents) with mode 0700 if it is missing.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| Error::Io {
        context: format!("cannot create the data directory {} (storage.data_dir)", dir.display()),
        source,
    })
}

/// An exclusive `flock` on `<data_dir>/engram.lock`, held for as long as
/// this value lives; the kernel releases it however the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock at `path` for `data_dir`, or says which process holds it.
    pub fn acquire(path: &Path, data_dir: &Path) -> Result<Self, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io(format!("cannot open the lock file {}", path.display())))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().parse::<u32>().ok();
                return Err(Error::Locked { data_dir: data_dir.to_path_buf(), pid: holder });
            }
            Err(err) => return Err(io(format!("cannot lock {}", path.display()))(err.into())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io(format!("cannot write the pid to the lock file {}", path.display())))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = dir.path().join("engram.lock");
        let held = DataDirLock::acquire(&lock_file, dir.path()).unwrap();
        let refused = DataDirLock::acquire(&lock_file, dir.path()).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert!(message.contains("stop it first"), "{message}");
        drop(held);
        DataDirLock::acquire(&lock_file, dir.path()).unwrap();
    }
}
