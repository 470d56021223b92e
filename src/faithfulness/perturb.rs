//! The machinery every measure shares: read the images once, order pixels by a map, and run
//! the model on all perturbed images of a call in few large batches.
//!
//! A [`Schedule`] says, for one image, which pixels in which order go from its `start` image
//! to its `finish` image, and how many have gone at each point of the curve. [`play`] builds
//! the image of every (image, point) pair and returns, through [`outcomes`] (the one place the
//! model runs on perturbed images, in [`Classifier::rows_per_pass`]-sized batches across
//! images), the class's logit, softmax probability and top-1 at each point. Rows are
//! independent in the model, so the result does not depend on how images are batched.
//!
//! Shapes: images flat [C·H·W] per image; pixel indices `y·W + x`; a pixel is replaced in
//! every channel.

use super::{Batch, Curve};
use crate::error::{Error, Result};
use crate::model::{logits_in_passes, target_probability, Classifier};
use candle_core::{DType, Device, Tensor};
use std::cmp::Ordering;

/// The images of one call on the CPU, checked against their maps, attributions, classes and
/// keys.
pub(crate) struct Images {
    /// Channels, height, width.
    pub shape: (usize, usize, usize),
    /// Each image flat [C·H·W].
    pub pixels: Vec<Vec<f32>>,
}

impl Images {
    /// Reads `batch.x` [B,C,H,W] and checks that there is one finite map of H·W values, one
    /// finite attribution of C·H·W values, one key and one class below the model's class count
    /// per image, and that the model takes C×H×W images.
    pub fn read(model: &dyn Classifier, batch: &Batch) -> Result<Self> {
        let (b, c, h, w) = batch.x.dims4()?;
        if c * h * w == 0 {
            return Err(Error::Invalid(format!("faithfulness: empty images ({c}×{h}×{w})")));
        }
        model.accepts(c, h, w)?;
        let counts = [batch.maps.len(), batch.attributions.len(), batch.classes.len(), batch.keys.len()];
        if counts.iter().any(|&n| n != b) {
            return Err(Error::Invalid(format!(
                "faithfulness: {b} images but {counts:?} maps, attributions, classes and keys"
            )));
        }
        check_rows("map", batch.maps, h * w)?;
        check_rows("attribution", batch.attributions, c * h * w)?;
        let k = model.num_classes();
        if let Some(&bad) = batch.classes.iter().find(|&&t| t as usize >= k) {
            return Err(Error::Invalid(format!("faithfulness: class {bad} out of range (model has {k})")));
        }
        let flat = batch.x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let pixels = flat.chunks(c * h * w).map(<[f32]>::to_vec).collect();
        Ok(Self { shape: (c, h, w), pixels })
    }

    /// Pixels per channel, H·W.
    pub fn area(&self) -> usize {
        self.shape.1 * self.shape.2
    }
}

/// Errors unless every row holds `len` finite values.
fn check_rows(what: &str, rows: &[Vec<f32>], len: usize) -> Result<()> {
    match rows.iter().position(|r| r.len() != len || !r.iter().all(|v| v.is_finite())) {
        Some(i) => Err(Error::Invalid(format!(
            "faithfulness: {what} {i} must hold {len} finite values, has {}",
            rows[i].len()
        ))),
        None => Ok(()),
    }
}

/// Indices of `map` in descending order of its values; ties keep ascending index order (a
/// stable sort). The maps are checked finite before this is called.
pub fn descending_order(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].partial_cmp(&map[a]).unwrap_or(Ordering::Equal));
    order
}

/// One image's perturbation: at curve point `k` the first `counts[k]` pixels of `order` hold
/// the `finish` image's values, the others the `start` image's.
pub(crate) struct Schedule {
    /// Pixel indices `y·W + x`, in the order they change.
    pub order: Vec<usize>,
    /// How many pixels have changed at each point of the curve (non-decreasing).
    pub counts: Vec<usize>,
}

/// The points of a pixel-by-pixel curve over `area` pixels, `step` per step: `min(i·step, area)`
/// pixels changed for i from `first` (0: the curve starts at the unchanged image) to the
/// last step, which may be short.
pub(crate) fn step_counts(area: usize, step: usize, first: usize) -> Vec<usize> {
    (first..=area.div_ceil(step)).map(|i| (i * step).min(area)).collect()
}

/// The curves of the pixel-by-pixel measures (deletion, insertion, pixel flipping): every
/// image's pixels in descending order of its map, `counts[k]` of them changed from `start` to
/// `finish` at point k, each curve scored by `score`.
pub(crate) fn pixel_curves(
    model: &dyn Classifier,
    images: &Images,
    (start, finish): (&[Vec<f32>], &[Vec<f32>]),
    (maps, classes): (&[Vec<f32>], &[u32]),
    counts: &[usize],
    score: fn(&[f64]) -> f64,
) -> Result<Vec<Curve>> {
    let schedules: Vec<Schedule> =
        maps.iter().map(|m| Schedule { order: descending_order(m), counts: counts.to_vec() }).collect();
    let area = images.area() as f64;
    let fractions: Vec<f64> = counts.iter().map(|&n| n as f64 / area).collect();
    let outcomes = play(model, images, (start, finish), &schedules, classes)?;
    Ok(outcomes
        .into_iter()
        .map(|o| {
            let values: Vec<f64> = o.iter().map(|o| o.probability).collect();
            Curve {
                fractions: fractions.clone(),
                score: score(&values),
                values,
                top1: o.iter().map(|o| o.top1).collect(),
            }
        })
        .collect())
}

