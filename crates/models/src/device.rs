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
