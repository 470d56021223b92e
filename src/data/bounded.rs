//! Bounded reads: never read more of an input than it can legitimately hold.
//!
//! A data file is read header first: the first [`PREFIX`] bytes (decompressed on the fly if
//! the file is gzipped) are enough for an idx or npy header, which declares how long the whole
//! file is; then at most that many bytes, plus one to notice a file that is too long, are
//! read. So a gzip stream that expands to gigabytes behind a wrong header costs 64 KiB, not
//! gigabytes of memory, and the parser still reports "truncated" or "too long" as before.
//! Content with no such header (a PNG map, an unknown format) is read up to a fixed cap.
//! Devices and pipes (`/dev/zero`) are refused outright: they may never end.

use super::{idx, npy};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Bytes read before the header is looked at: more than any idx header and any sane npy one.
pub const PREFIX: usize = 64 << 10;

/// The most bytes read of a file without a header that declares its length (a PNG map, a
/// file of unknown format, which is then rejected by its parser).
pub const HEADERLESS_MAX: u64 = 512 << 20;

/// Opens `path` after checking that it is a regular file.
fn open_regular(path: &Path) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a folder" } else { "not a regular file (a device or a pipe?)" };
        return Err(Error::data(path, format!("is {what}; expected a data file")));
    }
    std::fs::File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads all of a small file, refusing one over `max` bytes (or one that is not a regular file).
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::data(path, format!("larger than the {max} bytes such a file may have")));
    }
    Ok(bytes)
}

/// Reads `length` bytes at `offset` of the regular file `path` (a byte range another file
/// declares, such as an ONNX tensor's external data), after checking that the range lies
/// inside the file and that the memory can be had: a sparse file or a wrong declaration costs
/// an error, not an abort or a read of everything.
pub fn read_range(path: &Path, offset: u64, length: u64) -> Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = open_regular(path)?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        let end = offset.saturating_add(length);
        return Err(Error::data(path, format!("bytes {offset}..{end} lie beyond its {size} bytes")));
    }
    let mut bytes = Vec::new();
    usize::try_from(length)
        .ok()
        .and_then(|n| bytes.try_reserve_exact(n).ok())
        .ok_or_else(|| Error::data(path, format!("cannot hold {length} bytes in memory")))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
    f.take(length).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != length {
        return Err(Error::data(path, format!("ended before byte {}", offset + length)));
    }
    Ok(bytes)
}

/// Reads a data file (raw, or gzip if it starts with `1f 8b`), header first, then at most
/// what the header declares (see the module docs).
pub fn read_data(path: &Path) -> Result<Vec<u8>> {
    let mut file = std::io::BufReader::new(open_regular(path)?);
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic, path)?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    if magic[..n] == [0x1f, 0x8b] {
        // MultiGzDecoder: a file may hold several concatenated gzip members (`cat a.gz b.gz`).
        read_declared(flate2::read::MultiGzDecoder::new(head), path, true)
    } else {
        read_declared(head, path, false)
    }
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e)),
        }
    }
    Ok(n)
}

/// A read error: a corrupt gzip stream is bad input, anything else an I/O failure.
fn read_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof => Error::data(path, format!("corrupt gzip stream: {e}")),
        _ => Error::io(path, e),
    }
}

/// The prefix, then the rest up to the declared length plus one byte (or [`HEADERLESS_MAX`]).
fn read_declared(mut r: impl Read, path: &Path, gzip: bool) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; PREFIX];
    let n = read_up_to(&mut r, &mut bytes, path)?;
    bytes.truncate(n);
    let declared =
        if bytes.starts_with(npy::MAGIC) { npy::declared_len(&bytes) } else { idx::declared_len(&bytes) };
    let limit = match declared {
        Some(len) => len as u64 + 1,
        None => HEADERLESS_MAX + 1,
    };
    if (bytes.len() as u64) < limit {
        r.take(limit - bytes.len() as u64).read_to_end(&mut bytes).map_err(|e| read_error(path, e))?;
    }
    bytes.truncate(limit as usize);
    if declared.is_none() && bytes.len() as u64 > HEADERLESS_MAX {
        let what = if gzip { "decompresses to" } else { "has" };
        return Err(Error::data(
            path,
            format!(
                "{what} more than {HEADERLESS_MAX} bytes without an idx or npy header declaring its size"
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_behind_a_small_header_is_read_only_as_far_as_declared() {
        let dir = tempfile::tempdir().unwrap();
        // idx labels declaring 10 bytes, followed by 200 MB of zeros (compresses to ~200 KB).
        let mut body = vec![0, 0, 8, 1, 0, 0, 0, 10];
        body.resize(200 << 20, 0);
        let p = dir.path().join("bomb.gz");
        std::fs::write(&p, gzip(&body)).unwrap();
        drop(body);
        let read = read_data(&p).unwrap();
        assert_eq!(read.len(), 8 + 10 + 1, "header, declared data, one byte to see it is too long");
        let err = crate::data::load_labels(&p).unwrap_err().to_string();
        assert!(err.contains("too long") && err.contains("bomb.gz"), "{err}");
    }

    #[test]
    fn well_formed_files_are_read_whole_raw_or_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = vec![0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9];
        let raw = dir.path().join("l.idx");
        std::fs::write(&raw, &body).unwrap();
        assert_eq!(read_data(&raw).unwrap(), body);
        let gz = dir.path().join("l.idx.gz");
        std::fs::write(&gz, gzip(&body)).unwrap();
        assert_eq!(read_data(&gz).unwrap(), body);
        // A truncated file reads as it is, for the parser to report.
        body.pop();
        std::fs::write(&raw, &body).unwrap();
        assert_eq!(read_data(&raw).unwrap(), body);
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_oversized_small_files_are_refused() {
        let err = read_data(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.csv");
        std::fs::write(&p, vec![b'x'; 101]).unwrap();
        assert_eq!(read_capped(&p, 101).unwrap().len(), 101);
        assert!(read_capped(&p, 100).unwrap_err().to_string().contains("100 bytes"));
    }
}
