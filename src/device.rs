//! Device selection: `"cpu"`, `"cuda"`, `"cuda:N"` or `"auto"` (CUDA when this build has it
//! and a GPU answers, else the CPU).

use crate::error::{Error, Result};
use candle_core::Device;

/// Resolves a device name from a config or the command line.
pub fn resolve(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Invalid(format!(
                "unknown device `{other}`: expected \"cpu\", \"cuda\", \"cuda:N\" or \"auto\""
            ))),
        },
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Invalid(format!(
            "device cuda:{ordinal} requested, but this binary was built without CUDA \
             (rebuild with `--features cuda`, or use device = \"cpu\" or \"auto\")"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::Invalid(format!("cannot open cuda:{ordinal}: {e}")))
}

/// A short name for a device, for metadata.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
