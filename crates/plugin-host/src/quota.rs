//! Disk quotas of writable granted directories. Each directory has one
//! budget, shared by every call writing to it: measured from the disk when
//! a call arrives while no other writes there, then charged for what calls
//! write — by the 4 KiB blocks a write touches, a block for each file or
//! directory created or linked, and the blocks a file grows by. A full
//! directory is given read-only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The unit of disk use charged.
pub(crate) const BLOCK: u64 = 4096;
/// Most entries [`disk_usage`] reads; a directory with more counts as full.
const USAGE_ENTRIES: usize = 100_000;

/// What one writable directory may still take.
#[derive(Default)]
pub(crate) struct DirQuota(Mutex<Budget>);

#[derive(Default)]
struct Budget {
    /// Bytes left.
    left: u64,
    /// Calls writing against it now.
    active: usize,
}

/// The budget of every writable granted directory the host has seen.
#[derive(Default)]
pub(crate) struct Quotas(Mutex<HashMap<PathBuf, Arc<DirQuota>>>);

impl Quotas {
    /// Joins `dir`'s budget for one call (`quota` bytes in all): the first
    /// call to arrive while none writes there measures the directory. None
    /// if it is full.
    pub(crate) fn join(&self, dir: &Path, quota: u64) -> Option<Arc<DirQuota>> {
        let shared = {
            let mut quotas = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(quotas.entry(dir.to_path_buf()).or_default())
        };
        let mut budget = shared.0.lock().unwrap_or_else(|e| e.into_inner());
        if budget.active == 0 {
            budget.left = quota.saturating_sub(disk_usage(dir));
        }
        if budget.left == 0 {
            return None;
        }
        budget.active += 1;
        drop(budget);
        Some(shared)
    }
}

/// The budgets one call writes against; it leaves them when dropped.
#[derive(Default)]
pub(crate) struct Allowance(Vec<Arc<DirQuota>>);

impl Allowance {
    /// An allowance over `quotas` (each joined once for this call).
    pub(crate) fn new(mut quotas: Vec<Arc<DirQuota>>) -> Self {
        // One lock order for every call: by address.
        quotas.sort_by_key(|quota| Arc::as_ptr(quota) as usize);
        Self(quotas)
    }

    /// Takes `bytes` from every budget (a call's writes may land in any of
    /// its writable directories); false, and nothing taken, if one has less.
    pub(crate) fn charge(&self, bytes: u64) -> bool {
        let mut budgets: Vec<_> =
            self.0.iter().map(|quota| quota.0.lock().unwrap_or_else(|e| e.into_inner())).collect();
        if budgets.iter().any(|budget| budget.left < bytes) {
            return false;
        }
        for budget in &mut budgets {
            budget.left -= bytes;
        }
        true
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        for quota in &self.0 {
            quota.0.lock().unwrap_or_else(|e| e.into_inner()).active -= 1;
        }
    }
}

/// Bytes of disk a write of `len` bytes at `offset` may take: every block
/// it touches.
pub(crate) fn blocks(offset: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (offset.saturating_add(len).div_ceil(BLOCK) - offset / BLOCK).saturating_mul(BLOCK)
}

/// Bytes of disk the files under `dir` take (symlinks are not followed).
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (mut used, mut seen, mut pending) = (0u64, 0usize, vec![dir.to_path_buf()]);
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            seen += 1;
            if seen > USAGE_ENTRIES {
                return u64::MAX;
            }
            let Ok(meta) = entry.metadata() else { continue };
            used = used.saturating_add(meta.blocks().saturating_mul(512).max(BLOCK));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    used
}

/// A file's output stream, charged for the blocks its writes reach past
/// those already charged.
pub(crate) struct Counted {
    pub(crate) inner: Box<dyn OutputStream>,
    pub(crate) allowance: Arc<Allowance>,
    /// Where the next write lands.
    pub(crate) position: u64,
    /// The end of the blocks charged (or already there).
    pub(crate) charged_to: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Counted {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Counted {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        let end = self.position.saturating_add(bytes.len() as u64);
        let reach = end.div_ceil(BLOCK).saturating_mul(BLOCK);
        if reach > self.charged_to {
            if !self.allowance.charge(reach - self.charged_to) {
                return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                    "the granted directory's quota is used up"
                )));
            }
            self.charged_to = reach;
        }
        self.position = end;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_charged_by_the_blocks_they_touch_against_a_shared_budget() {
        assert_eq!((blocks(0, 0), blocks(0, 1), blocks(4095, 2), blocks(8192, 4096)), (0, 4096, 8192, 4096));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 8192]).unwrap();
        let quotas = Quotas::default();
        let quota = 64 << 10;
        let first = Allowance::new(vec![quotas.join(dir.path(), quota).unwrap()]);
        let used = disk_usage(dir.path());
        assert!(used >= 8192, "{used}");
        // A second call shares what is left; it does not measure again.
        let second = Allowance::new(vec![quotas.join(dir.path(), quota).unwrap()]);
        assert!(first.charge(quota - used - BLOCK));
        assert!(!second.charge(2 * BLOCK), "only one block is left, for both");
        assert!(second.charge(BLOCK));
        assert!(!first.charge(1));
        drop((first, second));
        // With no call writing, the next one measures the disk again: full.
        std::fs::write(dir.path().join("b"), vec![1u8; 64 << 10]).unwrap();
        assert!(quotas.join(dir.path(), quota).is_none());
    }
}