/// What the model says about one (perturbed) image and its class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Outcome {
    /// The class's logit.
    pub logit: f64,
    /// The class's softmax probability.
    pub probability: f64,
    /// Whether the class is the arg-max of the logits (the first, if several tie).
    pub top1: bool,
}

/// The model's [`Outcome`] for `targets[i]` on `targets.len()` images of shape `shape`, image i
/// appended (flat [C·H·W]) by `build(i, data)` just before its pass, in
/// [`Classifier::rows_per_pass`]-sized batches. Rows are independent in the model, so the
/// result does not depend on how the images are batched.
pub(crate) fn outcomes(
    model: &dyn Classifier,
    (c, h, w): (usize, usize, usize),
    targets: &[u32],
    build: impl Fn(usize, &mut Vec<f32>),
) -> Result<Vec<Outcome>> {
    let rows: Vec<usize> = (0..targets.len()).collect();
    let mut out = Vec::with_capacity(targets.len());
    for chunk in rows.chunks(model.rows_per_pass(h, w).max(1)) {
        let mut data = Vec::with_capacity(chunk.len() * c * h * w);
        for &i in chunk {
            build(i, &mut data);
        }
        let batch = Tensor::from_vec(data, (chunk.len(), c, h, w), model.device())?;
        let logits = logits_in_passes(model, &batch)?.to_dtype(DType::F32)?;
        let chunk_targets = &targets[chunk[0]..chunk[0] + chunk.len()];
        let probabilities = target_probability(&logits, chunk_targets)?;
        for ((row, &t), probability) in logits.to_vec2::<f32>()?.iter().zip(chunk_targets).zip(probabilities)
        {
            let first_max =
                row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            out.push(Outcome { logit: row[t as usize] as f64, probability, top1: first_max == t as usize });
        }
    }
    Ok(out)
}

/// The model's [`Outcome`] at every point of `schedules[b]`, one vector per image, from images
/// that start as `start[b]` and change pixel by pixel into `finish[b]`.
pub(crate) fn play(
    model: &dyn Classifier,
    images: &Images,
    (start, finish): (&[Vec<f32>], &[Vec<f32>]),
    schedules: &[Schedule],
    classes: &[u32],
) -> Result<Vec<Vec<Outcome>>> {
    let area = images.area();
    let rows: Vec<(usize, usize)> =
        schedules.iter().enumerate().flat_map(|(b, s)| (0..s.counts.len()).map(move |k| (b, k))).collect();
    let targets: Vec<u32> = rows.iter().map(|&(b, _)| classes[b]).collect();
    let flat = outcomes(model, images.shape, &targets, |i, data| {
        let (b, k) = rows[i];
        let changed = &schedules[b].order[..schedules[b].counts[k]];
        push_perturbed(data, &start[b], &finish[b], changed, area);
    })?;
    let mut out: Vec<Vec<Outcome>> = schedules.iter().map(|s| Vec::with_capacity(s.counts.len())).collect();
    for (&(b, _), o) in rows.iter().zip(flat) {
        out[b].push(o);
    }
    Ok(out)
}

/// The drop of each image's class logit, f(x) − f(x′), and the top-1 of x′, over `runs[b]`
/// perturbed copies x′ of image b, copy k appended (flat [C·H·W]) by `build(b, k, data)`:
/// faithfulness correlation's and infidelity's model runs.
pub(crate) fn logit_drops(
    model: &dyn Classifier,
    images: &Images,
    classes: &[u32],
    runs: &[usize],
    build: impl Fn(usize, usize, &mut Vec<f32>),
) -> Result<Vec<(Vec<f64>, Vec<bool>)>> {
    let clean = outcomes(model, images.shape, classes, |b, data| data.extend_from_slice(&images.pixels[b]))?;
    let rows: Vec<(usize, usize)> =
        runs.iter().enumerate().flat_map(|(b, &n)| (0..n).map(move |k| (b, k))).collect();
    let targets: Vec<u32> = rows.iter().map(|&(b, _)| classes[b]).collect();
    let perturbed = outcomes(model, images.shape, &targets, |i, data| build(rows[i].0, rows[i].1, data))?;
    let mut out: Vec<(Vec<f64>, Vec<bool>)> =
        runs.iter().map(|&n| (Vec::with_capacity(n), Vec::with_capacity(n))).collect();
    for (&(b, _), o) in rows.iter().zip(perturbed) {
        out[b].0.push(clean[b].logit - o.logit);
        out[b].1.push(o.top1);
    }
    Ok(out)
}

/// Appends `start` with the `changed` pixels (every channel) taken from `finish`.
fn push_perturbed(data: &mut Vec<f32>, start: &[f32], finish: &[f32], changed: &[usize], area: usize) {
    let at = data.len();
    data.extend_from_slice(start);
    let row = &mut data[at..];
    for channel in 0..start.len() / area {
        let base = channel * area;
        for &p in changed {
            row[base + p] = finish[base + p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_order_keeps_ties_in_index_order() {
        assert_eq!(descending_order(&[0.5, 2.0, 0.5, 3.0, 0.5]), vec![3, 1, 0, 2, 4]);
        assert_eq!(descending_order(&[-0.0, 0.0]), vec![0, 1]);
    }

    #[test]
    fn a_perturbed_row_takes_the_changed_pixels_in_every_channel() {
        let mut data = vec![9.0];
        let start = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let finish = [0.0; 6];
        push_perturbed(&mut data, &start, &finish, &[2, 0], 3);
        assert_eq!(data, vec![9.0, 0.0, 2.0, 0.0, 0.0, 5.0, 0.0]);
    }
}
