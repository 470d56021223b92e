//! The sanity checks' similarities against Adebayo et al.'s code run by its libraries
//! (tests/fixtures/sanity/similarity.safetensors, made by scripts/sanity_similarity_fixtures.py:
//! PAIR's visualisations, Quantus 0.6.0's spearman/pearson, scikit-image 0.26's SSIM and HOG, all
//! in float64). Pairs of signed maps [C,H,W]: Fashion-MNIST-sized 1×28×28 maps with noise, with
//! ties, and with outliers that the 99th-percentile clip ties; 3-channel 32×36 and 50×52 maps
//! (odd sizes: partial HOG cells, rows ≠ columns); a 1×64×70 map (16-pixel HOG cells, 2×2
//! blocks); a constant map (every similarity undefined).

use crate::common::root;
use candle_core::{Device, Tensor};
use fragility::sanity::{diverging, grayscale, hog, percentile, unit_range, Similarity, SIMILARITY_NAMES};
use std::collections::HashMap;

const PAIRS: [&str; 7] = [
    "fmnist_noise",
    "fmnist_ties",
    "fmnist_outliers",
    "rgb_32x36",
    "rgb_50x52_outliers",
    "gray_64x70",
    "constant",
];

fn fixture() -> HashMap<String, Tensor> {
    let path = root().join("tests/fixtures/sanity/similarity.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// A pair's maps (flat rows, channel-major) and shape (C, H, W).
fn maps(f: &HashMap<String, Tensor>, pair: &str) -> (Vec<f32>, Vec<f32>, (usize, usize, usize)) {
    let a = &f[&format!("{pair}/a")];
    let shape = a.dims3().unwrap();
    let row = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (row(a), row(&f[&format!("{pair}/b")]), shape)
}

fn f64s(f: &HashMap<String, Tensor>, key: &str) -> Vec<f64> {
    f[key].flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "{what}: {got} vs {want}");
}

#[test]
fn the_four_similarities_match_adebayos_code() {
    let f = fixture();
    for pair in PAIRS {
        let (a, b, (c, h, w)) = maps(&f, pair);
        let want = f64s(&f, &format!("{pair}/scores"));
        for (s, (name, want)) in Similarity::ALL.iter().zip(SIMILARITY_NAMES.iter().zip(want)) {
            let what = format!("{pair} {name}");
            match s.score(&a, &b, c, h, w) {
                Some(got) => close(got, want, &what),
                None => assert!(want.is_nan(), "{what}: None, reference {want}"),
            }
            if want.is_nan() {
                assert_eq!(s.score(&a, &b, c, h, w), None, "{what}");
            }
        }
    }
}

#[test]
fn the_clip_percentiles_are_numpys() {
    // The 99th percentiles of the signed and the absolute channel sums (which the diverging and
    // grayscale maps clip at), to the last few bits.
    let f = fixture();
    for pair in PAIRS {
        let (a, b, (c, h, w)) = maps(&f, pair);
        let want = f64s(&f, &format!("{pair}/p99"));
        for (k, row) in [a, b].iter().enumerate() {
            let sum = |abs: bool| -> Vec<f64> {
                (0..h * w)
                    .map(|p| {
                        (0..c)
                            .map(|ch| f64::from(row[ch * h * w + p]))
                            .map(|v| if abs { v.abs() } else { v })
                            .sum()
                    })
                    .collect()
            };
            for (j, abs) in [false, true].into_iter().enumerate() {
                let got = percentile(&sum(abs), 99.0).unwrap();
                let w = want[2 * k + j];
                assert!(
                    (got - w).abs() <= 1e-14 * w.abs().max(1.0),
                    "{pair} map {k} abs {abs}: {got} vs {w}"
                );
            }
        }
    }
}

#[test]
fn the_hog_features_match_scikit_image() {
    let f = fixture();
    for pair in PAIRS {
        let key = format!("{pair}/hog");
        if !f.contains_key(&key) {
            continue;
        }
        let (a, b, (c, h, w)) = maps(&f, pair);
        let want = f64s(&f, &key);
        let n = want.len() / 2;
        let cell = hog::hog_cell(h, w).unwrap();
        for (k, row) in [a, b].iter().enumerate() {
            let got = hog::hog(&unit_range(row).unwrap(), c, h, w, cell).unwrap();
            assert_eq!(got.len(), n, "{pair}: feature length");
            let worst =
                got.iter().zip(&want[k * n..(k + 1) * n]).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
            // Cells accumulate in f32 as scikit-image does; the rest is f64 rounding.
            assert!(worst < 1e-9, "{pair} map {k}: max |Δ| {worst}");
        }
    }
}

#[test]
fn the_outlier_pairs_are_where_the_clip_matters() {
    // Without the clip (ranks of the raw sums) Spearman moves by more than the fixture test's
    // tolerance, so that test would catch a missing clip.
    let f = fixture();
    for pair in ["fmnist_outliers", "rgb_50x52_outliers"] {
        let (a, b, (c, h, w)) = maps(&f, pair);
        let clipped = Similarity::Spearman.score(&a, &b, c, h, w).unwrap();
        let sums = |m: &[f32]| -> Vec<f64> {
            (0..h * w).map(|p| (0..c).map(|k| f64::from(m[k * h * w + p])).sum()).collect()
        };
        let unclipped = fragility::metric::spearman_f64(&sums(&a), &sums(&b)).unwrap();
        // (rgb_50x52_outliers: 0.6338951 vs 0.6338959, just beyond the 1e-6 relative tolerance.)
        assert!((clipped - unclipped).abs() > 1e-6 * clipped.abs(), "{pair}: {clipped} vs {unclipped}");
        for (name, m) in [("diverging", diverging(&a, c, h * w)), ("grayscale", grayscale(&a, c, h * w))] {
            let ties = m.unwrap().iter().filter(|&&v| v == 1.0).count();
            assert!(ties > 1, "{pair} {name}: {ties} tied at the top");
        }
    }
}
