//! The compute device and thread count, chosen honestly, and how the process's heap
//! treats libtorch's large buffers.

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

/// The CPU's model name and its SIMD extensions that decide libtorch's kernels (from
/// /proc/cpuinfo; `None` elsewhere). Results are bitwise reproducible on one machine
/// for a fixed thread count; another CPU can pick other kernels and round differently.
pub fn cpu_description() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let flags = field("flags").unwrap_or_default();
    let simd: Vec<&str> = flags
        .split_whitespace()
        .filter(|f| ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"].contains(f))
        .collect();
    Some(format!("{} ({})", field("model name")?, simd.join(" ")))
}

/// The default thread count: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Buffers up to this size are served from glibc's heap rather than mapped afresh
/// (glibc's own ceiling for its adaptive threshold, `DEFAULT_MMAP_THRESHOLD_MAX` on
/// 64-bit systems); the largest buffers of the hot paths, an EOT step's activations,
/// are 20 MB.
pub const HEAP_SERVED_MAX_BYTES: i32 = 32 << 20;

/// Keeps the heap memory libtorch frees for its next allocation instead of handing it
/// back to the kernel. libtorch's CPU tensors come from glibc's `malloc`, which by
/// default trims the heap's free top and maps large buffers afresh: the white-box
/// stage's EOT steps (`[50, 784, 100]` weight draws, `[50, 1000, 100]` activations)
/// then spent a tenth of their cycles in the kernel, faulting in and zeroing pages of
/// memory they had just freed (perf, 2026-11-29: 10.3% of the samples in the kernel,
/// 0.2% with these settings). With trimming off and buffers up to
/// [`HEAP_SERVED_MAX_BYTES`] served from the heap, freed memory is reused; the
/// numbers computed are the same (only where the memory comes from changes), and the
/// process keeps its peak heap until it exits. Returns whether glibc took both
/// settings (elsewhere: false, and nothing changes).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation parameters, under glibc's own
        // lock. M_TRIM_THRESHOLD = -1 turns trimming off (mallopt(3)).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_SERVED_MAX_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// After [`super::keep_freed_memory`], a 16 MB buffer (an EOT step's size) comes
    /// from the heap, not a fresh mapping, and stays in the heap once freed. Without
    /// it glibc maps such a buffer (its threshold starts at 128 kB) and unmaps it at
    /// the free.
    #[test]
    fn a_freed_large_buffer_stays_in_the_heap() {
        const SIZE: usize = 16 << 20;
        assert!(super::keep_freed_memory());
        // SAFETY: mallinfo2 only reads glibc's statistics.
        let info = || unsafe { libc::mallinfo2() };
        let before = info();
        let buffer = vec![1u8; SIZE];
        let during = info();
        assert!(
            during.hblkhd < before.hblkhd + SIZE,
            "the buffer was mapped: {} -> {} bytes in mappings",
            before.hblkhd,
            during.hblkhd
        );
        drop(std::hint::black_box(buffer));
        let after = info();
        assert!(
            after.fordblks >= SIZE,
            "the freed buffer left the heap: {} bytes free in it",
            after.fordblks
        );
    }
}
