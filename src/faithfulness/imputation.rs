//! Noisy linear imputation (Rong et al., "A consistent and efficient evaluation strategy for
//! attribution methods", ICML 2022, §4; `NoisyLinearImputer` of github.com/tleemann/road_evaluation,
//! ported as Quantus 0.6.0's `noisy_linear_imputation`): fill removed pixels so that their
//! values do not give away which pixels were removed.
//!
//! Each removed pixel becomes the weighted mean of its in-image 8-neighbours, weight 1/6 for
//! the four direct and 1/12 for the four diagonal ones, where removed neighbours are unknowns
//! too. Per channel this is one sparse linear system over the removed pixels:
//!
//! ```text
//! d_i·v_i − Σ_{j removed, j ~ i} w_ij·v_j = Σ_{k kept, k ~ i} w_ik·x_k,    d_i = Σ_{n ~ i, n in the image} w_in
//! ```
//!
//! (the reference's matrix times −1). The matrix is symmetric and diagonally dominant, strictly
//! in every row next to a kept pixel, so it is positive definite whenever at least one pixel
//! is kept (every connected group of removed pixels then touches a kept one); with no pixel
//! kept there is nothing to impute from and this errors. Then N(0, σ²) noise is added to every
//! imputed value (the reference: `noise · randn`, σ = 0.01).
//!
//! Solver: conjugate gradients with the diagonal as preconditioner, in f64, from zero, until
//! ‖r‖₂ ≤ 1e-10·‖b‖₂ (the reference solves exactly with scipy's `spsolve`; 1e-10 of the
//! right-hand side is far below the f32 the images are stored in). The matrix is never formed:
//! each unknown keeps its at most 8 (unknown, weight) neighbours. The three channels share the
//! matrix and are solved one after the other. Every row is a weighted mean, so the iteration
//! count grows with the diameter of the largest removed region (√κ of a grid Laplacian): the
//! worst case the measure meets, 90 % of 224×224 removed as one block (45,158 unknowns), takes
//! about 1 s per channel on one core (the unit test prints it); scattered removals are faster.
//! ROAD solves its images and percentages in parallel (rayon), each solve sequential.
//!
//! Shapes: an image flat [C·H·W] (channel-major); removed pixels as indices `y·W + x`.

use crate::error::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The 8-neighbour offsets (row, column) and weights of the reference.
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// Relative residual at which conjugate gradients stop.
const TOLERANCE: f64 = 1e-10;

/// `image` (flat [C·H·W]) with the `removed` pixels (indices `y·W + x`, distinct) replaced in
/// every channel by their linear imputation plus `noise`·N(0, 1) drawn from `rng` (channel by
/// channel, in the order of `removed`). Errors when an index is out of range or repeated, when
/// every pixel is removed, or when the solver does not converge.
pub fn noisy_linear_imputation(
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    removed: &[usize],
    noise: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let mut out = image.to_vec();
    if removed.is_empty() {
        return Ok(out);
    }
    let system = System::new((h, w), removed)?;
    for channel in 0..c {
        let plane = &image[channel * h * w..(channel + 1) * h * w];
        let values = system.solve(&system.rhs(plane))?;
        for (&p, v) in removed.iter().zip(values) {
            let draw: f64 = rng.sample(StandardNormal);
            out[channel * h * w + p] = (v + f64::from(noise) * draw) as f32;
        }
    }
    Ok(out)
}

/// The imputation's sparse system over the removed pixels of an H×W image.
struct System {
    /// Each unknown's diagonal entry d_i.
    diagonal: Vec<f64>,
    /// Each unknown's removed neighbours (their unknown index) and weights.
    coupled: Vec<Vec<(usize, f64)>>,
    /// Each unknown's kept neighbours (pixel index) and weights.
    kept: Vec<Vec<(usize, f64)>>,
}

