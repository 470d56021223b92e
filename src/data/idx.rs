//! The idx format of MNIST and Fashion-MNIST (LeCun et al.), already decompressed.
//!
//! Layout: a 4-byte magic `00 00 <dtype> <ndim>`, then `ndim` big-endian u32 dimensions, then
//! the values in row-major order. Only dtype `0x08` (unsigned byte) is accepted, the one every
//! image data set in this format uses. Images are `N×H×W` (ndim 3, read as `N×1×H×W`) or
//! `N×C×H×W` (ndim 4, as stored); pixels are byte/255. Labels are `N` bytes (ndim 1).
//!
//! Every check (magic, dtype, rank, header length, data length) fails with an error that names
//! the file, what was expected and what was found, because a truncated download is the usual
//! cause and the user should see that at once.

use super::{hex_prefix, ImageSet};
use crate::error::{Error, Result};
use std::path::Path;

/// The only dtype code we accept: unsigned byte.
const UBYTE: u8 = 0x08;

/// The parsed header: dimensions and where the data start.
struct Header {
    dims: Vec<usize>,
    data_start: usize,
}

/// Parses idx bytes as images: ndim 3 gives `N×1×H×W`, ndim 4 `N×C×H×W`; pixels = byte/255.
pub(crate) fn parse_images(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let header = parse_header(bytes, path, &[3, 4], "images")?;
    let (n, c, h, w) = match header.dims[..] {
        [n, h, w] => (n, 1, h, w),
        [n, c, h, w] => (n, c, h, w),
        // parse_header accepted only ndim 3 or 4.
        _ => return Err(Error::data(path, "internal: unexpected idx rank")),
    };
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::data(
            path,
            format!("idx image dimensions must be positive, found {:?}", header.dims),
        ));
    }
    let data = bytes[header.data_start..].iter().map(|&b| f32::from(b) / 255.0).collect();
    let sources = super::file_sources(path, n);
    Ok(ImageSet { data, n, c, h, w, labels: None, class_names: None, sources })
}

/// Parses idx bytes as labels: ndim 1, one unsigned byte per label.
pub(crate) fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<i64>> {
    let header = parse_header(bytes, path, &[1], "labels")?;
    Ok(bytes[header.data_start..].iter().map(|&b| i64::from(b)).collect())
}

