//! Initializers stored outside the `.onnx` file (`external_data`): torch's newer exporter
//! writes the weights of any sizeable model to `model.onnx.data` beside the graph.
//!
//! Each tensor names its file (`location`, relative to the model's folder), an `offset` and a
//! `length` in bytes. Nothing is trusted: the location must stay inside the model's folder, the
//! length must be what the tensor's dimensions and type need, and the range must lie inside
//! the file; only then are exactly those bytes read.

use super::proto::TensorProto;
use super::tensor::{element_count, width};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Reads the external bytes of `t` (relative to the model's folder `dir`) into `t.raw`.
pub fn load(t: &mut TensorProto, dir: &Path) -> Result<(), String> {
    let get = |key: &str| t.external_data.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let location = get("location").ok_or("external data without a `location`")?;
    let rel = Path::new(location);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("external data location `{location}` leaves the model's folder"));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| v.parse::<u64>().map_err(|_| format!("external data `{key}` = `{v}` is not a number")))
            .transpose()
    };
    let (_, count) = element_count(t)?;
    let need = count.checked_mul(width(t.data_type)?).ok_or("the tensor's size overflows")? as u64;
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?.unwrap_or(need);
    if length != need {
        return Err(format!("external data of {length} bytes for a tensor of {need}"));
    }
    let path = dir.join(rel);
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        let end = offset.saturating_add(length);
        return Err(format!("{}: bytes {offset}..{end} lie beyond its {size} bytes", path.display()));
    }
    file.seek(SeekFrom::Start(offset)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut raw = vec![0u8; length as usize];
    file.read_exact(&mut raw).map_err(|e| format!("{}: {e}", path.display()))?;
    t.raw = raw;
    t.external = false;
    Ok(())
}
