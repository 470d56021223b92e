//! Image and label files: reading idx, npy and folders of PNG/JPEG files, writing npy.
//!
//! Everything the tool computes starts from an [`ImageSet`]: `n` images stored contiguously in
//! NCHW order (`data.len() == n * c * h * w`), float32 pixels in `[0, 1]`, with optional
//! integer labels (and class names, when a folder gives them). Three sources are read; files
//! are recognised by their content, never by their name:
//!
//! - **idx** (the MNIST / Fashion-MNIST format; submodule `idx`), raw or gzipped. Unsigned bytes,
//!   divided by 255. `N×H×W` becomes `N×1×H×W`; `N×C×H×W` is kept as stored.
//! - **npy** (NumPy's format; submodule `npy`): float32 `N×C×H×W` already in `[0, 1]`, or uint8
//!   `N×H×W` / `N×C×H×W` divided by 255, for any channel count C. Labels: 1-D integers.
//! - **a folder of PNG/JPEG files** (submodule `folder`), either one sub-folder per class (the
//!   ImageNet layout) or flat with a `file,label` CSV; labels come with the images.
//!
//! Every source can then be preprocessed the same way ([`ImageOptions`]: resize the shorter
//! side with antialiased bilinear filtering as torchvision, center crop, grey ↔ RGB; submodules
//! `preprocess` and `resize`), so a 28×28 Fashion-MNIST file can feed a model trained at 64×64
//! and a folder of JPEGs a torchvision model at 224×224.
//!
//! A gzip stream (first bytes `1f 8b`) is decompressed first, whatever the file is called.
//! Results are written as npy ([`write_npy_f32`], [`write_npy_i64`]) so that NumPy reads them
//! directly.
//!
//! We read idx ourselves instead of using `candle-datasets`: that crate's MNIST reader needs
//! uncompressed files and adds hundreds of crates (hf-hub, reqwest, arrow) to the build for
//! about forty lines of parsing (measured; see DESIGN.md).

mod bounded;
pub use bounded::{read_capped, read_data, read_range};
mod declared;
pub use declared::{MAX_IMAGE_FILE_BYTES, MAX_IMAGE_VALUES};
mod folder;
pub(crate) use folder::{load_folder_picked, read_classes};
mod idx;
mod jpeg;
mod npy;
mod preprocess;
mod resize;

pub use npy::{write_npy_f32, write_npy_i64};
pub use preprocess::{convertible_channels, ImageOptions};

use crate::error::{Error, Result};
use std::path::Path;

/// A batch of images in NCHW float32, pixels in `[0, 1]`, with optional integer labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, image after image, each `c × h × w` in row-major order.
    pub data: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 for grey, 3 for RGB).
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
    /// One class label per image, when known.
    pub labels: Option<Vec<i64>>,
    /// The name of each class, indexed by label, when known (a folder of class sub-folders
    /// gives them; idx and npy do not).
    pub class_names: Option<Vec<String>>,
    /// Where each image comes from, one per image: its path relative to the folder (`/`
    /// separators) for a folder of files, `name[i]` for image `i` of an npy or idx file
    /// (`name` the file's name without its folder). Results name their images by it.
    pub sources: Vec<String>,
}

impl ImageSet {
    /// Number of values in one image: `c * h * w`.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The pixels of image `i`, `c × h × w` values in row-major order.
    ///
    /// # Panics
    /// If `i >= self.n` (an indexing bug in the caller, like slicing out of bounds).
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.image_len();
        &self.data[i * len..(i + 1) * len]
    }

    /// The source of image `i` (see [`ImageSet::sources`]); `#i` for a set built without
    /// sources.
    pub fn source(&self, i: usize) -> String {
        self.sources.get(i).cloned().unwrap_or_else(|| format!("#{i}"))
    }

    /// The content hash of image `i` as studied (its f32 pixels after resize, crop and
    /// channel conversion, with its shape), 16 hex digits: two runs whose images have the same
    /// hash gave the model the same input.
    pub fn image_hash(&self, i: usize) -> String {
        let mut h = crate::fingerprint::ContentHash::default();
        for d in [self.c, self.h, self.w] {
            h.update(&(d as u64).to_le_bytes());
        }
        for v in self.image(i) {
            h.update(&v.to_le_bytes());
        }
        format!("{:016x}", h.finish())
    }

    /// A new set holding the images (and labels) at `idx`, in that order; repeats are allowed.
    ///
    /// # Panics
    /// If an index is `>= self.n`.
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        let mut data = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            data.extend_from_slice(self.image(i));
        }
        let labels = self.labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect());
        let class_names = self.class_names.clone();
        let sources = idx.iter().map(|&i| self.source(i)).collect();
        ImageSet { data, n: idx.len(), c: self.c, h: self.h, w: self.w, labels, class_names, sources }
    }

    /// Attaches `labels` read from `path`; an error naming `path` if there is not exactly one
    /// label per image.
    pub fn with_labels(self, labels: Vec<i64>, path: &Path) -> Result<ImageSet> {
        if labels.len() != self.n {
            return Err(Error::data(
                path,
                format!("holds {} labels but there are {} images", labels.len(), self.n),
            ));
        }
        Ok(ImageSet { labels: Some(labels), ..self })
    }
}

