//! JPEG decoding that gives PIL's pixels: libjpeg-turbo's own code, built from C.
//!
//! What: [`decode`] turns the bytes of a JPEG file into a 1-image [`ImageSet`], grey (1
//! channel) or RGB (3), planar, `v / 255`. The size the header declares is checked
//! ([`Declared::check`]) before any pixel buffer is allocated. A truncated file is an error
//! (PIL raises "image file is truncated"), not an image padded with grey.
//!
//! Why libjpeg-turbo: torchvision pipelines open images with PIL, which decodes JPEG with
//! libjpeg-turbo (ISLOW integer inverse DCT, "fancy" triangular chroma upsampling, its
//! fixed-point YCbCr → RGB tables). The pure-Rust decoders differ from it by a few grey
//! levels (measured on tests/fixtures/jpeg, max |Δ| over 8 cases: `jpeg-decoder` 0.3 (the
//! `image` crate's) 1–3, `zune-jpeg` 0.4 1–3), enough to move gradient maps of a resnet18 to
//! a Pearson correlation of 0.92–0.94 with PyTorch's. The `mozjpeg` crate builds MozJPEG, a
//! libjpeg-turbo fork whose decoder is libjpeg-turbo's, from C with `cc` alone (without its
//! SIMD feature, which needs nasm; the SIMD code of libjpeg-turbo is bit-exact with its C
//! code), about 15 s of a cold build. Its pixels equal PIL's on every fixture case (baseline
//! and progressive; 4:4:4, 4:2:2, 4:2:0 and grey; test below).
//!
//! libjpeg reports fatal errors through a callback that must not return; the `mozjpeg`
//! crate's C is compiled to let a Rust unwind pass through it, so our callback unwinds with
//! the message and [`decode`] catches it (the decoder state is freed on the way out).

use super::declared::Declared;
use super::ImageSet;
use crate::error::{Error, Result};
use mozjpeg::decompress::DecompressBuilder;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_JPEG_EOF, J_COLOR_SPACE};
use std::os::raw::c_int;
use std::path::Path;

/// The first bytes of every JPEG file: SOI and the first marker's 0xFF.
pub const MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];

/// Decodes a JPEG file's bytes; errors name `path`.
pub fn decode(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_unguarded(bytes, path)));
    match run {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the decoder failed".to_string());
            Err(Error::data(path, format!("not a readable JPEG image: {why}")))
        }
    }
}

/// The decoding proper; libjpeg's errors unwind out of it (see the module docs).
fn decode_unguarded(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let unreadable = |e: std::io::Error| Error::data(path, format!("not a readable JPEG image: {e}"));
    let d = DecompressBuilder::new().with_err(error_manager()).from_mem(bytes).map_err(unreadable)?;
    let (w, h) = d.size();
    let stored = d.components().len() as u64;
    Declared { width: w as u64, height: h as u64, channels: stored }.check(path, "JPEG image")?;
    let grey = d.color_space() == J_COLOR_SPACE::JCS_GRAYSCALE;
    let c = if grey { 1 } else { 3 };
    let mut started = if grey { d.grayscale() } else { d.rgb() }.map_err(unreadable)?;
    let pixels: Vec<u8> = started.read_scanlines().map_err(unreadable)?;
    if pixels.len() != c * h * w {
        return Err(Error::data(path, "not a readable JPEG image: fewer rows than the header declares"));
    }
    let data =
        (0..c).flat_map(|ch| pixels.iter().skip(ch).step_by(c).map(|&v| f32::from(v) / 255.0)).collect();
    Ok(ImageSet { data, n: 1, c, h, w, labels: None, class_names: None, sources: Vec::new() })
}

/// libjpeg's standard error manager, with a fatal error and a premature end of data both
/// unwinding with libjpeg's message.
fn error_manager() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a C struct of integers, pointers and optional function
    // pointers, for which all-zero is valid; `jpeg_std_error` then fills every field.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(fatal);
    err.emit_message = Some(message);
    err
}

/// `error_exit`: libjpeg gave up on the file.
extern "C-unwind" fn fatal(cinfo: &mut jpeg_common_struct) {
    std::panic::resume_unwind(Box::new(formatted(cinfo)));
}

