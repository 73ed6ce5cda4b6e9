//! Host work a call may wait on that can block for long (a DNS lookup, the
//! daemon's memory): run on a thread of its own and waited for only until
//! the call's deadline, so the call's wall budget holds. A late thread
//! finishes on its own and its answer is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Such threads alive at once, over every call: past it, work is refused
/// rather than queued (late threads cannot pile up without bound).
pub(crate) const THREADS: usize = 32;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// One live offload thread; counted down when it ends, however it ends.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `work` off the calling thread and waits for it until `deadline`.
/// The error names `what` and says why (the deadline, or the host busy).
pub(crate) fn until<T: Send + 'static>(
    deadline: Instant,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    if Instant::now() >= deadline {
        return Err(format!("{what}: the call's wall budget is spent"));
    }
    if LIVE.fetch_add(1, Ordering::AcqRel) >= THREADS {
        drop(Live);
        return Err(format!("{what}: the host is busy ({THREADS} slow host tasks in flight)"));
    }
    let live = Live;
    let (answer, answered) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new().name("plugin-offload".into()).spawn(move || {
        let _live = live;
        let _ = answer.send(work());
    });
    if let Err(err) = spawned {
        // The closure (and the count it held) was dropped with the error.
        return Err(format!("{what}: cannot start a thread: {err}"));
    }
    answered
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| format!("{what} did not finish within the call's wall budget"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn work_past_the_deadline_is_abandoned_and_the_rest_answers() {
        assert_eq!(until(Instant::now() + Duration::from_secs(60), "sum", || 2 + 2), Ok(4));
        // Work that waits for a release that only comes after the deadline.
        let (release, wait) = mpsc::channel::<()>();
        let started = Instant::now();
        let err = until(Instant::now() + Duration::from_millis(50), "lookup", move || wait.recv()).unwrap_err();
        assert!(err.contains("lookup did not finish within the call's wall budget"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        drop(release);
    }
}
