//! The compute device and thread count, chosen honestly.

use tch::Device;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("--device {0:?} is not one of cpu, cuda")]
    UnknownDevice(String),
    #[error(
        "--device cuda was asked for but libtorch sees no CUDA device (this build: cuda available = false)"
    )]
    CudaUnavailable,
    #[error("--threads must be at least 1")]
    ZeroThreads,
}

/// Parses `--device`: `cpu`, or `cuda` only when libtorch reports a CUDA device.
pub fn device_from_flag(flag: &str) -> Result<Device, RuntimeError> {
    match flag {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(RuntimeError::CudaUnavailable),
        other => Err(RuntimeError::UnknownDevice(other.to_owned())),
    }
}

/// Sets libtorch's intra-op thread count (results are reproducible for a fixed count).
pub fn set_threads(threads: usize) -> Result<(), RuntimeError> {
    if threads == 0 {
        return Err(RuntimeError::ZeroThreads);
    }
    tch::set_num_threads(threads as i32);
    Ok(())
}

/// The default thread count: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