impl System {
    fn new((h, w): (usize, usize), removed: &[usize]) -> Result<Self> {
        if removed.len() >= h * w {
            return Err(Error::Invalid("imputation: every pixel is removed, none to impute from".into()));
        }
        let mut unknown = vec![usize::MAX; h * w];
        for (i, &p) in removed.iter().enumerate() {
            if p >= h * w || unknown[p] != usize::MAX {
                return Err(Error::Invalid(format!("imputation: pixel {p} out of range or repeated")));
            }
            unknown[p] = i;
        }
        let n = removed.len();
        let (mut diagonal, mut coupled, mut kept) = (vec![0.0; n], vec![Vec::new(); n], vec![Vec::new(); n]);
        for (i, &p) in removed.iter().enumerate() {
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for ((dy, dx), weight) in NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                diagonal[i] += weight;
                match unknown[q] {
                    usize::MAX => kept[i].push((q, weight)),
                    j => coupled[i].push((j, weight)),
                }
            }
        }
        Ok(Self { diagonal, coupled, kept })
    }

    /// The right-hand side for one channel `plane` [H·W]: Σ w·x over each unknown's kept neighbours.
    fn rhs(&self, plane: &[f32]) -> Vec<f64> {
        self.kept.iter().map(|k| k.iter().map(|&(q, wt)| wt * f64::from(plane[q])).sum()).collect()
    }

    /// The matrix times `v`, into `out`.
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.diagonal[i] * v[i] - self.coupled[i].iter().map(|&(j, wt)| wt * v[j]).sum::<f64>();
        }
    }

    /// Preconditioned conjugate gradients from zero (see the module docs).
    fn solve(&self, b: &[f64]) -> Result<Vec<f64>> {
        let n = b.len();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let goal = TOLERANCE * dot(b, b).sqrt();
        let (mut x, mut r) = (vec![0.0; n], b.to_vec());
        let mut z: Vec<f64> = r.iter().zip(&self.diagonal).map(|(r, d)| r / d).collect();
        let (mut p, mut q) = (z.clone(), vec![0.0; n]);
        let mut rz = dot(&r, &z);
        for _ in 0..4 * n + 100 {
            if dot(&r, &r).sqrt() <= goal {
                return Ok(x);
            }
            self.apply(&p, &mut q);
            let alpha = rz / dot(&p, &q);
            for i in 0..n {
                x[i] += alpha * p[i];
                r[i] -= alpha * q[i];
                z[i] = r[i] / self.diagonal[i];
            }
            let next = dot(&r, &z);
            let beta = next / rz;
            rz = next;
            for i in 0..n {
                p[i] = z[i] + beta * p[i];
            }
        }
        Err(Error::Invalid(format!("imputation: conjugate gradients did not converge ({n} unknowns)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed;

    fn impute(image: &[f32], shape: (usize, usize, usize), removed: &[usize]) -> Vec<f32> {
        noisy_linear_imputation(image, shape, removed, 0.0, &mut seed::rng(0)).unwrap()
    }

    #[test]
    fn one_removed_pixel_becomes_the_weighted_mean_of_its_neighbours() {
        // 3×3, centre removed: (4·(1/6)·x_direct + 4·(1/12)·x_diag) / 1.
        let image = [1.0, 2.0, 3.0, 4.0, 100.0, 6.0, 7.0, 8.0, 9.0];
        let want = (2.0 + 4.0 + 6.0 + 8.0) / 6.0 + (1.0 + 3.0 + 7.0 + 9.0) / 12.0;
        assert!((impute(&image, (1, 3, 3), &[4])[4] - want as f32).abs() < 1e-6);
        // A corner has 3 neighbours: (1/6·2 + 1/6·4 + 1/12·100) / (1/6 + 1/6 + 1/12).
        let corner = (2.0 / 6.0 + 4.0 / 6.0 + 100.0 / 12.0) / (5.0 / 12.0);
        assert!((impute(&image, (1, 3, 3), &[0])[0] - corner as f32).abs() < 1e-5);
    }

    #[test]
    fn a_linear_ramp_is_imputed_exactly_and_kept_pixels_stay() {
        // Weighted means of a linear function are the function: any removed set in the interior
        // of a ramp comes back as the ramp (both channels).
        let (h, w) = (12, 10);
        let image: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i % (h * w)) / w) as f32 * 0.5 + (i % w) as f32 * 0.25 + (i / (h * w)) as f32)
            .collect();
        let removed: Vec<usize> =
            (2..10).flat_map(|y| (2..8).map(move |x| y * w + x)).filter(|p| p % 3 != 0).collect();
        let got = impute(&image, (2, h, w), &removed);
        let d = got.iter().zip(&image).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn the_noise_is_gaussian_of_its_sigma_on_removed_pixels_only_and_seeded() {
        let (h, w) = (28, 28);
        let image: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
        let removed: Vec<usize> = (0..h * w).filter(|p| p % 10 != 0).collect();
        let clean = impute(&image, (1, h, w), &removed);
        let noisy =
            |s| noisy_linear_imputation(&image, (1, h, w), &removed, 0.01, &mut seed::rng(s)).unwrap();
        let diff: Vec<f64> = noisy(3).iter().zip(&clean).map(|(a, b)| f64::from(a - b)).collect();
        let kept_change = (0..h * w).filter(|p| p % 10 == 0).map(|p| diff[p].abs()).fold(0.0, f64::max);
        assert_eq!(kept_change, 0.0);
        let d: Vec<f64> = removed.iter().map(|&p| diff[p]).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (d.len() - 1) as f64).sqrt();
        // 705 draws: the mean's standard error is 3.8e-4, the sd's about 2.7 %.
        assert!(mean.abs() < 1.5e-3 && (sd / 0.01 - 1.0).abs() < 0.1, "mean {mean}, sd {sd}");
        assert_eq!(noisy(3), noisy(3));
        assert_ne!(noisy(3), noisy(4));
    }

    #[test]
    fn removing_every_pixel_or_a_pixel_twice_is_refused() {
        let mut rng = seed::rng(0);
        assert!(noisy_linear_imputation(&[0.0; 4], (1, 2, 2), &[0, 1, 2, 3], 0.0, &mut rng).is_err());
        assert!(noisy_linear_imputation(&[0.0; 4], (1, 2, 2), &[1, 1], 0.0, &mut rng).is_err());
        assert!(noisy_linear_imputation(&[0.0; 4], (1, 2, 2), &[4], 0.0, &mut rng).is_err());
    }

    #[test]
    fn a_large_removed_region_at_224_converges() {
        // 90 % of 224×224 removed as one block: the hardest case the measure meets.
        let (h, w) = (224, 224);
        let image: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let removed: Vec<usize> =
            (0..h * w).filter(|&p| (p / w) < 212 || (p % w) < 1).take(h * w * 9 / 10).collect();
        let start = std::time::Instant::now();
        let got = impute(&image, (1, h, w), &removed);
        println!("224×224, {} unknowns: {:?}", removed.len(), start.elapsed());
        assert!(got.iter().all(|v| (0.0..=1.0).contains(v)), "weighted means stay within the kept range");
    }
}