/// Loads images from an npy or idx file (raw or gzipped), recognised by content, or from a
/// folder of PNG/JPEG files, as they are: [`load_images_with`] with default options.
///
/// Files give no labels; attach them with [`ImageSet::with_labels`]. A folder of class
/// sub-folders gives labels and class names.
pub fn load_images(path: &Path) -> Result<ImageSet> {
    load_images_with(path, &ImageOptions::default(), None, None)
}

/// Loads images from an npy or idx file or from a folder of PNG/JPEG files, then applies
/// `opts` (resize, center crop, channels) to every image.
///
/// A folder is read in one of three layouts (see the `folder` submodule): one sub-folder per
/// class (labels = index of the folder name sorted, or its line in the `classes` file), flat
/// with a `labels_csv` of `file,label` lines (paths relative to the folder), or flat without
/// labels. `classes` and `labels_csv` apply only to folders; given with a file, they are an
/// error.
pub fn load_images_with(
    path: &Path,
    opts: &ImageOptions,
    classes: Option<&Path>,
    labels_csv: Option<&Path>,
) -> Result<ImageSet> {
    opts.validate()?;
    if path.is_dir() {
        return folder::load_folder(path, opts, classes, labels_csv);
    }
    if let Some(extra) = classes.or(labels_csv) {
        return Err(Error::data(
            extra,
            format!(
                "a classes file or labels CSV applies to a folder of images, but {} is a file",
                path.display()
            ),
        ));
    }
    let bytes = bounded::read_data(path)?;
    let set = match Format::sniff(&bytes) {
        Some(Format::Npy) => npy::parse_images(&bytes, path),
        Some(Format::Idx) => idx::parse_images(&bytes, path),
        None => Err(unknown_format(&bytes, path)),
    }?;
    set.preprocess(opts, path)
}

/// The sources of the `n` images of the file `path`: `name[i]` (see [`ImageSet::sources`]).
pub(crate) fn file_sources(path: &Path, n: usize) -> Vec<String> {
    let name =
        path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
    (0..n).map(|i| format!("{name}[{i}]")).collect()
}

/// Loads 1-D integer labels from an idx1 ubyte file (raw or gzipped) or an npy file of
/// int64, int32, int16 or uint8.
pub fn load_labels(path: &Path) -> Result<Vec<i64>> {
    let bytes = bounded::read_data(path)?;
    match Format::sniff(&bytes) {
        Some(Format::Npy) => npy::parse_labels(&bytes, path),
        Some(Format::Idx) => idx::parse_labels(&bytes, path),
        None => Err(unknown_format(&bytes, path)),
    }
}

