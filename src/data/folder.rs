//! Folders of PNG and JPEG files: the ImageNet-style class layout and a flat folder with a CSV.
//!
//! What: a directory of image files becomes one [`ImageSet`] (`N×C×H×W`, f32 in `[0, 1]`),
//! labelled when the layout says how. Three layouts, told apart automatically:
//!
//! - **one sub-folder per class** (torchvision's `ImageFolder`, the ImageNet validation layout
//!   `val/n01440764/*.JPEG`): the classes are the sub-folder names sorted by name (byte order,
//!   as Python's `sorted`) and an image's label is the index of its folder. With a `classes`
//!   file (one class name per line, e.g. `cut -d' ' -f1 LOC_synset_mapping.txt`), the label is
//!   the 0-based line of the folder's name instead, and a folder not listed is an error naming
//!   it. Images come class by class in label order, and sorted by path within a class
//!   (sub-folders of a class folder are searched too). Image files next to the class folders
//!   are an error (they would have no class).
//! - **a flat folder plus a labels CSV** (`file,label` lines, paths relative to the folder,
//!   label an integer; a header line such as `file,label` is optional, fields may be quoted):
//!   images in CSV order; files in the folder that the CSV does not list are not loaded. A
//!   listed file that is missing, a non-integer label, a duplicate file or a line without
//!   exactly two fields is an error naming the CSV line. A `classes` file may name the labels.
//! - **a flat folder without CSV**: every image, sorted by name, without labels.
//!
//! Only files named `*.png`, `*.jpg` or `*.jpeg` (any case) are read when scanning a folder;
//! others (a README, `.txt` annotations) are ignored, as are names starting with `.` (hidden
//! files and folders: `.ipynb_checkpoints`, macOS `._*` files). Files in other image formats
//! (`.webp`, `.gif`, `.bmp`, `.tif`, ...) are skipped too, but with one line on stderr that
//! counts them by extension: torchvision's `ImageFolder` would read them, so a study would
//! otherwise silently hold fewer images than the PyTorch pipeline it is compared with. (We
//! skip rather than refuse: a stray file should not block a study; the note makes it seen.)
//! A file that cannot be decoded (corrupt, truncated, another format under an image name) is
//! an error naming it; so is one whose header declares more than
//! [`MAX_IMAGE_VALUES`](super::MAX_IMAGE_VALUES) values (checked before decoding).
//!
//! Pixels: 8-bit values are divided by 255, 16-bit PNGs by 65535 (torchvision's `ToTensor`).
//! Grey images (with or without alpha) have 1 channel, colour ones 3 (alpha dropped, as PIL's
//! `convert("RGB")`); if a folder mixes both and no `channels` option is given, grey images
//! are repeated to RGB. JPEG pixels equal PIL's (libjpeg-turbo's decoder; submodule `jpeg`);
//! PNG is exact. EXIF orientation is not applied (PIL and torchvision do not apply it either).
//!
//! Each image is decoded and preprocessed ([`ImageOptions`]: resize, crop, channels) on its
//! own, in parallel, with the same f32 resampler as idx and npy images; afterwards every image
//! must have one size, or the first one that differs is named with a hint to set `resize` and
//! `crop`.
//!
//! Why the `image` crate for PNG: well kept, pure Rust, and `plotters` already builds the same
//! version (0.24) with the `png` and `jpeg` features, so it adds no crate and no build time.
//! JPEG goes to libjpeg-turbo's decoder instead (see the `jpeg` submodule for why).

use super::declared::{Declared, MAX_IMAGE_FILE_BYTES};
use super::jpeg;
use super::preprocess::ImageOptions;
use super::ImageSet;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How deep class folders may nest (guards against symbolic-link cycles).
const MAX_DEPTH: usize = 16;

/// Loads a folder of images in one of the three layouts of the module docs, preprocessed by
/// `opts`. `classes` is a file of class names (one per line); `labels_csv` a `file,label` CSV
/// for a flat folder.
pub(crate) fn load_folder(
    dir: &Path,
    opts: &ImageOptions,
    classes: Option<&Path>,
    labels_csv: Option<&Path>,
) -> Result<ImageSet> {
    Ok(load_folder_picked(dir, opts, classes, labels_csv, |n| Ok((0..n).collect()))?.0)
}

