//! The per-sample ratios and their aggregation over the kept samples: pure functions over
//! flattened slices (one image's [C·H·W] pixels or raw attributions), computed in f64.
//!
//! With x the clean image, x′ a noisy copy, δ = x′ − x, Φ = Φ(x), Φ′ = Φ(x′):
//! * [`sensitivity`]: ‖Φ′ − Φ‖₂ / ‖Φ‖₂ (Yeh et al. 2019); `None` if ‖Φ‖₂ = 0;
//! * [`lipschitz`]: ‖Φ − Φ′‖₂ / ‖δ‖₂ (Alvarez-Melis and Jaakkola 2018); `None` if δ = 0;
//! * [`relative_input_stability`]: ‖(Φ − Φ′) ⊘ Φ̃‖₂ / max(‖(x − x′) ⊘ x̃‖₂, [`E_MIN`])
//!   (Agarwal et al. 2022), ⊘ element-wise division, Φ̃ = Φ + [`E`]·[Φ = 0] and
//!   x̃ = x + [`E`]·[x = 0] (exact zeros replaced by E, other entries divided as they are).
//!
//! Every function returns `None` when the slices' lengths differ or the ratio is not finite.

/// The value that replaces an exact zero in the element-wise denominators of
/// [`relative_input_stability`] (Quantus' `eps_min`, default 1e-6).
pub const E: f64 = 1e-6;

/// The floor of the norm in the denominator of [`relative_input_stability`] (Agarwal et al.'s
/// ε_min; Quantus' default 1e-6).
pub const E_MIN: f64 = 1e-6;

/// ℓ₂ norm of an f64 sequence.
fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|a| a * a).sum::<f64>().sqrt()
}

/// ‖a − b‖₂ in f64.
fn dist(a: &[f32], b: &[f32]) -> f64 {
    norm(a.iter().zip(b).map(|(&p, &q)| p as f64 - q as f64))
}

/// `Some(v)` if `v` is finite.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The sensitivity ratio ‖Φ′ − Φ‖₂ / ‖Φ‖₂ of one sample; `None` if ‖Φ‖₂ = 0.
pub fn sensitivity(phi: &[f32], phi_s: &[f32]) -> Option<f64> {
    if phi.len() != phi_s.len() {
        return None;
    }
    let base = norm(phi.iter().map(|&v| v as f64));
    if base == 0.0 {
        return None;
    }
    finite(dist(phi_s, phi) / base)
}

/// The Lipschitz ratio ‖Φ − Φ′‖₂ / ‖x − x′‖₂ of one sample; `None` if x′ = x.
pub fn lipschitz(x: &[f32], xs: &[f32], phi: &[f32], phi_s: &[f32]) -> Option<f64> {
    if x.len() != xs.len() || phi.len() != phi_s.len() {
        return None;
    }
    let step = dist(x, xs);
    if step == 0.0 {
        return None;
    }
    finite(dist(phi, phi_s) / step)
}

/// `a + E·[a = 0]`: the element-wise denominator with exact zeros replaced by [`E`].
fn guarded(a: f32) -> f64 {
    if a == 0.0 {
        E
    } else {
        a as f64
    }
}

/// The relative input stability ratio of one sample,
/// ‖(Φ − Φ′) ⊘ Φ̃‖₂ / max(‖(x − x′) ⊘ x̃‖₂, [`E_MIN`]) (see the module docs).
pub fn relative_input_stability(x: &[f32], xs: &[f32], phi: &[f32], phi_s: &[f32]) -> Option<f64> {
    if x.len() != xs.len() || phi.len() != phi_s.len() {
        return None;
    }
    let num = norm(phi.iter().zip(phi_s).map(|(&p, &q)| (p as f64 - q as f64) / guarded(p)));
    let den = norm(x.iter().zip(xs).map(|(&a, &b)| (a as f64 - b as f64) / guarded(a)));
    finite(num / den.max(E_MIN))
}

/// The four estimates of one image, over its kept samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimates {
    /// Max over samples of [`sensitivity`].
    pub max_sensitivity: Option<f64>,
    /// Mean over samples of [`sensitivity`].
    pub avg_sensitivity: Option<f64>,
    /// Max over samples of [`lipschitz`], ignoring samples with x′ = x.
    pub local_lipschitz: Option<f64>,
    /// Max over samples of [`relative_input_stability`].
    pub relative_input_stability: Option<f64>,
}