/// `emit_message`: warnings (level -1) are ignored as PIL ignores them, except the end of
/// the data before the image is complete, which PIL refuses as a truncated file.
extern "C-unwind" fn message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg calls this with `err` pointing at the manager we installed.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        std::panic::resume_unwind(Box::new(format!("truncated ({})", formatted(cinfo))));
    }
}

/// libjpeg's text of the current message.
fn formatted(cinfo: &mut jpeg_common_struct) -> String {
    // JMSG_LENGTH_MAX is 200.
    let mut buffer = [0u8; 256];
    // SAFETY: `err` points at our manager; `format_message` (set by `jpeg_std_error`) writes
    // at most JMSG_LENGTH_MAX bytes, NUL included, into the buffer it is given (the binding
    // types it as `&[u8; 80]`, hence the pointer type change).
    let format = unsafe { (*cinfo.err).format_message };
    if let Some(format) = format {
        type Writer = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8);
        // SAFETY: the same C function; a reference and a pointer have one ABI.
        let format: Writer = unsafe { std::mem::transmute(format) };
        unsafe { format(cinfo, buffer.as_mut_ptr()) };
    }
    let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg")
    }

    /// The uint8 pixels (H×W×C or H×W) of a fixture .npy written by numpy.
    fn pil_pixels(name: &str) -> (Vec<usize>, Vec<u8>) {
        let bytes = std::fs::read(fixtures().join(format!("{name}.npy"))).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'|u1'") && header.contains("False"), "{header}");
        let shape = header.split('(').nth(1).unwrap().split(')').next().unwrap();
        let shape =
            shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
        (shape, bytes[10 + header_len..].to_vec())
    }

    /// Made by scripts/jpeg_fixtures.py with Pillow 13.0.0 (libjpeg-turbo 3.2.0).
    #[test]
    fn jpeg_pixels_equal_pils() {
        for mode in ["baseline", "progressive"] {
            for chroma in ["444", "422", "420", "grey"] {
                let name = format!("{mode}_{chroma}");
                let path = fixtures().join(format!("{name}.jpg"));
                let set = decode(&std::fs::read(&path).unwrap(), &path).unwrap();
                let (shape, want) = pil_pixels(&name);
                let c = if chroma == "grey" { 1 } else { 3 };
                assert_eq!((set.h, set.w, set.c), (shape[0], shape[1], c), "{name}");
                // PIL's H×W×C against our planar C×H×W, as grey levels.
                let plane = set.h * set.w;
                let worst = (0..want.len())
                    .map(|i| {
                        let ours = set.data[(i % c) * plane + i / c] * 255.0;
                        (ours - f32::from(want[i])).abs()
                    })
                    .fold(0.0f32, f32::max);
                assert_eq!(worst, 0.0, "{name}: max |ours − PIL's| = {worst} grey levels");
            }
        }
    }

    #[test]
    fn truncated_and_corrupt_jpegs_are_named_errors() {
        let path = fixtures().join("baseline_420.jpg");
        let bytes = std::fs::read(&path).unwrap();
        let err = decode(&bytes[..bytes.len() / 2], Path::new("half.jpg")).unwrap_err();
        assert!(err.to_string().contains("half.jpg") && err.to_string().contains("truncated"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = decode(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 1], Path::new("bad.jpg")).unwrap_err();
        assert!(
            err.to_string().contains("bad.jpg") && err.to_string().contains("not a readable JPEG"),
            "{err}"
        );
    }

    /// A baseline JPEG header (SOI, SOF0) declaring `w × h` with 3 components, the start of
    /// a scan (where libjpeg's header reading stops), then EOI: nothing to decode, a size to
    /// refuse.
    pub(crate) fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
        b.extend(h.to_be_bytes());
        b.extend(w.to_be_bytes());
        b.push(3);
        for id in 1..=3u8 {
            b.extend([id, 0x11, 0]);
        }
        b.extend([0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0]);
        b.extend([0xFF, 0xD9]);
        b
    }

    #[test]
    fn a_jpeg_header_bomb_is_refused_before_decoding() {
        let err = decode(&jpeg_header(65_000, 65_000), Path::new("bomb.jpg")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bomb.jpg") && msg.contains("65000×65000 pixels × 3 channels"), "{msg}");
    }
}
