//! Devices and process resources: resolving a device choice, naming a device, the process's
//! peak memory.

use candle_core::Device;

use crate::params::DeviceChoice;
use crate::{Error, Result};

/// Resolves a device choice; a clear error when CUDA is asked of a binary built without it.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Run(format!(
                    "device `{choice}` asked, but this runner was built without CUDA: rebuild with \
                     `cargo build --release --features cuda` (README, \"GPU\"), or use device = \"cpu\""
                )));
            }
            Device::new_cuda(n).map_err(|e| Error::Run(format!("cannot open CUDA device {n}: {e}")))
        }
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Describes a device in words.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

/// Resets the kernel's peak-RSS counter of this process (Linux), so each run reports its own:
/// first hands back the pages the allocator keeps for reuse ([`vgg::HugePageAlloc::release`]),
/// which an earlier run (of another size, say) left and this one may not need.
pub fn reset_peak_rss() {
    vgg::HugePageAlloc::release();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process, MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
