//! Safetensors files read header first: sizes checked before the data is read.
//!
//! A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each
//! tensor's `dtype`, `shape` and `data_offsets` [begin, end) in the data that follows, then the
//! data. candle's reader reads the whole file and only then looks at the header, so a sparse
//! file of terabytes (or a FIFO, which never ends) was read before any check. Here the header
//! is read alone, every tensor's byte range is checked against its dtype and shape, the data
//! section against the file's length, and the total against [`MAX_WEIGHTS_BYTES`]; only then
//! is the file read, through the crate's bounded reader, and handed to candle.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The largest header accepted (the safetensors format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The most bytes of tensor data one weights file may hold (16 GiB: eight VGG-16s in f32).
pub const MAX_WEIGHTS_BYTES: u64 = 16 << 30;

/// The bytes one element of a safetensors dtype takes, None for a dtype candle's reader will
/// name in its own error.
fn width(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// The length of the data section the header of `path` declares, every tensor's range
/// checked against its shape and the file's `size`.
fn declared_data(path: &Path, size: u64) -> Result<u64> {
    let bad = |m: String| Error::data(path, format!("not a valid safetensors file: {m}"));
    let len = crate::data::read_range(path, 0, 8.min(size))?;
    let n = <[u8; 8]>::try_from(len.as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| bad(format!("{size} bytes, shorter than the 8-byte header length")))?;
    if n > MAX_HEADER_BYTES || n > size - 8 {
        return Err(bad(format!("a header of {n} bytes in a file of {size}")));
    }
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&crate::data::read_range(path, 8, n)?)
            .map_err(|e| bad(format!("header: {e}")))?;
    let mut end = 0u64;
    for (key, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let field = |f: &str| info.get(f).ok_or_else(|| bad(format!("tensor `{key}` has no `{f}`")));
        let numbers = |f: &str| -> Result<Vec<u64>> {
            field(f)?
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_u64()).collect::<Option<Vec<u64>>>())
                .ok_or_else(|| bad(format!("tensor `{key}`: `{f}` is not a list of sizes")))
        };
        let (shape, offsets) = (numbers("shape")?, numbers("data_offsets")?);
        let &[begin, stop] = offsets.as_slice() else {
            return Err(bad(format!("tensor `{key}`: `data_offsets` {offsets:?} is not [begin, end]")));
        };
        let dtype = field("dtype")?.as_str().unwrap_or_default();
        let need = width(dtype).and_then(|w| shape.iter().try_fold(w, |a, &d| a.checked_mul(d)));
        if let Some(need) = need {
            if stop.checked_sub(begin) != Some(need) {
                return Err(bad(format!(
                    "tensor `{key}` ({dtype} {shape:?}, {need} bytes) has data_offsets {begin}..{stop}"
                )));
            }
        }
        end = end.max(stop);
    }
    let data = size - 8 - n;
    if end != data {
        return Err(bad(format!("its tensors take {end} bytes, but {data} bytes follow the header")));
    }
    Ok(end)
}

/// The tensors of the safetensors file `path` on `device` (see the module docs).
pub fn read(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    // read_range refuses folders, FIFOs and devices before opening them for reading.
    crate::data::read_range(path, 0, 0)?;
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let data = declared_data(path, size)?;
    if data > MAX_WEIGHTS_BYTES {
        return Err(Error::data(
            path,
            format!(
                "holds {data} bytes of tensors, more than the {MAX_WEIGHTS_BYTES} a weights file may have"
            ),
        ));
    }
    let bytes = crate::data::read_range(path, 0, size)?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::data(path, format!("cannot read as safetensors: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        let f = std::fs::File::create(&p).unwrap();
        std::io::Write::write_all(&mut &f, &bytes).unwrap();
        // Sparse: the data section costs no disk.
        f.set_len(bytes.len() as u64 + data).unwrap();
        (dir, p)
    }

    #[test]
    fn sizes_are_checked_before_the_data_is_read() {
        // A sparse 1 TiB data section behind a header whose one tensor needs 8 bytes: refused
        // from the header, nothing of the data read (it was read whole before).
        let (_d, p) = file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 1 << 40);
        let msg = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("take 8 bytes, but 1099511627776 bytes follow"), "{msg}");
        // A tensor whose range does not match its shape.
        let (_d, p) = file(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8);
        let msg = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("tensor `w` (F32 [3], 12 bytes)"), "{msg}");
        // A consistent header declaring more than the limit: refused before reading.
        let big = format!(
            r#"{{"w":{{"dtype":"U8","shape":[{0}],"data_offsets":[0,{0}]}}}}"#,
            MAX_WEIGHTS_BYTES + 1
        );
        let (_d, p) = file(&big, MAX_WEIGHTS_BYTES + 1);
        let msg = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("more than the"), "{msg}");
        // A consistent small file reads.
        let (_d, p) = file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8);
        assert_eq!(read(&p, &Device::Cpu).unwrap()["w"].to_vec1::<f32>().unwrap(), [0.0, 0.0]);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let status = std::process::Command::new("mkfifo").arg(&p).status().unwrap();
        assert!(status.success());
        let err = read(&p, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
