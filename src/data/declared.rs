//! Image sizes as their headers declare them, checked before anything is decoded.
//!
//! What: a PNG's IHDR chunk and a JPEG's frame header declare width, height and channels in
//! their first bytes. [`Declared::check`] refuses an image whose declared size would not fit
//! the per-image limit, with an error naming the file and the declared size.
//!
//! Why: decoders allocate what the header declares. A PNG of a few hundred bytes whose IHDR
//! says 200000×200000 asks for 40 G pixels before the first row is inflated, and the loaders
//! keep an f32 copy of every decoded value (4 bytes for each 1- or 2-byte sample), so a
//! decoder's own limit does not bound what an image costs: a 390 KB PNG within the `image`
//! crate's 512 MiB limit reached 1.96 GB. One limit on the declared values covers the
//! decoder's buffers (samples of up to 2 bytes, a JPEG's 2-byte coefficients), the converted
//! copy and the f32 copy: at most [`BYTES_PER_VALUE`] bytes for each value.

use crate::error::{Error, Result};
use std::path::Path;

/// The most values (width × height × channels, as declared) an image may have: 128 Mi, e.g.
/// 6,500 × 6,500 RGB pixels, a 43-megapixel photo.
pub const MAX_IMAGE_VALUES: u64 = 1 << 27;

/// An upper bound on the bytes one declared value costs while it is decoded and converted
/// (2-byte sample or coefficient, a 2-byte converted copy, the 4-byte f32).
pub const BYTES_PER_VALUE: u64 = 8;

/// The most bytes an image file may have (read through the bounded reader): more than a PNG
/// of [`MAX_IMAGE_VALUES`] 1-byte values stored without compression.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Width, height and channels as an image's header declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
    /// Values per pixel as stored (a palette PNG counts 4: it may expand to RGBA).
    pub channels: u64,
}

/// The 8-byte PNG signature.
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

impl Declared {
    /// The size a PNG's IHDR chunk declares, or None if `bytes` do not start with a PNG
    /// signature and an IHDR chunk (the decoder then says what is wrong).
    pub fn png(bytes: &[u8]) -> Option<Declared> {
        let ihdr = bytes.strip_prefix(PNG_MAGIC)?.get(..21)?;
        if &ihdr[4..8] != b"IHDR" {
            return None;
        }
        let be =
            |at: usize| u64::from(u32::from_be_bytes([ihdr[at], ihdr[at + 1], ihdr[at + 2], ihdr[at + 3]]));
        // Colour types: 0 grey, 2 RGB, 3 palette (RGB, or RGBA with a tRNS chunk), 4 grey +
        // alpha, 6 RGBA. An invalid type is left to the decoder.
        let channels = match ihdr[17] {
            0 => 1,
            2 => 3,
            4 => 2,
            _ => 4,
        };
        Some(Declared { width: be(8), height: be(12), channels })
    }

    /// Width × height × channels, saturating (a header cannot overflow the check).
    pub fn values(&self) -> u64 {
        self.width.saturating_mul(self.height).saturating_mul(self.channels)
    }

    /// Refuses an empty image or one over [`MAX_IMAGE_VALUES`]; `what` names the kind of
    /// file in the message ("image", "mask"), `path` the file.
    pub fn check(&self, path: &Path, what: &str) -> Result<()> {
        let Declared { width, height, channels } = *self;
        if width == 0 || height == 0 {
            return Err(Error::data(
                path,
                format!("the {what}'s header declares an empty image ({width}×{height})"),
            ));
        }
        let values = self.values();
        if values > MAX_IMAGE_VALUES {
            let gib = values.saturating_mul(BYTES_PER_VALUE) as f64 / f64::from(1u32 << 30);
            return Err(Error::data(
                path,
                format!(
                    "the {what}'s header declares {width}×{height} pixels × {channels} channel{} \
                     ({values} values, about {gib:.1} GiB to decode), more than the {MAX_IMAGE_VALUES} \
                     values an image may have; make it smaller",
                    if channels == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first bytes of a PNG (signature, IHDR) declaring `w × h` of colour type `colour`,
    /// 8-bit, followed by an IDAT chunk of a few bytes: a header bomb when the size is large.
    pub(crate) fn png_header(w: u32, h: u32, colour: u8) -> Vec<u8> {
        let mut b = PNG_MAGIC.to_vec();
        b.extend(13u32.to_be_bytes());
        b.extend(b"IHDR");
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, colour, 0, 0, 0]);
        b.extend([0u8; 4]); // CRC, not checked before the size is
        b.extend(4u32.to_be_bytes());
        b.extend(b"IDAT\x78\x9c\x03\x00");
        b.extend([0u8; 4]);
        b
    }

    #[test]
    fn png_headers_declare_their_size_and_channels() {
        let d = Declared::png(&png_header(7, 5, 2)).unwrap();
        assert_eq!(d, Declared { width: 7, height: 5, channels: 3 });
        assert_eq!(Declared::png(&png_header(7, 5, 3)).unwrap().channels, 4);
        assert_eq!(Declared::png(&png_header(7, 5, 0)).unwrap().channels, 1);
        assert_eq!(Declared::png(b"\x89PNG\r\n\x1a\nshort"), None);
        assert_eq!(Declared::png(b"GIF89a"), None);
    }

    #[test]
    fn a_header_bomb_is_refused_with_its_declared_size() {
        let d = Declared::png(&png_header(200_000, 200_000, 2)).unwrap();
        let err = d.check(Path::new("bomb.png"), "image").unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(msg.contains("bomb.png") && msg.contains("200000×200000 pixels × 3 channels"), "{msg}");
        // u32::MAX squared times 4 saturates instead of wrapping to a small number.
        let huge = Declared { width: u64::from(u32::MAX), height: u64::from(u32::MAX), channels: 4 };
        assert!(huge.check(Path::new("x.png"), "image").is_err());
        let empty = Declared { width: 0, height: 5, channels: 1 };
        assert!(empty.check(Path::new("e.png"), "mask").unwrap_err().to_string().contains("empty"));
        Declared { width: 6_500, height: 6_500, channels: 3 }.check(Path::new("ok.png"), "image").unwrap();
    }
}