/// Checks magic, dtype, rank (one of `ranks`) and that the data length equals the product of
/// the dimensions; `what` ("images", "labels") goes into the messages.
fn parse_header(bytes: &[u8], path: &Path, ranks: &[usize], what: &str) -> Result<Header> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::data(
            path,
            format!("bad idx magic: expected 00 00 <dtype> <ndim>, found {}", hex_prefix(bytes, 4)),
        ));
    }
    let (dtype, ndim) = (bytes[2], usize::from(bytes[3]));
    if dtype != UBYTE {
        return Err(Error::data(
            path,
            format!(
                "idx dtype 0x{dtype:02x} ({}) is not supported; expected 0x08 (unsigned byte)",
                dtype_name(dtype)
            ),
        ));
    }
    if !ranks.contains(&ndim) {
        return Err(Error::data(
            path,
            format!("idx {what} must have {} dimensions, found {ndim}", join_or(ranks)),
        ));
    }
    let data_start = 4 + 4 * ndim;
    if bytes.len() < data_start {
        return Err(Error::data(
            path,
            format!(
                "truncated idx header: {ndim} dimensions need {data_start} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..data_start]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::data(path, format!("idx dimensions {dims:?} overflow the address space")))?;
    let found = bytes.len() - data_start;
    if found != expected {
        let kind = if found < expected { "truncated" } else { "too long" };
        return Err(Error::data(
            path,
            format!(
                "{kind} idx data: dimensions {dims:?} need {expected} bytes after the header, \
                 found {found}"
            ),
        ));
    }
    Ok(Header { dims, data_start })
}

/// The total length (header and data) that the idx header at the start of `prefix` declares,
/// if `prefix` holds a whole, plausible header: what the bounded reader reads at most.
pub(crate) fn declared_len(prefix: &[u8]) -> Option<usize> {
    if prefix.len() < 4 || prefix[0] != 0 || prefix[1] != 0 {
        return None;
    }
    let data_start = 4 + 4 * usize::from(prefix[3]);
    let dims = prefix.get(4..data_start)?;
    let size = match prefix[2] {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => return None,
    };
    dims.chunks_exact(4)
        .try_fold(size, |acc: usize, d| {
            acc.checked_mul(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        })?
        .checked_add(data_start)
}

/// The idx dtype codes, for messages.
fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// `[3, 4]` → "3 or 4".
fn join_or(ranks: &[usize]) -> String {
    let s: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    s.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_images, load_labels};
    use std::io::Write;
    use std::path::PathBuf;

    /// An idx file: magic 00 00 08 ndim, big-endian dims, then `data`.
    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn err_msg(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    const P: &str = "some/dir/images-idx3-ubyte";

    #[test]
    fn ndim3_images_read_raw_and_gzipped() {
        // 2 images of 2×3; bytes 0, 51, 255 → 0, 0.2, 1.
        let pixels = [0u8, 51, 255, 0, 0, 0, 255, 255, 255, 51, 51, 51];
        let bytes = idx_bytes(&[2, 2, 3], &pixels);
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let gz = dir.path().join("compressed-without-suffix");
        std::fs::write(&raw, &bytes).unwrap();
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        for p in [raw, gz] {
            let s = load_images(&p).unwrap();
            assert_eq!((s.n, s.c, s.h, s.w), (2, 1, 2, 3));
            assert_eq!(s.image(0), &[0.0, 0.2, 1.0, 0.0, 0.0, 0.0]);
            assert_eq!(s.image(1), &[1.0, 1.0, 1.0, 0.2, 0.2, 0.2]);
            assert_eq!(s.labels, None);
        }
    }

    #[test]
    fn ndim4_images_keep_channels_as_stored() {
        // 1 image, 3 channels of 1×2: channel k holds [k, k+1] as bytes.
        let bytes = idx_bytes(&[1, 3, 1, 2], &[0, 1, 1, 2, 2, 3]);
        let s = parse_images(&bytes, Path::new(P)).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (1, 3, 1, 2));
        let expect: Vec<f32> = [0u8, 1, 1, 2, 2, 3].iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(s.data, expect);
    }

    #[test]
    fn labels_read_raw_and_gzipped() {
        let bytes = idx_bytes(&[4], &[9, 0, 3, 255]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.gz");
        std::fs::write(&p, gzip(&bytes)).unwrap();
        assert_eq!(load_labels(&p).unwrap(), vec![9, 0, 3, 255]);
        assert_eq!(parse_labels(&bytes, Path::new(P)).unwrap(), vec![9, 0, 3, 255]);
    }

    #[test]
    fn bad_magic_names_file_and_bytes() {
        let mut bytes = idx_bytes(&[1, 1, 1], &[0]);
        bytes[1] = 7;
        let msg = err_msg(parse_images(&bytes, Path::new(P)));
        assert!(msg.contains(P) && msg.contains("bad idx magic") && msg.contains("00 07 08 03"));
        let msg = err_msg(parse_labels(&[0, 0], Path::new(P)));
        assert!(msg.contains(P) && msg.contains("bad idx magic"), "{msg}");
    }

    #[test]
    fn wrong_dtype_is_rejected_with_its_name() {
        let mut bytes = idx_bytes(&[1, 1, 1], &[0, 0, 0, 0]);
        bytes[2] = 0x0D;
        let msg = err_msg(parse_images(&bytes, Path::new(P)));
        assert!(msg.contains(P) && msg.contains("0x0d (f32)") && msg.contains("0x08"), "{msg}");
    }

    #[test]
    fn wrong_rank_is_rejected() {
        // Labels (ndim 1) passed as images, and images passed as labels.
        let labels = idx_bytes(&[2], &[1, 2]);
        let msg = err_msg(parse_images(&labels, Path::new(P)));
        assert!(msg.contains(P) && msg.contains("images must have 3 or 4 dimensions, found 1"));
        let images = idx_bytes(&[1, 1, 1], &[0]);
        let msg = err_msg(parse_labels(&images, Path::new(P)));
        assert!(msg.contains("labels must have 1 dimensions, found 3"), "{msg}");
    }

    #[test]
    fn truncated_header_and_data_report_expected_vs_found() {
        let bytes = idx_bytes(&[2, 2, 2], &[0; 8]);
        let msg = err_msg(parse_images(&bytes[..10], Path::new(P)));
        assert!(msg.contains(P) && msg.contains("truncated idx header"), "{msg}");
        assert!(msg.contains("need 16 bytes") && msg.contains("has 10"), "{msg}");
        let msg = err_msg(parse_images(&bytes[..bytes.len() - 3], Path::new(P)));
        assert!(msg.contains("truncated idx data"), "{msg}");
        assert!(msg.contains("need 8 bytes") && msg.contains("found 5"), "{msg}");
        let mut long = bytes.clone();
        long.push(0);
        let msg = err_msg(parse_images(&long, Path::new(P)));
        assert!(msg.contains("too long") && msg.contains("found 9"), "{msg}");
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let msg = err_msg(parse_images(&idx_bytes(&[2, 0, 5], &[]), Path::new(P)));
        assert!(msg.contains("must be positive") && msg.contains("[2, 0, 5]"), "{msg}");
    }

    #[test]
    fn shipped_fashion_mnist_subset_loads() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist");
        let images_path = dir.join("t10k-images-1000-idx3-ubyte.gz");
        let labels_path = dir.join("t10k-labels-1000-idx1-ubyte.gz");
        let labels = load_labels(&labels_path).unwrap();
        let set = load_images(&images_path).unwrap().with_labels(labels, &labels_path).unwrap();
        assert_eq!((set.n, set.c, set.h, set.w), (1000, 1, 28, 28));
        assert_eq!(set.data.len(), 1000 * 28 * 28);
        assert!(set.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let labels = set.labels.as_ref().unwrap();
        assert!(labels.iter().all(|l| (0..10).contains(l)));
        // First label of the full test set /usr/share/datasets/fashion-mnist/
        // t10k-labels-idx1-ubyte.gz (byte 8 after the header): 9, "ankle boot".
        assert_eq!(labels[0], 9);
        // All ten classes occur in the first thousand (the test set is shuffled).
        for class in 0..10 {
            assert!(labels.contains(&class), "class {class} missing");
        }
    }
}