/// A 2-D map of f32 values [h·w] (row-major) with its height and width.
#[derive(Debug, Clone, PartialEq)]
pub struct Map2d {
    /// The values, row-major.
    pub data: Vec<f32>,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// Loads a 2-D map (a region mask, a target attribution map) from an npy file (any integer or
/// float32 dtype; shape H×W, or 1×H×W / 1×1×H×W) or a PNG image (8- or 16-bit grey, grey+alpha,
/// RGB or RGBA; the first channel scaled to [0, 1]). The format is told by the content.
pub fn load_map(path: &Path) -> Result<Map2d> {
    let bytes = bounded::read_data(path)?;
    if bytes.starts_with(npy::MAGIC) {
        let (data, shape) = npy::parse_array(&bytes, path)?;
        let dims: Vec<usize> = shape.iter().copied().skip_while(|&d| d == 1).collect();
        return match (dims.as_slice(), shape.len()) {
            (&[h, w], _) => Ok(Map2d { data, h, w }),
            (&[w], 2..) => Ok(Map2d { data, h: 1, w }),
            _ => Err(Error::data(path, format!("a map must be H×W (or 1×H×W), found shape {shape:?}"))),
        };
    }
    if bytes.starts_with(b"\x89PNG") {
        // Refused before the decoder allocates what the header declares.
        if let Some(declared) = declared::Declared::png(&bytes) {
            declared.check(path, "PNG map")?;
        }
        return load_png(&bytes, path);
    }
    Err(Error::data(path, format!("not an npy or PNG file (first bytes {})", hex_prefix(&bytes, 8))))
}

fn load_png(bytes: &[u8], path: &Path) -> Result<Map2d> {
    let bad = |e: String| Error::data(path, format!("unreadable PNG: {e}"));
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (h, w) = (info.height as usize, info.width as usize);
    let channels = info.color_type.samples();
    let (bytes_per, max) = match info.bit_depth {
        png::BitDepth::Sixteen => (2, 65535.0f32),
        _ => (1, 255.0f32),
    };
    let stride = channels * bytes_per;
    let data = (0..h * w)
        .map(|i| {
            let (row, col) = (i / w, i % w);
            let at = row * info.line_size + col * stride;
            let v = if bytes_per == 2 {
                u16::from_be_bytes([buf[at], buf[at + 1]]) as f32
            } else {
                buf[at] as f32
            };
            v / max
        })
        .collect();
    Ok(Map2d { data, h, w })
}

/// The two formats we read, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Npy,
    Idx,
}

impl Format {
    fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(npy::MAGIC) {
            Some(Format::Npy)
        } else if bytes.starts_with(&[0, 0]) {
            // idx has no real magic beyond two zero bytes; its parser checks the rest.
            Some(Format::Idx)
        } else {
            None
        }
    }
}

fn unknown_format(bytes: &[u8], path: &Path) -> Error {
    Error::data(
        path,
        format!(
            "not an idx or npy file: starts with {}, expected idx (00 00 <dtype> <ndim>) or \
             npy (93 'NUMPY'), optionally gzipped",
            hex_prefix(bytes, 6)
        ),
    )
}

