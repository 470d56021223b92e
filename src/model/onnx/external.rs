//! Initializers stored outside the `.onnx` file (`external_data`): torch's newer exporter
//! writes the weights of any sizeable model to `model.onnx.data` beside the graph.
//!
//! Each tensor names its file (`location`, relative to the model's folder), an `offset` and a
//! `length` in bytes. Nothing is trusted: the location must stay inside the model's folder
//! (checked on the canonical paths, so a symbolic link out of it is refused too), the file must
//! be a regular file (a FIFO would block forever), the length must be what the tensor's
//! dimensions and type need, the range must lie inside the file, and all external data
//! together may not exceed [`MAX_EXTERNAL_BYTES`]; only then are exactly those bytes read,
//! through the crate's bounded reader.

use super::proto::TensorProto;
use super::tensor::{element_count, width};
use std::path::{Component, Path};

/// The most bytes of external data one model may read (16 GiB: eight VGG-16s in f32).
pub const MAX_EXTERNAL_BYTES: u64 = 16 << 30;

/// Reads the external bytes of `t` (relative to the model's folder `dir`) into `t.raw`;
/// `budget` is what [`MAX_EXTERNAL_BYTES`] leaves, and shrinks by what is read.
pub fn load(t: &mut TensorProto, dir: &Path, budget: &mut u64) -> Result<(), String> {
    let get = |key: &str| t.external_data.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let location = get("location").ok_or("external data without a `location`")?;
    let rel = Path::new(location);
    let leaves = || format!("external data location `{location}` leaves the model's folder");
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(leaves());
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
    if length > *budget {
        return Err(format!(
            "external data of {length} bytes exceeds what is left of the {MAX_EXTERNAL_BYTES}-byte limit \
             for a model's external data"
        ));
    }
    let path = dir.join(rel);
    // A symbolic link (the file or a folder on the way) may point outside: compare the
    // canonical paths.
    let canonical = |p: &Path| p.canonicalize().map_err(|e| format!("{}: {e}", p.display()));
    let base = canonical(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?;
    if !canonical(&path)?.starts_with(&base) {
        return Err(leaves());
    }
    t.raw = crate::data::read_range(&path, offset, length).map_err(|e| e.to_string())?;
    *budget -= length;
    t.external = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(dims: &[i64], location: &str) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: 1,
            external: true,
            external_data: vec![("location".into(), location.into())],
            ..Default::default()
        }
    }

    #[test]
    fn external_data_beyond_the_budget_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        // A sparse file as large as the tensor declares (1 TiB of f32 = 2⁴⁰ bytes).
        let f = std::fs::File::create(dir.path().join("w.data")).unwrap();
        f.set_len(1 << 40).unwrap();
        let mut budget = MAX_EXTERNAL_BYTES;
        let e = load(&mut external(&[1 << 38], "w.data"), dir.path(), &mut budget).unwrap_err();
        assert!(e.contains("exceeds") && e.contains("limit"), "{e}");
        // Within the budget, it is read, and the budget shrinks.
        let mut t = external(&[4], "w.data");
        load(&mut t, dir.path(), &mut budget).unwrap();
        assert_eq!((t.raw.len(), budget), (16, MAX_EXTERNAL_BYTES - 16));
        // A declared size the file cannot hold.
        f.set_len(8).unwrap();
        let e = load(&mut external(&[4], "w.data"), dir.path(), &mut budget).unwrap_err();
        assert!(e.contains("lie beyond its 8 bytes"), "{e}");
    }
}