/// [`load_folder`] of only the images `pick` chooses, given how many the folder lists: the
/// listing comes first, so the images left out are never decoded nor resized (`explain --count
/// 1 --resize 2000` on a large folder decodes one image). The set holds the picked images in
/// the order of the ids returned beside it; ids are positions in the whole folder's order.
pub(crate) fn load_folder_picked(
    dir: &Path,
    opts: &ImageOptions,
    classes: Option<&Path>,
    labels_csv: Option<&Path>,
    pick: impl FnOnce(usize) -> Result<Vec<usize>>,
) -> Result<(ImageSet, Vec<usize>)> {
    opts.validate()?;
    let (files, labels, class_names) = list_folder(dir, classes, labels_csv)?;
    let ids = pick(files.len())?;
    if ids.is_empty() {
        return Err(Error::data(dir, "no image selected"));
    }
    let picked: Vec<PathBuf> = ids.iter().map(|&i| files[i].clone()).collect();
    let mut set = stack(&picked, opts)?;
    set.labels = labels.map(|l| ids.iter().map(|&i| l[i]).collect());
    set.class_names = class_names;
    // Each image named by its path relative to the folder, with `/` on every platform.
    set.sources = picked
        .iter()
        .map(|f| f.strip_prefix(dir).unwrap_or(f).to_string_lossy().replace('\\', "/"))
        .collect();
    Ok((set, ids))
}

/// A folder's image files in the order of its layout, their labels and the class names,
/// where the layout gives them.
type FolderListing = (Vec<PathBuf>, Option<Vec<i64>>, Option<Vec<String>>);

/// The image files of a folder in the order of its layout, with their labels and the class
/// names where the layout gives them (see the module docs); nothing is decoded.
fn list_folder(dir: &Path, classes: Option<&Path>, labels_csv: Option<&Path>) -> Result<FolderListing> {
    let names = classes.map(read_classes).transpose()?;
    let mut skipped = Skipped::default();
    let (files, labels, class_names) = if let Some(csv) = labels_csv {
        let rows = read_labels_csv(csv, dir, names.as_ref().map(Vec::len))?;
        let (files, labels) = rows.into_iter().unzip();
        (files, Some(labels), names)
    } else {
        let listing = list_dir(dir, &mut skipped)?;
        if listing.dirs.is_empty() {
            if let Some(classes) = classes {
                return Err(Error::data(
                    classes,
                    format!("a classes file needs class sub-folders in {} or a labels CSV", dir.display()),
                ));
            }
            (listing.images, None, None)
        } else {
            if let Some(stray) = listing.images.first() {
                return Err(Error::data(
                    stray,
                    "this image lies next to the class sub-folders and so has no class; move it \
                     into its class's folder",
                ));
            }
            let (files, labels, class_names) = class_layout(listing.dirs, names, classes, &mut skipped)?;
            (files, Some(labels), Some(class_names))
        }
    };
    if files.is_empty() {
        let but = skipped.counts().map(|c| format!(" (only other image files: {c})")).unwrap_or_default();
        return Err(Error::data(dir, format!("no PNG or JPEG images (*.png, *.jpg, *.jpeg) found{but}")));
    }
    if let Some(note) = skipped.note(dir) {
        eprintln!("{note}");
    }
    Ok((files, labels, class_names))
}

/// The visible entries of a folder: sub-folders (name, path) sorted by name, and image files
/// sorted by path.
struct Listing {
    dirs: Vec<(String, PathBuf)>,
    images: Vec<PathBuf>,
}

/// Files that look like images in a format we do not read (torchvision's `ImageFolder` reads
/// them through PIL), counted by lower-case extension: they are skipped, and said so.
#[derive(Debug, Default)]
struct Skipped(std::collections::BTreeMap<String, usize>);

/// Extensions of image formats PIL reads and we do not.
const OTHER_IMAGE_EXTENSIONS: &[&str] =
    &["webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm", "heic", "heif", "avif", "jxl", "jp2"];

impl Skipped {
    fn see(&mut self, path: &Path) {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if let Some(ext) = ext.filter(|e| OTHER_IMAGE_EXTENSIONS.contains(&e.as_str())) {
            *self.0.entry(ext).or_default() += 1;
        }
    }

