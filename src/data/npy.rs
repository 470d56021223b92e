//! NumPy's `.npy` format: reading images and labels, writing float32 and int64 arrays.
//!
//! Layout (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>): the magic
//! `\x93NUMPY`, a major and minor version byte, the header length (u16 little-endian in v1,
//! u32 in v2 and v3), then an ASCII Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 28, 28), }` padded with spaces and
//! a newline, then the raw values.
//!
//! We read: float32 (`'<f4'`) `N×C×H×W` with every value in `[0, 1]` (checked, because a map
//! computed from pixels in 0..255 would silently mean something else); uint8 (`'|u1'`) `N×H×W`
//! or `N×C×H×W`, divided by 255; and 1-D labels of int64, int32, int16 or uint8. Fortran order,
//! big-endian and every other dtype or rank are rejected with a message naming the file and
//! what was found. We write v1.0 files, C order, little-endian, header padded to 64 bytes as
//! NumPy itself does, atomically.

use super::ImageSet;
use crate::atomic::write_with;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// The first six bytes of every npy file.
pub(crate) const MAGIC: &[u8] = b"\x93NUMPY";

/// The element types we read, from the header's `descr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F4,
    U1,
    I2,
    I4,
    I8,
}

impl Dtype {
    /// Parses a `descr` such as `'<f4'`; big-endian and unknown types are errors (message only).
    fn parse(descr: &str) -> std::result::Result<Dtype, String> {
        let mut chars = descr.chars();
        let order = chars.next().unwrap_or(' ');
        let kind = chars.as_str();
        let dtype = match kind {
            "f4" => Dtype::F4,
            "u1" => Dtype::U1,
            "i2" => Dtype::I2,
            "i4" => Dtype::I4,
            "i8" => Dtype::I8,
            _ => {
                return Err(format!(
                    "dtype '{descr}' is not supported; expected '<f4' (float32) or '|u1' \
                     (uint8) for images, '<i8', '<i4', '<i2' or '|u1' for labels"
                ))
            }
        };
        // One-byte types carry no byte order ('|'); NumPy still accepts '<u1' and '>u1'.
        let little = order == '<' || (dtype == Dtype::U1 && matches!(order, '|' | '>'));
        if !little {
            return Err(format!(
                "big-endian or unmarked dtype '{descr}' is not supported; save it little-endian \
                 (e.g. `arr.astype('<{kind}')`)"
            ));
        }
        Ok(dtype)
    }

    fn size(self) -> usize {
        match self {
            Dtype::U1 => 1,
            Dtype::I2 => 2,
            Dtype::F4 | Dtype::I4 => 4,
            Dtype::I8 => 8,
        }
    }
}

/// The parsed header: element type, shape, and the byte offset of the data.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    descr: String,
    shape: Vec<usize>,
    data_start: usize,
}

/// Parses an npy file as images: float32 `N×C×H×W` in `[0, 1]`, or uint8 `N×H×W` / `N×C×H×W`.
pub(crate) fn parse_images(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.data_start..];
    let (n, c, h, w) = match (header.dtype, &header.shape[..]) {
        (Dtype::F4, &[n, c, h, w]) | (Dtype::U1, &[n, c, h, w]) => (n, c, h, w),
        (Dtype::U1, &[n, h, w]) => (n, 1, h, w),
        (Dtype::F4 | Dtype::U1, shape) => {
            let allowed = if header.dtype == Dtype::F4 { "N×C×H×W" } else { "N×H×W or N×C×H×W" };
            return Err(Error::data(
                path,
                format!("npy images of dtype '{}' must be {allowed}, found shape {shape:?}", header.descr),
            ));
        }
        _ => {
            return Err(Error::data(
                path,
                format!("npy images must be float32 ('<f4') or uint8 ('|u1'), found '{}'", header.descr),
            ))
        }
    };
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::data(
            path,
            format!("npy image dimensions must be positive, found shape {:?}", header.shape),
        ));
    }
    let data: Vec<f32> = match header.dtype {
        Dtype::U1 => body.iter().map(|&b| f32::from(b) / 255.0).collect(),
        _ => body.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
    };
    // NaN fails `contains` too, so it is reported like any other out-of-range value.
    if let Some(i) = data.iter().position(|x| !(0.0..=1.0).contains(x)) {
        let image_len = c * h * w;
        let (img, rest) = (i / image_len, i % image_len);
        let (ch, rest) = (rest / (h * w), rest % (h * w));
        let (row, col) = (rest / w, rest % w);
        return Err(Error::data(
            path,
            format!(
                "float32 pixels must lie in [0, 1]; first offending value {} at index \
                 [{img}, {ch}, {row}, {col}] (flat {i}); rescale (e.g. divide by 255) first",
                data[i]
            ),
        ));
    }
    let sources = super::file_sources(path, n);
    Ok(ImageSet { data, n, c, h, w, labels: None, class_names: None, sources })
}