/// The first `n` bytes as space-separated hex, for error messages.
pub(crate) fn hex_prefix(bytes: &[u8], n: usize) -> String {
    if bytes.is_empty() {
        return "nothing (empty file)".to_string();
    }
    let hex: Vec<String> = bytes.iter().take(n).map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn set() -> ImageSet {
        // 3 images of 1×1×2: image i holds [i/10, i/10 + 0.05].
        let data = vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.25];
        let sources = file_sources(Path::new("dir/x.npy"), 3);
        ImageSet { data, n: 3, c: 1, h: 1, w: 2, labels: Some(vec![7, 8, 9]), class_names: None, sources }
    }

    #[test]
    fn image_and_select_keep_rows_and_labels_in_order() {
        let s = set();
        assert_eq!(s.image_len(), 2);
        assert_eq!(s.image(1), &[0.1, 0.15]);
        let t = s.select(&[2, 0, 2]);
        assert_eq!(t.n, 3);
        assert_eq!(t.data, vec![0.2, 0.25, 0.0, 0.05, 0.2, 0.25]);
        assert_eq!(t.labels, Some(vec![9, 7, 9]));
        assert_eq!(t.sources, ["x.npy[2]", "x.npy[0]", "x.npy[2]"]);
    }

    #[test]
    fn image_hashes_follow_the_pixels_and_the_shape() {
        let s = set();
        assert_eq!(s.image_hash(0), s.select(&[0]).image_hash(0));
        assert_ne!(s.image_hash(0), s.image_hash(1));
        // The same values in another shape are another input.
        let t = ImageSet { h: 2, w: 1, ..set() };
        assert_ne!(s.image_hash(0), t.image_hash(0));
        assert_eq!(s.image_hash(0).len(), 16);
    }

    #[test]
    fn with_labels_rejects_wrong_count_naming_the_file() {
        let s = ImageSet { labels: None, ..set() };
        let err = s.clone().with_labels(vec![1, 2], Path::new("lab.npy")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lab.npy") && msg.contains("2 labels") && msg.contains("3 images"));
        assert_eq!(s.with_labels(vec![1, 2, 3], Path::new("x")).unwrap().labels, Some(vec![1, 2, 3]));
    }

    #[test]
    fn unknown_format_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.bin");
        std::fs::write(&p, b"hello world").unwrap();
        let msg = load_images(&p).unwrap_err().to_string();
        assert!(msg.contains("junk.bin") && msg.contains("not an idx or npy file"), "{msg}");
        assert!(msg.contains("68 65 6c"), "{msg}");
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        // An npy file, gzipped, under a name that says neither.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.npy");
        write_npy_f32(&plain, &[0.0, 0.5, 1.0, 0.25], &[1, 1, 2, 2]).unwrap();
        let gz = dir.path().join("images.dat");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let (from_gz, from_plain) = (load_images(&gz).unwrap(), load_images(&plain).unwrap());
        // The same images, each named after the file it came from.
        assert_eq!(from_gz.sources, ["images.dat[0]"]);
        assert_eq!(ImageSet { sources: from_plain.sources.clone(), ..from_gz }, from_plain);
    }

    #[test]
    fn corrupt_gzip_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        let msg = load_labels(&p).unwrap_err().to_string();
        assert!(msg.contains("bad.gz") && msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = load_images(Path::new("/nonexistent/x.npy")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/x.npy"));
    }

    #[test]
    fn npy_and_idx_images_are_preprocessed_like_folders() {
        // A Fashion-MNIST-sized npy file (2×1×28×28) resized to 32×32 and made RGB.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fm.npy");
        let data: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 29) as f32 / 28.0).collect();
        write_npy_f32(&p, &data, &[2, 1, 28, 28]).unwrap();
        let opts = ImageOptions { resize: Some(32), crop: None, channels: Some(3) };
        let s = load_images_with(&p, &opts, None, None).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (2, 3, 32, 32));
        let plain = load_images(&p).unwrap().resized(32, 32).unwrap();
        assert_eq!(&s.image(1)[2 * 1024..], plain.image(1));
        // A crop larger than the images names the file.
        let big = ImageOptions { crop: Some(29), ..Default::default() };
        let msg = load_images_with(&p, &big, None, None).unwrap_err().to_string();
        assert!(msg.contains("fm.npy") && msg.contains("29×29"), "{msg}");
    }

    #[test]
    fn classes_or_csv_with_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy_f32(&p, &[0.0; 4], &[1, 1, 2, 2]).unwrap();
        let csv = dir.path().join("labels.csv");
        let err = load_images_with(&p, &ImageOptions::default(), None, Some(&csv)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("labels.csv") && err.to_string().contains("a.npy"), "{err}");
    }

    #[test]
    fn maps_load_from_npy_and_png_with_their_shape() {
        let dir = tempfile::tempdir().unwrap();
        // npy 1×2×3 (a leading 1 is dropped).
        let npy = dir.path().join("m.npy");
        write_npy_f32(&npy, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[1, 2, 3]).unwrap();
        assert_eq!(load_map(&npy).unwrap(), Map2d { data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], h: 2, w: 3 });
        // An 8-bit RGB PNG 3×2 (our own encoder): the first channel, scaled to [0, 1].
        let png = dir.path().join("m.png");
        let image = crate::report::png::Rendering {
            width: 3,
            height: 2,
            rgb: vec![
                0, 9, 9, 255, 9, 9, 51, 9, 9, //
                102, 0, 0, 204, 0, 0, 255, 255, 255,
            ],
        };
        let mut bytes = Vec::new();
        crate::report::png::encode_png(&mut bytes, &image).unwrap();
        std::fs::write(&png, bytes).unwrap();
        let m = load_map(&png).unwrap();
        assert_eq!((m.h, m.w), (2, 3));
        let want = [0.0, 1.0, 0.2, 0.4, 0.8, 1.0];
        assert!(m.data.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", m.data);
        // 3-D with a real first dimension is refused, naming the file.
        let bad = dir.path().join("bad.npy");
        write_npy_f32(&bad, &[0.0; 8], &[2, 2, 2]).unwrap();
        let err = load_map(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.npy") && err.contains("H×W"), "{err}");
        let txt = dir.path().join("x.txt");
        std::fs::write(&txt, "hello").unwrap();
        assert!(load_map(&txt).unwrap_err().to_string().contains("not an npy or PNG"));
    }

    #[test]
    fn map_header_bombs_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mask.png");
        std::fs::write(&p, declared::tests::png_header(200_000, 200_000, 0)).unwrap();
        let err = load_map(&p).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(msg.contains("mask.png") && msg.contains("200000×200000 pixels × 1 channel ("), "{msg}");
    }
}
