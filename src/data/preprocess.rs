//! Preprocessing of an [`ImageSet`]: channel conversion, resize of the shorter side, center crop.
//!
//! What: [`ImageOptions`] says what to do, [`ImageSet::preprocess`] does it to every image,
//! whatever format the images came from (idx, npy, a folder of PNG/JPEG files). Shapes:
//! `N×C×H×W` in, `N×C'×H'×W'` out, values stay in `[0, 1]`, labels and class names are kept.
//!
//! Why here and not per format: one implementation on f32 planes means that a Fashion-MNIST
//! idx file (28×28) can be resized to the 32×32 or 64×64 a model was trained at, exactly as a
//! folder of JPEGs is resized to 256 and cropped to 224 for a torchvision model.
//!
//! The steps follow torchvision's `Resize(resize)` then `CenterCrop(crop)` (see the `resize`
//! submodule for the resampling formula and rounding). Channel conversion is done first when
//! it reduces the channels (RGB → grey) and last when it adds them (grey → RGB), which gives
//! the same result as converting first (both conversions are linear) with less work.

use super::resize::{center_crop_origin, crop, resample, shorter_side_size};
use super::ImageSet;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::Path;

/// What to do to every image after loading. The default does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Resize so that the shorter side has this many pixels, keeping the aspect ratio (the
    /// longer side becomes `int(resize · long / short)`, as torchvision's `Resize(int)`),
    /// with antialiased bilinear resampling.
    pub resize: Option<usize>,
    /// Cut the central `crop × crop` square (torchvision's `CenterCrop(int)`), after resizing.
    /// An image smaller than the crop is an error.
    pub crop: Option<usize>,
    /// Convert to this many channels: 1 (grey) or 3 (RGB). Grey → RGB repeats the channel;
    /// RGB → grey is ITU-R 601-2 luma, `L = R·299/1000 + G·587/1000 + B·114/1000` (as PIL's
    /// `convert("L")`).
    pub channels: Option<usize>,
}

impl ImageOptions {
    /// True when the options change nothing.
    pub fn is_identity(&self) -> bool {
        *self == ImageOptions::default()
    }

    /// Checks the values: `resize` and `crop` at least 1, `channels` 1 or 3.
    pub fn validate(&self) -> Result<()> {
        if self.resize == Some(0) {
            return Err(Error::Invalid("image option `resize` must be at least 1 pixel".into()));
        }
        if self.crop == Some(0) {
            return Err(Error::Invalid("image option `crop` must be at least 1 pixel".into()));
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(Error::Invalid(format!(
                    "image option `channels` must be 1 (grey) or 3 (RGB), found {c}"
                )));
            }
        }
        Ok(())
    }
}

/// The channel count that the `channels` option (config `data.channels`, explain's
/// `--channels`) would convert images of `got` channels to for a model taking `want`: `Some`
/// when they differ and both are 1 (grey) or 3 (RGB), for error messages to suggest it.
pub fn convertible_channels(want: usize, got: usize) -> Option<usize> {
    (want != got && matches!(want, 1 | 3) && matches!(got, 1 | 3)).then_some(want)
}

impl ImageSet {
    /// Applies `opts` to every image (see [`ImageOptions`]); `path` names the images' source
    /// in errors (a crop larger than the images, a channel count that cannot be converted).
    pub fn preprocess(self, opts: &ImageOptions, path: &Path) -> Result<ImageSet> {
        opts.validate()?;
        let mut set = self;
        if let Some(c) = opts.channels.filter(|&c| c < set.c) {
            set = set.with_channels(c, path)?;
        }
        if let Some(shorter) = opts.resize {
            let (h, w) = shorter_side_size(set.h, set.w, shorter).ok_or_else(|| {
                Error::data(path, format!("cannot resize {}×{} images to {shorter}", set.h, set.w))
            })?;
            set = set.resized(h, w)?;
        }
        if let Some(size) = opts.crop {
            set = set.center_cropped(size, path)?;
        }
        if let Some(c) = opts.channels.filter(|&c| c > set.c) {
            set = set.with_channels(c, path)?;
        }
        Ok(set)
    }