/// Parses an npy file as 1-D integer labels (int64, int32, int16 or uint8).
pub(crate) fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<i64>> {
    let header = parse_header(bytes, path)?;
    if header.shape.len() != 1 {
        return Err(Error::data(path, format!("npy labels must be 1-D, found shape {:?}", header.shape)));
    }
    let body = &bytes[header.data_start..];
    let labels = match header.dtype {
        Dtype::U1 => body.iter().map(|&b| i64::from(b)).collect(),
        Dtype::I2 => body.chunks_exact(2).map(|x| i64::from(i16::from_le_bytes([x[0], x[1]]))).collect(),
        Dtype::I4 => {
            body.chunks_exact(4).map(|x| i64::from(i32::from_le_bytes([x[0], x[1], x[2], x[3]]))).collect()
        }
        Dtype::I8 => body
            .chunks_exact(8)
            .map(|x| i64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]))
            .collect(),
        Dtype::F4 => {
            return Err(Error::data(
                path,
                format!(
                    "npy labels must be integers ('<i8', '<i4', '<i2' or '|u1'), found '{}'",
                    header.descr
                ),
            ))
        }
    };
    Ok(labels)
}

/// Parses an npy array of any supported dtype as f32 values with its shape (masks and maps
/// given by the user).
pub(crate) fn parse_array(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let header = parse_header(bytes, path)?;
    let body = &bytes[header.data_start..];
    let data = match header.dtype {
        Dtype::U1 => body.iter().map(|&b| f32::from(b)).collect(),
        Dtype::I2 => body.chunks_exact(2).map(|x| f32::from(i16::from_le_bytes([x[0], x[1]]))).collect(),
        Dtype::I4 => {
            body.chunks_exact(4).map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f32).collect()
        }
        Dtype::I8 => body
            .chunks_exact(8)
            .map(|x| i64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]) as f32)
            .collect(),
        Dtype::F4 => body.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
    };
    Ok((data, header.shape))
}

/// Reads and checks the header: magic, version, dict, C order, dtype, and that the data length
/// equals the product of the shape times the element size.
fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let (header, count) = header_only(bytes, path)?;
    let found = bytes.len() - header.data_start;
    if found != count {
        let kind = if found < count { "truncated" } else { "too long" };
        return Err(Error::data(
            path,
            format!(
                "{kind} npy data: shape {:?} of '{}' needs {count} bytes, found {found}",
                header.shape, header.descr
            ),
        ));
    }
    Ok(header)
}

/// The total length (header and data) that the npy header at the start of `prefix` declares,
/// if `prefix` holds a whole, valid header: what the bounded reader reads at most.
pub(crate) fn declared_len(prefix: &[u8]) -> Option<usize> {
    let (header, count) = header_only(prefix, Path::new("")).ok()?;
    header.data_start.checked_add(count)
}

/// The header's checks of [`parse_header`] without the data length, and the data's byte count.
fn header_only(bytes: &[u8], path: &Path) -> Result<(Header, usize)> {
    let bad = |msg: String| Error::data(path, msg);
    if !bytes.starts_with(MAGIC) {
        return Err(bad(format!(
            "bad npy magic: expected 93 4e 55 4d 50 59 (\\x93NUMPY), found {}",
            super::hex_prefix(bytes, 6)
        )));
    }
    let (len_start, len_size) = match bytes.get(6) {
        Some(1) => (8, 2),
        Some(2 | 3) => (8, 4),
        Some(v) => return Err(bad(format!("unsupported npy version {v}; expected 1, 2 or 3"))),
        None => return Err(bad("truncated npy header: file ends after the magic".into())),
    };
    let len_bytes = bytes
        .get(len_start..len_start + len_size)
        .ok_or_else(|| bad("truncated npy header: no header length".into()))?;
    let header_len = len_bytes.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let dict_start = len_start + len_size;
    let data_start = dict_start + header_len;
    let dict_bytes = bytes.get(dict_start..data_start).ok_or_else(|| {
        bad(format!(
            "truncated npy header: says {header_len} bytes, file has {} after the length field",
            bytes.len().saturating_sub(dict_start)
        ))
    })?;
    // v1/v2 headers are latin-1, v3 UTF-8; the keys and values we accept are plain ASCII.
    let text =
        std::str::from_utf8(dict_bytes).map_err(|_| bad("npy header is not ASCII/UTF-8 text".into()))?;
    let dict = HeaderDict::parse(text).map_err(|e| bad(format!("malformed npy header {text:?}: {e}")))?;
    if dict.fortran_order {
        return Err(bad("npy array is in Fortran (column-major) order; save it in C order \
             (e.g. `np.ascontiguousarray(arr)`)"
            .into()));
    }
    let dtype = Dtype::parse(&dict.descr).map_err(|e| bad(format!("npy {e}")))?;
    let count = dict
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|c| c.checked_mul(dtype.size()))
        .ok_or_else(|| bad(format!("npy shape {:?} overflows the address space", dict.shape)))?;
    Ok((Header { dtype, descr: dict.descr, shape: dict.shape, data_start }, count))
}