    /// "2 .webp, 1 .gif", or None when nothing was skipped.
    fn counts(&self) -> Option<String> {
        let parts: Vec<String> = self.0.iter().map(|(ext, n)| format!("{n} .{ext}")).collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The one line printed when a folder's images were read but some files were skipped.
    fn note(&self, dir: &Path) -> Option<String> {
        let total: usize = self.0.values().sum();
        self.counts().map(|counts| {
            format!(
                "note: {}: skipped {total} image file{} that {} not PNG or JPEG ({counts}); only *.png, \
                 *.jpg and *.jpeg are read (convert the others to PNG to study them)",
                dir.display(),
                if total == 1 { "" } else { "s" },
                if total == 1 { "is" } else { "are" },
            )
        })
    }
}

fn list_dir(dir: &Path, skipped: &mut Skipped) -> Result<Listing> {
    let mut listing = Listing { dirs: Vec::new(), images: Vec::new() };
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name() else { continue };
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // `metadata` follows symbolic links, so a linked folder or image counts as one.
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            let name = name
                .to_str()
                .ok_or_else(|| Error::data(&path, "a class folder name must be valid UTF-8"))?
                .to_string();
            listing.dirs.push((name, path));
        } else if meta.is_file() && is_image_name(&path) {
            listing.images.push(path);
        } else if meta.is_file() {
            skipped.see(&path);
        }
    }
    listing.dirs.sort();
    listing.images.sort();
    Ok(listing)
}

/// True for names ending in `.png`, `.jpg` or `.jpeg`, in any case.
fn is_image_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// Every image file under `dir` (recursively), sorted by path.
fn images_under(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, skipped: &mut Skipped) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::data(dir, format!("folders nest deeper than {MAX_DEPTH} levels (a link cycle?)")));
    }
    let listing = list_dir(dir, skipped)?;
    out.extend(listing.images);
    for (_, sub) in listing.dirs {
        images_under(&sub, depth + 1, out, skipped)?;
    }
    Ok(())
}

/// Files and labels of the class layout, class by class in label order, and the class names
/// indexed by label.
fn class_layout(
    dirs: Vec<(String, PathBuf)>,
    names: Option<Vec<String>>,
    classes: Option<&Path>,
    skipped: &mut Skipped,
) -> Result<(Vec<PathBuf>, Vec<i64>, Vec<String>)> {
    let (mut labelled, class_names) = match (names, classes) {
        (Some(names), Some(classes)) => {
            let index: HashMap<&str, usize> =
                names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
            let mut labelled = Vec::with_capacity(dirs.len());
            for (name, path) in dirs {
                let Some(&label) = index.get(name.as_str()) else {
                    return Err(Error::data(
                        &path,
                        format!(
                            "class folder '{name}' is not listed in the classes file {}",
                            classes.display()
                        ),
                    ));
                };
                labelled.push((label, path));
            }
            (labelled, names)
        }
        _ => {
            let names = dirs.iter().map(|(n, _)| n.clone()).collect();
            (dirs.into_iter().enumerate().map(|(i, (_, p))| (i, p)).collect(), names)
        }
    };
    labelled.sort();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, dir) in labelled {
        let before = files.len();
        images_under(&dir, 1, &mut files, skipped)?;
        files[before..].sort();
        labels.resize(files.len(), label as i64);
    }
    Ok((files, labels, class_names))
}

/// Reads a classes file: one name per line (surrounding spaces trimmed); blank lines at the
/// end are ignored, elsewhere (they would shift every later label) and duplicates are errors.
pub(crate) fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let used = lines.iter().rposition(|l| !l.is_empty()).map_or(0, |i| i + 1);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in lines[..used].iter().enumerate() {
        if name.is_empty() {
            return Err(Error::data(
                path,
                format!("line {}: blank line (the label of a class is its line number, 0-based)", i + 1),
            ));
        }
        if let Some(first) = seen.insert(name, i + 1) {
            return Err(Error::data(path, format!("line {}: class '{name}' repeats line {first}", i + 1)));
        }
    }
    if used == 0 {
        return Err(Error::data(path, "the classes file lists no class"));
    }
    Ok(lines[..used].iter().map(|s| s.to_string()).collect())
}

