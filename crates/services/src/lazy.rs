//! One open/retry policy for every part that loads in the background:
//! models, the retrieval indexes, and the features still to come.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// How long a failed load answers for the next attempts before one tries
/// again (a model file fetched since, a Qdrant server back up).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

type Loader<T, I> = Arc<dyn Fn(I) -> Result<T, String> + Send + Sync>;

/// A value a blocking loader produces on first use, shared by every caller.
///
/// A success is kept for good. A failure is kept, with its reason, for
/// [`RETRY_AFTER`]: callers in that window (and those queued behind the
/// failed attempt) get the reason at once, and the first caller after it
/// loads again.
///
/// `I` is what each attempt is given (an already-loaded embedder, say).
pub struct Lazy<T, I = ()> {
    cell: OnceCell<T>,
    load: Loader<T, I>,
    failed: Mutex<Option<(Instant, String)>>,
}

/// Where a [`Lazy`] stands, for `/healthz` and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// Not loaded yet (or loading now).
    Pending,
    /// Loaded.
    Ready,
    /// The last attempt failed; the next request after the retry delay
    /// tries again.
    Failed(String),
}

impl<T: Send + Sync + 'static> Lazy<T> {
    /// A value that `load` (blocking) produces on first use.
    pub fn new(load: impl Fn() -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self::with_input(move |()| load())
    }

    /// The value, loading it on the blocking pool when it is not loaded and
    /// no attempt failed within [`RETRY_AFTER`].
    pub async fn get(&self) -> Result<&T, String> {
        self.get_with(()).await
    }
}

impl<T: Send + Sync + 'static, I: Send + 'static> Lazy<T, I> {
    /// A value that `load` (blocking) produces from an input on first use.
    pub fn with_input(load: impl Fn(I) -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self { cell: OnceCell::new(), load: Arc::new(load), failed: Mutex::new(None) }
    }

    fn recent_failure(&self) -> Option<String> {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.as_ref().filter(|(at, _)| at.elapsed() < RETRY_AFTER).map(|(_, reason)| reason.clone())
    }

    /// The value, loading it from `input` on the blocking pool when it is
    /// not loaded and no attempt failed within [`RETRY_AFTER`].
    pub async fn get_with(&self, input: I) -> Result<&T, String> {
        if let Some(value) = self.cell.get() {
            return Ok(value);
        }
        if let Some(reason) = self.recent_failure() {
            return Err(reason);
        }
        self.cell
            .get_or_try_init(|| async move {
                // Queued behind an attempt that just failed: share its answer.
                if let Some(reason) = self.recent_failure() {
                    return Err(reason);
                }
                let load = self.load.clone();
                let loaded = tokio::task::spawn_blocking(move || load(input))
                    .await
                    .unwrap_or_else(|err| Err(format!("loading panicked: {err}")));
                if let Err(reason) = &loaded {
                    *self.failed.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((Instant::now(), reason.clone()));
                }
                loaded
            })
            .await
    }

    /// The value if it has loaded.
    pub fn loaded(&self) -> Option<&T> {
        self.cell.get()
    }

    /// Where it stands.
    pub fn state(&self) -> LoadState {
        if self.cell.initialized() {
            return LoadState::Ready;
        }
        match &*self.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((_, reason)) => LoadState::Failed(reason.clone()),
            None => LoadState::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_failure_is_shared_then_retried_and_a_success_is_kept() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let lazy = Lazy::new(move || match counted.fetch_add(1, Ordering::SeqCst) {
            0 => Err("the server is down".to_owned()),
            n => Ok(n),
        });
        assert_eq!(lazy.state(), LoadState::Pending);
        assert_eq!(lazy.get().await, Err("the server is down".to_owned()));
        // Within the retry delay: the same answer, no second attempt.
        assert_eq!(lazy.get().await, Err("the server is down".to_owned()));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(lazy.state(), LoadState::Failed("the server is down".to_owned()));
        // Past it: one more attempt, which succeeds and is kept.
        {
            let mut failed = lazy.failed.lock().unwrap();
            let at = &mut failed.as_mut().unwrap().0;
            *at = at.checked_sub(RETRY_AFTER).expect("the clock is past the retry delay");
        }
        assert_eq!(lazy.get().await, Ok(&1));
        assert_eq!(lazy.get().await, Ok(&1));
        assert_eq!((attempts.load(Ordering::SeqCst), lazy.state()), (2, LoadState::Ready));
    }
}