/// The three keys of an npy header dict.
#[derive(Debug, PartialEq)]
struct HeaderDict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value in the header dict: the subset of Python literals that npy headers use.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl HeaderDict {
    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`; errors are plain
    /// messages that the caller wraps with the file name.
    fn parse(text: &str) -> std::result::Result<HeaderDict, String> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.expect(b'{')?;
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.value()?;
            match (key.as_str(), value) {
                ("descr", Value::Str(s)) => descr = Some(s),
                ("fortran_order", Value::Bool(b)) => fortran = Some(b),
                ("shape", Value::Tuple(t)) => shape = Some(t),
                (k @ ("descr" | "fortran_order" | "shape"), v) => {
                    return Err(format!("key '{k}' has an unexpected value {v:?}"))
                }
                (k, _) => return Err(format!("unexpected key '{k}'")),
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        Ok(HeaderDict {
            descr: descr.ok_or("missing key 'descr'")?,
            fortran_order: fortran.ok_or("missing key 'fortran_order'")?,
            shape: shape.ok_or("missing key 'shape'")?,
        })
    }
}

/// A cursor over the header text.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", char::from(c), self.i))
        }
    }

    /// A quoted string, single or double quotes, no escapes (npy never writes any).
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or_else(|| format!("unterminated string at byte {}", self.i))?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'(') => self.tuple().map(Value::Tuple),
            Some(b'T') if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'F') if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            // A list here is a structured dtype ([('x', '<f4'), ...]), which we do not read.
            Some(b'[') => Err("structured dtypes (a list as 'descr') are not supported".into()),
            _ => Err(format!("unexpected value at byte {}", self.i)),
        }
    }

    /// `()`, `(3,)`, `(2, 3)` or `(2, 3,)`: non-negative integers.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            // Python 2 era files may write `3L`.
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
            let d: usize = digits.parse().map_err(|_| format!("expected a dimension at byte {start}"))?;
            self.eat(b'L');
            out.push(d);
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

/// Writes `data` with `shape` as a little-endian float32 (`'<f4'`) npy v1.0 file, C order,
/// atomically.
pub fn write_npy_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    write_npy(path, "<f4", data.len(), shape, |w| data.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())))
}

/// Writes `data` with `shape` as a little-endian int64 (`'<i8'`) npy v1.0 file, C order,
/// atomically.
pub fn write_npy_i64(path: &Path, data: &[i64], shape: &[usize]) -> Result<()> {
    write_npy(path, "<i8", data.len(), shape, |w| data.iter().try_for_each(|x| w.write_all(&x.to_le_bytes())))
}

/// The shared writer: checks that `len` matches `shape`, writes the padded header, then lets
/// `body` write the values.
fn write_npy<F>(path: &Path, descr: &str, len: usize, shape: &[usize], body: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(len) {
        return Err(Error::Invalid(format!(
            "{}: cannot write {len} values with npy shape {shape:?}",
            path.display()
        )));
    }
    let header = header_bytes(descr, shape);
    write_with(path, |w| w.write_all(&header).and_then(|()| body(w)).map_err(|e| Error::io(path, e)))
}

/// Magic, version 1.0, length and the dict, padded with spaces so that the data start at a
/// multiple of 64 bytes (NumPy's alignment, which lets readers memory-map the data).
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // Python's tuple syntax: a 1-tuple needs its trailing comma.
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // A header of a few dozen dims is far below u16::MAX.
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_images, load_labels};

    const P: &str = "dir/x.npy";

    /// An npy file with `dict` as header (v1 unless `v2`), padded, then `body`.
    fn npy(dict: &str, body: &[u8], v2: bool) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        let text = format!("{dict}\n");
        if v2 {
            b.extend_from_slice(&[2, 0]);
            b.extend_from_slice(&(text.len() as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&(text.len() as u16).to_le_bytes());
        }
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(P) || msg.contains(".npy"), "message does not name the file: {msg}");
        msg
    }

    #[test]
    fn f32_round_trip_through_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 / 23.0).collect();
        write_npy_f32(&p, &data, &[2, 3, 2, 2]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // Data start is 64-byte aligned and the header ends in a newline, as NumPy writes it.
        let data_start = bytes.len() - 24 * 4;
        assert_eq!(data_start % 64, 0);
        assert_eq!(bytes[data_start - 1], b'\n');
        let text = std::str::from_utf8(&bytes[10..data_start]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2, 2), }"));
        let s = load_images(&p).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (2, 3, 2, 2));
        assert_eq!(s.data, data);
    }

    #[test]
    fn i64_round_trip_and_one_tuple_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.npy");
        write_npy_i64(&p, &[3, -1, i64::MAX], &[3]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert!(std::str::from_utf8(&bytes[10..70]).unwrap().contains("'shape': (3,)"));
        assert_eq!(load_labels(&p).unwrap(), vec![3, -1, i64::MAX]);
    }

    #[test]
    fn writer_rejects_shape_that_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let msg = write_npy_f32(&p, &[0.0; 5], &[2, 3]).unwrap_err().to_string();
        assert!(msg.contains("bad.npy") && msg.contains("5 values") && msg.contains("[2, 3]"));
        assert!(!p.exists());
    }

    #[test]
    fn uint8_images_three_and_four_dims_are_divided_by_255() {
        let three =
            npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 2), }", &[0, 255, 51, 102], false);
        let s = parse_images(&three, Path::new(P)).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (2, 1, 1, 2));
        assert_eq!(s.data, vec![0.0, 1.0, 0.2, 0.4]);
        let four = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 1, 1), }", &[255, 0], false);
        let s = parse_images(&four, Path::new(P)).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w, s.data), (1, 2, 1, 1, vec![1.0, 0.0]));
    }

    #[test]
    fn rgb_images_keep_channel_planes_in_nchw_order() {
        // uint8 (1, 3, 2, 2): one plane per channel, each row-major.
        let body: Vec<u8> = vec![0, 51, 102, 153, 204, 255, 0, 51, 102, 153, 204, 255];
        let b = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3, 2, 2), }", &body, false);
        let s = parse_images(&b, Path::new(P)).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (1, 3, 2, 2));
        assert_eq!(&s.data[4..8], &[0.8, 1.0, 0.0, 0.2]);
        // float32 (2, 3, 1, 2): image 1, channel 2 is the last pair.
        let v: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        let b =
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1, 2), }", &f32_bytes(&v), false);
        let s = parse_images(&b, Path::new(P)).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (2, 3, 1, 2));
        assert_eq!(&s.image(1)[4..], &[10.0 / 11.0, 1.0]);
    }

    #[test]
    fn v2_header_and_double_quotes_and_key_order_are_accepted() {
        let b = npy(
            r#"{"shape": (1, 1, 1, 2), "fortran_order": False, "descr": "<f4"}"#,
            &f32_bytes(&[0.5, 1.0]),
            true,
        );
        assert_eq!(parse_images(&b, Path::new(P)).unwrap().data, vec![0.5, 1.0]);
    }

    #[test]
    fn labels_of_every_integer_width() {
        let cases: [(&str, Vec<u8>); 4] = [
            ("'<i8'", [7i64, -2].iter().flat_map(|x| x.to_le_bytes()).collect()),
            ("'<i4'", [7i32, -2].iter().flat_map(|x| x.to_le_bytes()).collect()),
            ("'<i2'", [7i16, -2].iter().flat_map(|x| x.to_le_bytes()).collect()),
            ("'|u1'", vec![7, 254]),
        ];
        for (descr, body) in cases {
            let b =
                npy(&format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2,), }}"), &body, false);
            let want = if descr == "'|u1'" { vec![7, 254] } else { vec![7, -2] };
            assert_eq!(parse_labels(&b, Path::new(P)).unwrap(), want, "{descr}");
        }
    }

    #[test]
    fn out_of_range_value_names_its_index() {
        // Flat index 5 of shape (1, 2, 2, 2) is channel 1, row 0, column 1.
        let v = [0.0, 0.1, 0.2, 0.3, 0.4, 2.5, 0.6, 3.0];
        let b =
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 2), }", &f32_bytes(&v), false);
        let msg = err(parse_images(&b, Path::new(P)));
        assert!(msg.contains("[0, 1]") && msg.contains("2.5"), "{msg}");
        assert!(msg.contains("[0, 1, 0, 1]") && msg.contains("flat 5"), "{msg}");
        let nan = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1), }",
            &f32_bytes(&[f32::NAN]),
            false,
        );
        assert!(err(parse_images(&nan, Path::new(P))).contains("NaN"));
    }

    #[test]
    fn fortran_order_is_rejected() {
        let b = npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1, 1, 1), }",
            &f32_bytes(&[0.0]),
            false,
        );
        assert!(err(parse_images(&b, Path::new(P))).contains("Fortran"));
    }

    #[test]
    fn big_endian_and_other_dtypes_are_rejected() {
        let be = npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 1, 1), }", &[0; 4], false);
        let msg = err(parse_images(&be, Path::new(P)));
        assert!(msg.contains("big-endian") && msg.contains("'>f4'"), "{msg}");
        let f8 = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1), }", &[0; 8], false);
        let msg = err(parse_images(&f8, Path::new(P)));
        assert!(msg.contains("'<f8'") && msg.contains("not supported"), "{msg}");
        let float_labels = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0; 4], false);
        assert!(err(parse_labels(&float_labels, Path::new(P))).contains("must be integers"));
        let int_images =
            npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 1, 1), }", &[0; 8], false);
        assert!(err(parse_images(&int_images, Path::new(P))).contains("float32 ('<f4') or uint8"));
        let structured =
            npy("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,), }", &[0; 4], false);
        assert!(err(parse_labels(&structured, Path::new(P))).contains("structured"));
    }

    #[test]
    fn wrong_ranks_are_rejected() {
        let f3 = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1), }", &[0; 4], false);
        let msg = err(parse_images(&f3, Path::new(P)));
        assert!(msg.contains("N×C×H×W") && msg.contains("[1, 1, 1]"), "{msg}");
        let u2 = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2), }", &[0; 4], false);
        assert!(err(parse_images(&u2, Path::new(P))).contains("N×H×W or N×C×H×W"));
        let l2 = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }", &[0; 8], false);
        assert!(err(parse_labels(&l2, Path::new(P))).contains("must be 1-D"));
    }

    #[test]
    fn bad_magic_and_truncation_are_reported() {
        let good = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2), }",
            &f32_bytes(&[0.0, 1.0]),
            false,
        );
        let mut bad = good.clone();
        bad[1] = b'X';
        assert!(err(parse_header(&bad, Path::new(P))).contains("bad npy magic"));
        let msg = err(parse_images(&good[..good.len() - 3], Path::new(P)));
        assert!(
            msg.contains("truncated npy data") && msg.contains("needs 8 bytes") && msg.contains("found 5"),
            "{msg}"
        );
        assert!(err(parse_images(&good[..20], Path::new(P))).contains("truncated npy header"));
        assert!(err(parse_images(&good[..7], Path::new(P))).contains("truncated npy header"));
        let mut v9 = good.clone();
        v9[6] = 9;
        assert!(err(parse_images(&v9, Path::new(P))).contains("version 9"));
    }

    #[test]
    fn malformed_dicts_are_reported() {
        for (dict, want) in [
            ("{'descr': '<f4', 'shape': (1,), }", "missing key 'fortran_order'"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 'x'}",
                "unexpected key 'extra'",
            ),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "unexpected value"),
            ("{'descr' '<f4'}", "expected ':'"),
            ("{'descr': '<f4, 'fortran_order': False}", "expected '}'"),
            ("'descr': '<f4'", "expected '{'"),
        ] {
            let msg = err(parse_labels(&npy(dict, &[], false), Path::new(P)));
            assert!(msg.contains("malformed npy header") && msg.contains(want), "{dict}: {msg}");
        }
    }

    #[test]
    fn tuple_forms_parse() {
        let d = HeaderDict::parse("{'descr': '<i8', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!(d.shape, Vec::<usize>::new());
        let d = HeaderDict::parse("{'descr':'<i8','fortran_order':False,'shape':(2,3,)}").unwrap();
        assert_eq!(d.shape, vec![2, 3]);
        let d = HeaderDict::parse("{'descr': '<i8', 'fortran_order': False, 'shape': (4L,)}").unwrap();
        assert_eq!(d.shape, vec![4]);
    }
}