/// Reads a `file,label` CSV: the image paths (relative to `dir`) and labels, in order. With
/// `n_classes`, labels must lie in `0..n_classes`.
fn read_labels_csv(csv: &Path, dir: &Path, n_classes: Option<usize>) -> Result<Vec<(PathBuf, i64)>> {
    let text = read_text(csv)?;
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let at = |msg: String| Error::data(csv, format!("line {}: {msg}", i + 1));
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv_line(line).map_err(at)?;
        let [file, label] = fields.as_slice() else {
            return Err(at(format!("expected 2 fields `file,label`, found {}", fields.len())));
        };
        let (file, label) = (file.trim(), label.trim());
        let parsed = label.parse::<i64>();
        // A first line whose label is not a number and whose file is not an image name is a
        // header (`file,label`, `filename,class`, ...).
        let header = first && parsed.is_err() && !is_image_name(Path::new(file));
        first = false;
        if header {
            continue;
        }
        let label = parsed.map_err(|_| at(format!("label '{label}' is not an integer")))?;
        if let Some(n) = n_classes {
            if !(0..n as i64).contains(&label) {
                return Err(at(format!("label {label} is outside the {n} classes of the classes file")));
            }
        }
        if file.is_empty() {
            return Err(at("empty file name".to_string()));
        }
        let key = file.trim_start_matches("./").to_string();
        if let Some(prev) = seen.insert(key, i + 1) {
            return Err(at(format!("file '{file}' is listed twice (first on line {prev})")));
        }
        let path = dir.join(file);
        if !path.is_file() {
            return Err(at(format!("file '{file}' not found in {}", dir.display())));
        }
        rows.push((path, label));
    }
    Ok(rows)
}

