//! Devices and the dedicated CPU pool inference runs on.

use candle_core::Device;

use crate::ModelError;

/// Opens the device named in `models.device`: `cpu`, `cuda` or `cuda:N`.
pub fn open_device(spec: &str) -> Result<Device, ModelError> {
    let ordinal = match spec.split_once(':') {
        None if spec == "cpu" => return Ok(Device::Cpu),
        None if spec == "cuda" => 0,
        Some(("cuda", n)) => n.parse::<usize>().map_err(|_| ModelError::Device {
            device: spec.to_owned(),
            reason: "expected cuda:N with N a GPU index".into(),
        })?,
        _ => {
            return Err(ModelError::Device {
                device: spec.to_owned(),
                reason: "expected \"cpu\", \"cuda\" or \"cuda:N\"".into(),
            });
        }
    };
    cuda(spec, ordinal)
}

#[cfg(feature = "cuda")]
fn cuda(spec: &str, ordinal: usize) -> Result<Device, ModelError> {
    Device::new_cuda(ordinal).map_err(|err| ModelError::Device { device: spec.to_owned(), reason: err.to_string() })
}

#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str, _ordinal: usize) -> Result<Device, ModelError> {
    Err(ModelError::Device {
        device: spec.to_owned(),
        reason: "this engram was built without CUDA support; rebuild with `cargo build --features cuda` (see README)"
            .into(),
    })
}

/// A rayon pool of `threads` workers (0 = one per core) for CPU inference.
///
/// candle's CPU kernels spin-wait on their pool; sharing the global pool with
/// other work made decode 4-8x slower on two cores, so each model gets its own.
pub fn inference_pool(threads: usize, name: &'static str) -> Result<rayon::ThreadPool, ModelError> {
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { threads };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|err| ModelError::Inference(format!("cannot start the {name} thread pool: {err}")))
}

/// Bounds candle's own CPU pool (its quantized kernels run there, sized
/// once from `CANDLE_NUM_THREADS`) to `threads`, unless the variable is
/// already set. Only while this process has one thread: setting the
/// environment beside other threads is undefined behaviour, so it then
/// returns `false` and changes nothing.
pub fn limit_candle_threads(threads: usize) -> bool {
    if threads == 0 || std::env::var_os("CANDLE_NUM_THREADS").is_some() || !single_threaded() {
        return false;
    }
    // SAFETY: this process has exactly one thread (checked just above, and
    // only this thread could start another), so nothing reads the
    // environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", threads.to_string())
    };
    true
}

/// Whether the process has exactly one thread (Linux `/proc`; elsewhere
/// unknown, so `false`).
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| status.lines().any(|line| line.strip_prefix("Threads:").is_some_and(|n| n.trim() == "1")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_thread_variable_is_left_alone_beside_other_threads() {
        // The test harness runs this on a thread of its own.
        let before = std::env::var_os("CANDLE_NUM_THREADS");
        assert!(!super::single_threaded());
        assert!(!super::limit_candle_threads(3));
        assert_eq!(std::env::var_os("CANDLE_NUM_THREADS"), before);
    }
}