    /// The images resampled to `h × w` with antialiased bilinear filtering (PyTorch's
    /// `interpolate(mode="bilinear", antialias=True, align_corners=False)`), each channel on
    /// its own. Sizes must be at least 1.
    pub fn resized(self, h: usize, w: usize) -> Result<ImageSet> {
        if h == 0 || w == 0 {
            return Err(Error::Invalid(format!("cannot resize images to {h}×{w}")));
        }
        if (h, w) == (self.h, self.w) {
            return Ok(self);
        }
        let too_large =
            || Error::Invalid(format!("{} images of {}×{h}×{w} do not fit in memory", self.n, self.c));
        let len =
            [self.n, self.c, h, w].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(too_large)?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| too_large())?;
        data.resize(len, 0.0f32);
        let plane = self.h * self.w;
        if plane > 0 {
            data.par_chunks_mut(h * w).zip(self.data.par_chunks(plane)).for_each(|(out, src)| {
                // `resample` gives h × w values, or none for a plane of the wrong length.
                let plane = resample(src, self.h, self.w, h, w);
                if plane.len() == out.len() {
                    out.copy_from_slice(&plane);
                }
            });
        }
        Ok(ImageSet { data, h, w, ..self })
    }

    /// The central `size × size` square of every image, placed as torchvision's
    /// `CenterCrop(size)` places it; an error naming `path` if the images are smaller.
    pub fn center_cropped(self, size: usize, path: &Path) -> Result<ImageSet> {
        if size == 0 {
            return Err(Error::Invalid("a center crop must be at least 1 pixel".into()));
        }
        let (top, left) = center_crop_origin(self.h, self.w, size).ok_or_else(|| {
            Error::data(
                path,
                format!(
                    "center crop {size}×{size} is larger than the {}×{} (H×W) images; \
                     resize them first (`resize` ≥ {size}) or choose a smaller `crop`",
                    self.h, self.w
                ),
            )
        })?;
        if (size, size) == (self.h, self.w) {
            return Ok(self);
        }
        let plane = self.h * self.w;
        let data =
            self.data.chunks_exact(plane).flat_map(|p| crop(p, self.w, top, left, size, size)).collect();
        Ok(ImageSet { data, h: size, w: size, ..self })
    }

    /// The images with `c` channels: grey (1) → RGB (3) repeats the plane, RGB → grey is
    /// ITU-R 601-2 luma (`R·0.299 + G·0.587 + B·0.114`). Any other change is an error naming
    /// `path`.
    pub fn with_channels(self, c: usize, path: &Path) -> Result<ImageSet> {
        if c == self.c {
            return Ok(self);
        }
        // At least 1, so that `chunks_exact` is valid even for empty images.
        let plane = (self.h * self.w).max(1);
        let data: Vec<f32> = match (self.c, c) {
            (1, 3) => {
                self.data.chunks_exact(plane).flat_map(|p| p.iter().chain(p).chain(p)).copied().collect()
            }
            (3, 1) => self
                .data
                .chunks_exact(3 * plane)
                .flat_map(|img| {
                    let (r, gb) = img.split_at(plane);
                    let (g, b) = gb.split_at(plane);
                    r.iter().zip(g).zip(b).map(|((&r, &g), &b)| luma(r, g, b))
                })
                .collect(),
            (from, to) => {
                return Err(Error::data(
                    path,
                    format!(
                        "cannot convert {from}-channel images to {to} channels; only grey (1) ↔ \
                         RGB (3) is supported"
                    ),
                ))
            }
        };
        Ok(ImageSet { data, c, ..self })
    }
}

