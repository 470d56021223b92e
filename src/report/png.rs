//! A minimal PNG encoder for in-memory RGB images (8-bit RGB, zlib via `flate2`).
//!
//! plotters' bitmap encoder only writes to a path; encoding here lets every image go through
//! the atomic temp-file-and-rename of [`crate::atomic`].

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use std::io::Write;

/// A rendered chart: `rgb` holds `height` rows of `width` RGB pixels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendering {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// Row-major 8-bit RGB pixels, `3 · width · height` bytes.
    pub(crate) rgb: Vec<u8>,
}

/// Writes one PNG chunk: length, type, data and the CRC-32 of type and data.
fn write_chunk<W: Write>(w: &mut W, kind: &[u8; 4], data: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "PNG chunk over 4 GiB"))?;
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    w.write_all(&len.to_be_bytes())?;
    w.write_all(kind)?;
    w.write_all(data)?;
    w.write_all(&crc.sum().to_be_bytes())
}

/// Encodes `image` as an 8-bit RGB PNG (no filtering: charts are mostly flat colour, which
/// deflate compresses well as it is).
pub(crate) fn encode_png<W: Write>(w: &mut W, image: &Rendering) -> std::io::Result<()> {
    w.write_all(b"\x89PNG\r\n\x1a\n")?;
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&image.width.to_be_bytes());
    header.extend_from_slice(&image.height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering method, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    write_chunk(w, b"IHDR", &header)?;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    for row in image.rgb.chunks_exact(3 * image.width as usize) {
        z.write_all(&[0])?; // filter type None
        z.write_all(row)?;
    }
    write_chunk(w, b"IDAT", &z.finish()?)?;
    write_chunk(w, b"IEND", &[])
}