/// Splits one CSV line into fields: commas separate, a field in double quotes may hold commas
/// and `""` for a quote. Errors are messages for the caller to place.
fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".to_string()),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                match chars.next() {
                    Some(c) if c.is_whitespace() => {}
                    _ => return Err("text after a closing quote".to_string()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                field.push(c);
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// The most bytes a labels CSV or a classes file may have (a million labelled files fit).
const MAX_TEXT_BYTES: u64 = 256 << 20;

/// A whole text file, without a leading byte-order mark.
fn read_text(path: &Path) -> Result<String> {
    let bytes = super::read_capped(path, MAX_TEXT_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::data(path, format!("not UTF-8 text: {e}")))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// Decodes and preprocesses every file (in parallel), then stacks them in order into one set.
fn stack(files: &[PathBuf], opts: &ImageOptions) -> Result<ImageSet> {
    let images: Vec<Result<ImageSet>> =
        files.par_iter().map(|f| decode(f).and_then(|im| im.preprocess(opts, f))).collect();
    let mut images = images.into_iter().collect::<Result<Vec<ImageSet>>>()?;
    // Sizes: every image like the first.
    let (h, w) = (images[0].h, images[0].w);
    if let Some(i) = images.iter().position(|im| (im.h, im.w) != (h, w)) {
        return Err(Error::data(
            &files[i],
            format!(
                "is {}×{} (H×W) after preprocessing but {} is {h}×{w}; all images must have one \
                 size: set `resize` and `crop` (e.g. resize = 256, crop = 224)",
                images[i].h,
                images[i].w,
                files[0].display()
            ),
        ));
    }
    // Channels: the requested count (already applied) or, in a folder mixing grey and RGB, RGB.
    let c = images.iter().map(|im| im.c).max().unwrap_or(1);
    let mut data = Vec::with_capacity(images.len() * c * h * w);
    for (im, file) in images.drain(..).zip(files) {
        data.extend(im.with_channels(c, file)?.data);
    }
    Ok(ImageSet { data, n: files.len(), c, h, w, labels: None, class_names: None, sources: Vec::new() })
}

/// Decodes one PNG or JPEG file (recognised by content) into a 1-image set: grey (1 channel)
/// or RGB (3), planar, in `[0, 1]`. The file is read through the bounded reader and its
/// declared size checked before the decoder allocates it (see the `declared` submodule).
fn decode(path: &Path) -> Result<ImageSet> {
    let bytes = super::read_capped(path, MAX_IMAGE_FILE_BYTES)?;
    if bytes.starts_with(jpeg::MAGIC) {
        return jpeg::decode(&bytes, path);
    }
    if let Some(declared) = Declared::png(&bytes) {
        declared.check(path, "PNG image")?;
    }
    // A decoder bug must not take the whole run down with a panic: report the file instead.
    let decoded =
        std::panic::catch_unwind(|| image::load_from_memory_with_format(&bytes, image::ImageFormat::Png));
    let img = match decoded {
        Ok(Ok(img)) => img,
        Ok(Err(e)) => return Err(Error::data(path, format!("not a readable PNG or JPEG image: {e}"))),
        Err(_) => return Err(Error::data(path, "the image decoder failed on this file (corrupt?)")),
    };
    let (h, w) = (img.height() as usize, img.width() as usize);
    let sixteen = img.color().bytes_per_pixel() > img.color().channel_count();
    // Straight from the integer samples to planar f32: no interleaved f32 copy.
    let (c, data) = match (img.color().has_color(), sixteen) {
        (true, true) => (3, planar(&img.into_rgb16().into_raw(), 3, 65535.0)),
        (true, false) => (3, planar(&img.into_rgb8().into_raw(), 3, 255.0)),
        (false, true) => (1, planar(&img.into_luma16().into_raw(), 1, 65535.0)),
        (false, false) => (1, planar(&img.into_luma8().into_raw(), 1, 255.0)),
    };
    Ok(ImageSet { data, n: 1, c, h, w, labels: None, class_names: None, sources: Vec::new() })
}

/// Interleaved samples of `c` channels as planar f32, each divided by `max`.
fn planar<T: Copy + Into<f32>>(samples: &[T], c: usize, max: f32) -> Vec<f32> {
    (0..c).flat_map(|ch| samples.iter().skip(ch).step_by(c).map(move |&v| v.into() / max)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// An RGB PNG `w × h` whose pixel (x, y) is (10x + k, 20y + k, 30 + k), so that every image
    /// and position can be told apart.
    fn rgb_png(path: &Path, w: u32, h: u32, k: u8) {
        RgbImage::from_fn(w, h, |x, y| Rgb([10 * x as u8 + k, 20 * y as u8 + k, 30 + k])).save(path).unwrap();
    }

    fn grey_png(path: &Path, w: u32, h: u32, v: u8) {
        GrayImage::from_pixel(w, h, Luma([v])).save(path).unwrap();
    }

    fn solid_jpeg(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        RgbImage::from_pixel(w, h, Rgb(rgb)).save(path).unwrap();
    }

    fn load(dir: &Path) -> Result<ImageSet> {
        load_folder(dir, &ImageOptions::default(), None, None)
    }

    fn message(r: Result<ImageSet>) -> String {
        let err = r.unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2, "{msg}");
        msg
    }

    /// Three class folders, written out of order: ant (2 PNGs), bee (1 JPEG), cat (1 PNG);
    /// plus files that must be ignored.
    fn class_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for class in ["cat", "ant", "bee"] {
            std::fs::create_dir(t.path().join(class)).unwrap();
        }
        rgb_png(&t.path().join("cat/z.png"), 3, 2, 3);
        rgb_png(&t.path().join("ant/b.PNG"), 3, 2, 2);
        rgb_png(&t.path().join("ant/a.png"), 3, 2, 1);
        solid_jpeg(&t.path().join("bee/only.jpg"), 3, 2, [200, 100, 50]);
        std::fs::write(t.path().join("ant/notes.txt"), "not an image").unwrap();
        std::fs::write(t.path().join("ant/.hidden.png"), "garbage").unwrap();
        std::fs::create_dir(t.path().join(".ipynb_checkpoints")).unwrap();
        std::fs::write(t.path().join("README"), "ignored").unwrap();
        t
    }

    #[test]
    fn class_folders_are_labelled_by_sorted_name() {
        let t = class_tree();
        let s = load(t.path()).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (4, 3, 2, 3));
        // ant/a.png, ant/b.PNG, bee/only.jpg, cat/z.png.
        assert_eq!(s.labels, Some(vec![0, 0, 1, 2]));
        assert_eq!(s.class_names, Some(vec!["ant".into(), "bee".into(), "cat".into()]));
        // Each image traces to its file, relative to the folder.
        assert_eq!(s.sources, ["ant/a.png", "ant/b.PNG", "bee/only.jpg", "cat/z.png"]);
        // PNG pixels are exact: image 1 (k = 2), planar: R plane then G then B.
        let r: Vec<f32> = [2u8, 12, 22, 2, 12, 22].iter().map(|&v| f32::from(v) / 255.0).collect();
        let g: Vec<f32> = [2u8, 2, 2, 22, 22, 22].iter().map(|&v| f32::from(v) / 255.0).collect();
        assert_eq!(&s.image(1)[..6], r.as_slice());
        assert_eq!(&s.image(1)[6..12], g.as_slice());
        assert!(s.image(1)[12..].iter().all(|&b| b == 32.0 / 255.0));
        // A solid JPEG decodes to within a few levels of its colour (lossy, but flat).
        let bee = s.image(2);
        for (ch, want) in [200.0f32, 100.0, 50.0].iter().enumerate() {
            assert!(bee[ch * 6..(ch + 1) * 6].iter().all(|v| (v * 255.0 - want).abs() <= 3.0), "{bee:?}");
        }
    }

    #[test]
    fn classes_file_gives_labels_by_line() {
        let t = class_tree();
        let classes = t.path().join("classes.txt");
        // Line order, not name order; a listed class without a folder ("dog") is fine; a
        // trailing blank line and a CRLF ending are tolerated.
        std::fs::write(&classes, "cat\r\ndog\nant\nbee\n\n").unwrap();
        let s = load_folder(t.path(), &ImageOptions::default(), Some(&classes), None).unwrap();
        // Class by class in label order: cat/z.png (0), ant/a, ant/b (2), bee/only (3).
        assert_eq!(s.labels, Some(vec![0, 2, 2, 3]));
        assert_eq!(s.class_names, Some(vec!["cat".into(), "dog".into(), "ant".into(), "bee".into()]));
        assert_eq!(s.image(0)[0], 3.0 / 255.0);
    }

    #[test]
    fn class_folder_not_in_the_classes_file_is_named() {
        let t = class_tree();
        let classes = t.path().join("classes.txt");
        std::fs::write(&classes, "ant\ncat\n").unwrap();
        let msg = message(load_folder(t.path(), &ImageOptions::default(), Some(&classes), None));
        assert!(msg.contains("'bee'") && msg.contains("classes.txt"), "{msg}");
    }

    #[test]
    fn classes_file_with_blank_or_repeated_lines_is_refused() {
        let t = class_tree();
        let classes = t.path().join("classes.txt");
        std::fs::write(&classes, "ant\n\nbee\ncat\n").unwrap();
        let msg = message(load_folder(t.path(), &ImageOptions::default(), Some(&classes), None));
        assert!(msg.contains("line 2") && msg.contains("blank"), "{msg}");
        std::fs::write(&classes, "ant\nbee\nant\ncat\n").unwrap();
        let msg = message(load_folder(t.path(), &ImageOptions::default(), Some(&classes), None));
        assert!(msg.contains("line 3") && msg.contains("repeats line 1"), "{msg}");
    }

    #[test]
    fn nested_folders_within_a_class_are_searched_in_path_order() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/sub")).unwrap();
        grey_png(&t.path().join("a/sub/x.png"), 2, 2, 10);
        grey_png(&t.path().join("a/y.png"), 2, 2, 20);
        grey_png(&t.path().join("a/b.png"), 2, 2, 30);
        let s = load(t.path()).unwrap();
        // a/b.png < a/sub/x.png < a/y.png.
        let firsts: Vec<f32> = (0..3).map(|i| s.image(i)[0] * 255.0).collect();
        assert_eq!(firsts, vec![30.0, 10.0, 20.0]);
        assert_eq!(s.c, 1);
    }

    #[test]
    fn image_next_to_class_folders_is_refused() {
        let t = class_tree();
        rgb_png(&t.path().join("stray.png"), 3, 2, 0);
        let msg = message(load(t.path()));
        assert!(msg.contains("stray.png") && msg.contains("no class"), "{msg}");
    }

    /// A flat folder: a.png (k = 1), b.png (k = 2), c.jpg, unlisted.png.
    fn flat_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        rgb_png(&t.path().join("a.png"), 3, 2, 1);
        rgb_png(&t.path().join("b.png"), 3, 2, 2);
        solid_jpeg(&t.path().join("c.jpg"), 3, 2, [0, 255, 0]);
        rgb_png(&t.path().join("unlisted.png"), 3, 2, 9);
        t
    }

    fn with_csv(t: &tempfile::TempDir, text: &str) -> Result<ImageSet> {
        let csv = t.path().join("labels.csv");
        std::fs::write(&csv, text).unwrap();
        load_folder(t.path(), &ImageOptions::default(), None, Some(&csv))
    }

    #[test]
    fn flat_folder_with_csv_keeps_csv_order_and_labels() {
        let t = flat_tree();
        for text in ["file,label\nb.png,7\nc.jpg,0\n\na.png,3\n", "b.png,7\n\"c.jpg\", 0\n./a.png,3"] {
            let s = with_csv(&t, text).unwrap();
            assert_eq!(s.n, 3, "{text}");
            assert_eq!(s.labels, Some(vec![7, 0, 3]));
            assert_eq!(s.class_names, None);
            assert_eq!(s.image(0)[0], 2.0 / 255.0);
            assert_eq!(s.image(2)[0], 1.0 / 255.0);
        }
    }

    #[test]
    fn csv_errors_name_the_line() {
        let t = flat_tree();
        for (text, want) in [
            ("file,label\na.png,1\nmissing.png,2\n", ["line 3", "'missing.png' not found"]),
            ("a.png,1\nb.png,cat\n", ["line 2", "'cat' is not an integer"]),
            ("a.png,1\nb.png,2\n./a.png,3\n", ["line 3", "listed twice (first on line 1)"]),
            ("a.png,1,extra\n", ["line 1", "expected 2 fields"]),
            ("a.png,1\n\"b.png,2\n", ["line 2", "unterminated"]),
            ("a.png,1.5\n", ["line 1", "'1.5' is not an integer"]),
        ] {
            let msg = message(with_csv(&t, text));
            assert!(msg.contains("labels.csv") && want.iter().all(|w| msg.contains(w)), "{text}: {msg}");
        }
    }

    #[test]
    fn csv_labels_are_checked_against_a_classes_file() {
        let t = flat_tree();
        let csv = t.path().join("labels.csv");
        let classes = t.path().join("names.txt");
        std::fs::write(&csv, "a.png,1\nb.png,2\n").unwrap();
        std::fs::write(&classes, "zero\none\n").unwrap();
        let msg = message(load_folder(t.path(), &ImageOptions::default(), Some(&classes), Some(&csv)));
        assert!(msg.contains("line 2") && msg.contains("outside the 2 classes"), "{msg}");
        std::fs::write(&csv, "a.png,1\nb.png,0\n").unwrap();
        let s = load_folder(t.path(), &ImageOptions::default(), Some(&classes), Some(&csv)).unwrap();
        assert_eq!((s.labels, s.class_names), (Some(vec![1, 0]), Some(vec!["zero".into(), "one".into()])));
    }

    #[test]
    fn flat_folder_without_csv_is_unlabelled_and_sorted() {
        let t = flat_tree();
        let s = load(t.path()).unwrap();
        assert_eq!((s.n, s.labels.as_ref()), (4, None));
        // a, b, c, unlisted.
        assert_eq!(s.image(3)[0], 9.0 / 255.0);
    }

    #[test]
    fn corrupt_and_truncated_images_are_named() {
        let t = flat_tree();
        std::fs::write(t.path().join("b.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let msg = message(load(t.path()));
        assert!(msg.contains("b.png") && msg.contains("not a readable PNG or JPEG"), "{msg}");
        let jpeg = std::fs::read(t.path().join("c.jpg")).unwrap();
        std::fs::write(t.path().join("b.png"), &jpeg[..jpeg.len() / 3]).unwrap();
        let msg = message(load(t.path()));
        assert!(msg.contains("b.png"), "{msg}");
        std::fs::write(t.path().join("b.png"), b"").unwrap();
        assert!(message(load(t.path())).contains("b.png"));
    }

    #[test]
    fn mixed_sizes_name_the_first_odd_file_unless_resized_and_cropped() {
        let t = tempfile::tempdir().unwrap();
        rgb_png(&t.path().join("1.png"), 6, 4, 0);
        rgb_png(&t.path().join("2.png"), 6, 4, 0);
        rgb_png(&t.path().join("3.png"), 4, 5, 0);
        rgb_png(&t.path().join("4.png"), 9, 9, 0);
        let msg = message(load(t.path()));
        assert!(msg.contains("3.png") && msg.contains("5×4") && msg.contains("resize"), "{msg}");
        // Resize(4) then CenterCrop(4): 6×4 -> 4×6 -> 4×4, 4×5 -> 5×4 -> 4×4, 9×9 -> 4×4.
        let opts = ImageOptions { resize: Some(4), crop: Some(4), channels: None };
        let s = load_folder(t.path(), &opts, None, None).unwrap();
        assert_eq!((s.n, s.c, s.h, s.w), (4, 3, 4, 4));
    }

    #[test]
    fn folder_resize_is_the_image_set_resize() {
        // A decoded PNG resized in the folder loader equals the same pixels resized as a set.
        let t = tempfile::tempdir().unwrap();
        rgb_png(&t.path().join("a.png"), 7, 5, 4);
        let raw = load(t.path()).unwrap();
        let opts = ImageOptions { resize: Some(3), crop: None, channels: Some(1) };
        let via_folder = load_folder(t.path(), &opts, None, None).unwrap();
        let via_set = raw.preprocess(&opts, Path::new("a.png")).unwrap();
        assert_eq!(via_folder.data, via_set.data);
        assert_eq!((via_folder.c, via_folder.h, via_folder.w), (1, 3, 4));
    }

    #[test]
    fn grey_and_colour_mixed_become_rgb_unless_channels_says_otherwise() {
        let t = tempfile::tempdir().unwrap();
        grey_png(&t.path().join("a.png"), 2, 2, 51);
        rgb_png(&t.path().join("b.png"), 2, 2, 0);
        let s = load(t.path()).unwrap();
        assert_eq!(s.c, 3);
        assert_eq!(s.image(0), &[0.2f32; 12][..]);
        let opts = ImageOptions { channels: Some(1), ..Default::default() };
        let g = load_folder(t.path(), &opts, None, None).unwrap();
        assert_eq!(g.c, 1);
        assert_eq!(g.image(0), &[0.2f32; 4][..]);
    }

    #[test]
    fn empty_folder_and_classes_without_sub_folders_are_errors() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("notes.txt"), "no images").unwrap();
        assert!(message(load(t.path())).contains("no PNG or JPEG"));
        let classes = t.path().join("classes.txt");
        std::fs::write(&classes, "a\n").unwrap();
        let msg = message(load_folder(t.path(), &ImageOptions::default(), Some(&classes), None));
        assert!(msg.contains("classes.txt") && msg.contains("sub-folders"), "{msg}");
    }

    #[test]
    fn header_bombs_in_a_folder_are_refused_before_decoding() {
        let t = flat_tree();
        let bomb = crate::data::declared::tests::png_header(200_000, 200_000, 2);
        std::fs::write(t.path().join("b.png"), bomb).unwrap();
        let msg = message(load(t.path()));
        assert!(msg.contains("b.png") && msg.contains("200000×200000 pixels × 3 channels"), "{msg}");
        std::fs::write(t.path().join("b.png"), crate::data::jpeg::tests::jpeg_header(60_000, 50_000))
            .unwrap();
        let msg = message(load(t.path()));
        assert!(msg.contains("b.png") && msg.contains("60000×50000 pixels × 3 channels"), "{msg}");
    }

    #[test]
    fn jpeg_in_a_folder_decodes_as_pil_does() {
        // The fixture's pixels through the folder loader, against the JPEG decoder alone.
        let t = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg/progressive_422.jpg");
        std::fs::copy(&fixture, t.path().join("p.JPEG")).unwrap();
        let s = load(t.path()).unwrap();
        let direct = jpeg::decode(&std::fs::read(&fixture).unwrap(), &fixture).unwrap();
        assert_eq!((s.c, s.h, s.w, &s.data), (3, 29, 37, &direct.data));
    }

    #[test]
    fn other_image_formats_are_skipped_and_counted() {
        let t = class_tree();
        for f in ["ant/x.webp", "ant/y.WEBP", "bee/z.gif", "cat/w.tiff"] {
            std::fs::write(t.path().join(f), "not read").unwrap();
        }
        let mut files = Vec::new();
        let mut skipped = Skipped::default();
        images_under(t.path(), 0, &mut files, &mut skipped).unwrap();
        assert_eq!(files.len(), 4, "the README and notes.txt are not images, and not counted");
        let note = skipped.note(Path::new("imgs")).unwrap();
        assert_eq!(
            note,
            "note: imgs: skipped 4 image files that are not PNG or JPEG (1 .gif, 1 .tiff, 2 .webp); \
             only *.png, *.jpg and *.jpeg are read (convert the others to PNG to study them)"
        );
        assert_eq!(load(t.path()).unwrap().n, 4);
        // A folder of only such files names them in its error.
        let only = tempfile::tempdir().unwrap();
        std::fs::write(only.path().join("a.webp"), "x").unwrap();
        let msg = message(load(only.path()));
        assert!(msg.contains("no PNG or JPEG") && msg.contains("only other image files: 1 .webp"), "{msg}");
        assert_eq!(Skipped::default().note(Path::new("imgs")), None);
    }

    #[test]
    fn csv_fields_split_with_quotes() {
        assert_eq!(split_csv_line("a.png,3").unwrap(), vec!["a.png", "3"]);
        assert_eq!(split_csv_line("\"x, \"\"y\"\".png\" ,4").unwrap(), vec!["x, \"y\".png", "4"]);
        assert_eq!(split_csv_line("a,").unwrap(), vec!["a", ""]);
        assert!(split_csv_line("\"a\"b,1").unwrap_err().contains("after a closing quote"));
    }
}