/// ITU-R 601-2 luma, PIL's `convert("L")`: `R·299/1000 + G·587/1000 + B·114/1000`.
fn luma(r: f32, g: f32, b: f32) -> f32 {
    // The weights sum to 1, so [0, 1] maps into [0, 1]; the clamp absorbs rounding above 1.
    (r * 0.299 + g * 0.587 + b * 0.114).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "imgs.npy";

    fn set(n: usize, c: usize, h: usize, w: usize) -> ImageSet {
        let data = (0..n * c * h * w).map(|i| (i % 17) as f32 / 16.0).collect();
        ImageSet {
            data,
            n,
            c,
            h,
            w,
            labels: Some((0..n as i64).collect()),
            class_names: None,
            sources: Vec::new(),
        }
    }

    #[test]
    fn default_options_change_nothing() {
        let s = set(2, 3, 5, 4);
        assert!(ImageOptions::default().is_identity());
        assert_eq!(s.clone().preprocess(&ImageOptions::default(), Path::new(P)).unwrap(), s);
    }

    #[test]
    fn fashion_mnist_sized_images_resize_to_a_model_size() {
        // 28×28 grey -> 64×64, every image and channel alike; labels are kept.
        let s = set(3, 1, 28, 28);
        let opts = ImageOptions { resize: Some(64), ..Default::default() };
        let r = s.clone().preprocess(&opts, Path::new(P)).unwrap();
        assert_eq!((r.n, r.c, r.h, r.w), (3, 1, 64, 64));
        assert_eq!(r.labels, s.labels);
        assert_eq!(r.image(2), resample(s.image(2), 28, 28, 64, 64).as_slice());
        assert!(r.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn resize_then_crop_gives_the_torchvision_shape() {
        // 2 RGB images 10×15 (H×W): Resize(6) -> 6×9, CenterCrop(4) -> rows 1..5, columns
        // round(2.5) = 2 .. 6.
        let s = set(2, 3, 10, 15);
        let opts = ImageOptions { resize: Some(6), crop: Some(4), channels: None };
        let r = s.clone().preprocess(&opts, Path::new(P)).unwrap();
        assert_eq!((r.n, r.c, r.h, r.w), (2, 3, 4, 4));
        let resized = s.resized(6, 9).unwrap();
        // Channel 2 of image 1, row 0 of the crop = row 1 of the resized plane, columns 2..6.
        let plane = &resized.image(1)[2 * 54..3 * 54];
        assert_eq!(&r.image(1)[2 * 16..2 * 16 + 4], &plane[9 + 2..9 + 6]);
    }

    #[test]
    fn crop_larger_than_the_images_names_the_size_and_the_file() {
        let s = set(1, 1, 5, 8);
        let err =
            s.preprocess(&ImageOptions { crop: Some(6), ..Default::default() }, Path::new(P)).unwrap_err();
        assert!(matches!(err, Error::Data { .. }));
        let msg = err.to_string();
        assert!(msg.contains(P) && msg.contains("6×6") && msg.contains("5×8"), "{msg}");
    }

    #[test]
    fn grey_and_rgb_convert_both_ways() {
        // One 1×2 RGB image: pixel 0 pure red, pixel 1 = (0.2, 0.4, 1.0).
        let rgb = ImageSet {
            data: vec![1.0, 0.2, 0.0, 0.4, 0.0, 1.0],
            n: 1,
            c: 3,
            h: 1,
            w: 2,
            labels: None,
            class_names: None,
            sources: Vec::new(),
        };
        let grey = rgb.with_channels(1, Path::new(P)).unwrap();
        // 0.299 and 0.2·0.299 + 0.4·0.587 + 1.0·0.114 = 0.0598 + 0.2348 + 0.114 = 0.4086.
        assert_eq!(grey.c, 1);
        assert!(
            (grey.data[0] - 0.299).abs() < 1e-6 && (grey.data[1] - 0.4086).abs() < 1e-6,
            "{:?}",
            grey.data
        );
        let back = grey.clone().with_channels(3, Path::new(P)).unwrap();
        assert_eq!(back.c, 3);
        assert_eq!(back.data, [grey.data.clone(), grey.data.clone(), grey.data].concat());
        // White stays white.
        let white = ImageSet {
            data: vec![1.0; 3],
            n: 1,
            c: 3,
            h: 1,
            w: 1,
            labels: None,
            class_names: None,
            sources: Vec::new(),
        };
        assert_eq!(white.with_channels(1, Path::new(P)).unwrap().data, vec![1.0]);
    }

    #[test]
    fn unsupported_channel_changes_are_errors() {
        let msg = set(1, 4, 2, 2).with_channels(3, Path::new(P)).unwrap_err().to_string();
        assert!(msg.contains(P) && msg.contains("4-channel"), "{msg}");
        let opts = ImageOptions { channels: Some(2), ..Default::default() };
        assert!(matches!(set(1, 1, 2, 2).preprocess(&opts, Path::new(P)), Err(Error::Invalid(_))));
        for bad in [ImageOptions { resize: Some(0), ..opts }, ImageOptions { crop: Some(0), ..opts }] {
            assert!(matches!(bad.validate(), Err(Error::Invalid(_))));
        }
    }

    #[test]
    fn absurd_sizes_are_errors_not_crashes() {
        // A typo such as `resize = 2240000000000` must fail cleanly, not abort on allocation.
        assert!(matches!(set(1, 1, 2, 2).resized(usize::MAX / 2, 4), Err(Error::Invalid(_))));
        assert!(matches!(set(1, 1, 2, 2).resized(1 << 30, 1 << 30), Err(Error::Invalid(_))));
        let opts = ImageOptions { resize: Some(usize::MAX), ..Default::default() };
        assert!(set(1, 1, 2, 3).preprocess(&opts, Path::new(P)).is_err());
        assert!(matches!(set(1, 1, 2, 2).center_cropped(0, Path::new(P)), Err(Error::Invalid(_))));
        // Empty images convert without dividing by zero.
        let empty = ImageSet {
            data: vec![],
            n: 1,
            c: 1,
            h: 0,
            w: 0,
            labels: None,
            class_names: None,
            sources: Vec::new(),
        };
        assert_eq!(empty.with_channels(3, Path::new(P)).unwrap().data, Vec::<f32>::new());
    }

    #[test]
    fn rgb_to_grey_before_resize_equals_after() {
        // Both steps are linear, so the order does not matter (up to rounding).
        let s = set(1, 3, 9, 7);
        let a = s.clone().with_channels(1, Path::new(P)).unwrap().resized(4, 3).unwrap();
        let b = s.resized(4, 3).unwrap().with_channels(1, Path::new(P)).unwrap();
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| (x - y).abs() < 1e-6));
    }
}