/// Max and mean of per-sample ratios; `None` if there are none or any is `None` (undefined or
/// not finite), except that `skip_none` drops the `None`s first (for the Lipschitz ratio,
/// undefined where x′ = x).
fn max_and_mean(ratios: &[Option<f64>], skip_none: bool) -> (Option<f64>, Option<f64>) {
    let vals: Option<Vec<f64>> = if skip_none {
        Some(ratios.iter().flatten().copied().collect())
    } else {
        ratios.iter().copied().collect()
    };
    match vals {
        Some(v) if !v.is_empty() => {
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (Some(max), Some(v.iter().sum::<f64>() / v.len() as f64))
        }
        _ => (None, None),
    }
}

/// The estimates of one image `x` with clean attributions `phi` over its kept samples, each a
/// pair (noisy copy x′, its attributions Φ′). With no sample every estimate is `None`; with
/// ‖Φ‖ = 0 both sensitivities are `None`.
pub fn estimates(x: &[f32], phi: &[f32], kept: &[(&[f32], &[f32])]) -> Estimates {
    let sens: Vec<Option<f64>> = kept.iter().map(|&(_, ps)| sensitivity(phi, ps)).collect();
    let lip: Vec<Option<f64>> = kept.iter().map(|&(xs, ps)| lipschitz(x, xs, phi, ps)).collect();
    let ris: Vec<Option<f64>> =
        kept.iter().map(|&(xs, ps)| relative_input_stability(x, xs, phi, ps)).collect();
    let (max_sensitivity, avg_sensitivity) = max_and_mean(&sens, false);
    // A non-finite Lipschitz ratio must not be skipped like an x′ = x sample: check it apart.
    let lip_ok = kept.iter().zip(&lip).all(|(&(xs, _), l)| l.is_some() || dist(x, xs) == 0.0);
    let local_lipschitz = if lip_ok { max_and_mean(&lip, true).0 } else { None };
    Estimates {
        max_sensitivity,
        avg_sensitivity,
        local_lipschitz,
        relative_input_stability: max_and_mean(&ris, false).0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    #[test]
    fn sensitivity_and_lipschitz_match_hand_values() {
        // Φ = (3, 4): ‖Φ‖ = 5; Φ′ = (3, 0): ‖Φ′ − Φ‖ = 4, so sensitivity = 4/5 = 0.8.
        assert!(close(sensitivity(&[3.0, 4.0], &[3.0, 0.0]), 0.8));
        // ‖Φ‖ = 0: undefined.
        assert_eq!(sensitivity(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(sensitivity(&[1.0], &[1.0, 0.0]), None);
        // x = (0, 0), x′ = (0.75, 1): ‖δ‖ = √(0.5625 + 1) = 1.25; ‖Φ − Φ′‖ = ‖(0, 4)‖ = 4, so
        // the ratio is 4 / 1.25 = 3.2.
        assert!(close(lipschitz(&[0.0, 0.0], &[0.75, 1.0], &[3.0, 4.0], &[3.0, 0.0]), 3.2));
        // x′ = x: 0/0, undefined.
        assert_eq!(lipschitz(&[0.5], &[0.5], &[1.0], &[1.0]), None);
    }

    #[test]
    fn relative_input_stability_matches_hand_values() {
        // x = (0.5, 0.25), x′ = (0.25, 0.5): (x − x′) ⊘ x = (0.25/0.5, −0.25/0.25) = (0.5, −1),
        // norm √1.25. Φ = (2, −1), Φ′ = (1, −1.5): (Φ − Φ′) ⊘ Φ = (1/2, 0.5/−1) = (0.5, −0.5),
        // norm √0.5. Ratio √(0.5/1.25) = √0.4.
        let r = relative_input_stability(&[0.5, 0.25], &[0.25, 0.5], &[2.0, -1.0], &[1.0, -1.5]);
        assert!(close(r, 0.4f64.sqrt()), "{r:?}");
        // Exact zeros: x′ = x, so the input term is 0 and is floored at E_MIN = 1e-6. Φ = (1, 0),
        // Φ′ = (1, 0.5): the zero entry is divided by E: (0, −0.5/1e-6), norm 5e5. Ratio
        // 5e5 / 1e-6 = 5e11.
        let r = relative_input_stability(&[0.0, 1.0], &[0.0, 1.0], &[1.0, 0.0], &[1.0, 0.5]);
        assert!(close(r, 5e11), "{r:?}");
        // A zero pixel moved by 0.5: (0 − 0.5)/1e-6 = −5e5 in the input term; Φ = (2, 0) moves
        // its first entry by 1: 1/2 = 0.5 in the output term. Ratio 0.5 / 5e5 = 1e-6.
        let r = relative_input_stability(&[0.0], &[0.5], &[2.0], &[1.0]);
        assert!(close(r, 1e-6), "{r:?}");
        // Identical maps: 0 whatever the inputs.
        assert_eq!(relative_input_stability(&[0.5], &[0.7], &[2.0], &[2.0]), Some(0.0));
    }

    #[test]
    fn estimates_aggregate_over_samples_and_handle_the_none_cases() {
        // x = (0, 0), Φ = (3, 4) (‖Φ‖ = 5). Sample a: x′ = (0.75, 1) (‖δ‖ = 1.25), Φ′ = (3, 0)
        // (‖ΔΦ‖ = 4): sensitivity 0.8, Lipschitz 3.2. Sample b: x′ = (0, 0.5) (‖δ‖ = 0.5),
        // Φ′ = (3, 5) (‖ΔΦ‖ = 1): sensitivity 0.2, Lipschitz 2. Sample c: x′ = x, Φ′ = Φ:
        // sensitivity 0, Lipschitz undefined (skipped).
        // max sensitivity 0.8, mean (0.8 + 0.2 + 0)/3 = 1/3, Lipschitz max(3.2, 2) = 3.2.
        // RIS: x = 0, so x ⊘ x̃ divides by 1e-6: sample a's input term is ‖(0.75, 1)‖/1e-6
        // = 1.25e6, its output term ‖(0, 4/4)‖ = 1: 8e-7; sample b: ‖(0, 1/4)‖ / 5e5 = 5e-7;
        // sample c: 0 / E_MIN = 0. Max 8e-7.
        let x = [0.0f32, 0.0];
        let phi = [3.0f32, 4.0];
        let kept: [(&[f32], &[f32]); 3] =
            [(&[0.75, 1.0], &[3.0, 0.0]), (&[0.0, 0.5], &[3.0, 5.0]), (&x, &phi)];
        let e = estimates(&x, &phi, &kept);
        assert!(close(e.max_sensitivity, 0.8), "{e:?}");
        assert!(close(e.avg_sensitivity, 1.0 / 3.0), "{e:?}");
        assert!(close(e.local_lipschitz, 3.2), "{e:?}");
        assert!(close(e.relative_input_stability, 8e-7), "{e:?}");
        // No kept sample: nothing to estimate.
        assert_eq!(estimates(&x, &phi, &[]), Estimates::default());
        // Φ = 0: the sensitivities are undefined, the others are not. x′ = (0, 1), Φ′ = (0, 4):
        // Lipschitz 4 / 1 = 4; RIS: both terms divide by E = 1e-6 (x = 0 and Φ = 0), so
        // ‖(0, 4e6)‖ / ‖(0, 1e6)‖ = 4.
        let zero = [0.0f32, 0.0];
        let e = estimates(&x, &zero, &[(&[0.0, 1.0], &[0.0, 4.0])]);
        assert_eq!((e.max_sensitivity, e.avg_sensitivity), (None, None));
        assert!(close(e.local_lipschitz, 4.0), "{e:?}");
        assert!(close(e.relative_input_stability, 4.0), "{e:?}");
        // Only x′ = x samples: Lipschitz undefined, the rest 0.
        let e = estimates(&x, &phi, &[(&x, &phi)]);
        assert_eq!(e.local_lipschitz, None);
        assert_eq!((e.max_sensitivity, e.relative_input_stability), (Some(0.0), Some(0.0)));
        // A non-finite attribution poisons every estimate it enters.
        let e = estimates(&x, &phi, &[(&[0.0, 1.0], &[f32::NAN, 4.0]), (&[0.0, 0.5], &[3.0, 5.0])]);
        assert_eq!(e, Estimates::default());
    }
}
