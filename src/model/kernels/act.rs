//! Nonlinearities and their backward rules over whole buffers.
//!
//! The common case, ReLU under the softplus(β) surrogate (every attack step), runs as one
//! vectorisable sweep with polynomial exp and log1p ([`softplus_sweep`]); the smooth functions
//! of the newer networks (sigmoid, SiLU, GELU in both forms) run as vectorisable sweeps on the
//! same polynomial exp ([`smooth`]), tested against the scalar definitions to a few float32
//! ulps; every other case applies the scalar definitions of [`crate::model::nonlinearity`], so
//! the math is the one written there.

use crate::model::nonlinearity::{self, Activation, Nonlinearity, Rule};

/// exp(x) for x ≤ 0 without a library call, so loops over it vectorise: x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, Cephes' degree-6 polynomial for e^r (relative error ~1e-7), times 2^n
/// built in the exponent bits; 0 below −87 (where f32 would go subnormal).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // The integer n read from t's low mantissa bits (t = 1.5·2²³ + n exactly for |n| < 2²²),
    // not by `n as i32`: Rust's saturating float-to-int cast compiles to a scalar conversion
    // per lane, which kept this loop from vectorising. wrapping_*: no overflow checks (the dev
    // profile has them on), for the same reason. Below x = −87 the result is 0 whatever n is.
    let n_int = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((n_int.max(-126).wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// ln(1 + e) for e in [0, 1]: 2·atanh(t) with t = e / (2 + e) ≤ 1/3, its odd series to t¹⁵
/// (the next term is below 1e-8 of the sum).
#[inline(always)]
fn ln_1p_unit(e: f32) -> f32 {
    let t = e / (2.0 + e);
    let t2 = t * t;
    let series = 1.0
        + t2 * (1.0 / 3.0
            + t2 * (1.0 / 5.0
                + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0 + t2 / 15.0))))));
    2.0 * t * series
}

avx2_sweep! {
    /// softplus_β and its derivative sigmoid(βz) of each z: values into `out`, derivatives
    /// into `deriv`, from one e = exp(−β|z|) as [`Activation::apply_and_derivative`].
    fn softplus_sweep / softplus_sweep_avx2 = softplus_loop(beta: f32, z: &[f32], out: &mut [f32], deriv: &mut [f32])
}

#[inline(always)]
fn softplus_loop(beta: f32, z: &[f32], out: &mut [f32], deriv: &mut [f32]) {
    for ((&z, o), d) in z.iter().zip(out.iter_mut()).zip(deriv.iter_mut()) {
        (*o, *d) = softplus(beta, z);
    }
}

/// softplus_β(z) and sigmoid(βz) from one e = exp(−β|z|).
#[inline(always)]
fn softplus(beta: f32, z: f32) -> (f32, f32) {
    let e = exp_nonpositive(-beta * z.abs());
    let inv = 1.0 / (1.0 + e);
    (z.max(0.0) + ln_1p_unit(e) / beta, if z >= 0.0 { inv } else { e * inv })
}

/// σ(z) and 1 − σ(z), each without cancellation, from e = exp(−|z|).
#[inline(always)]
fn sigmoid_pair(z: f32) -> (f32, f32) {
    let e = exp_nonpositive(-z.abs());
    let inv = 1.0 / (1.0 + e);
    if z >= 0.0 {
        (inv, e * inv)
    } else {
        (e * inv, inv)
    }
}

/// Φ(z), the standard normal CDF, as ½·erfc(−z/√2) with Numerical Recipes' Chebyshev erfc
/// (fractional error below 1.2e-7) on the polynomial exp; and the density φ(z).
#[inline(always)]
fn normal_cdf_pdf(z: f32) -> (f32, f32) {
    let a = z.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    // erfc(a) = t·exp(−a² + poly) (the exponent is at most ~1e-7 above zero at a = 0).
    let tail = 0.5 * t * exp_nonpositive((-a * a + poly).min(0.0));
    let cdf = if z >= 0.0 { 1.0 - tail } else { tail };
    let pdf = exp_nonpositive(-0.5 * z * z) * 0.398_942_3;
    (cdf, pdf)
}

/// φ(z) and φ′(z) of a smooth function with a vectorisable sweep (None for the others).
#[inline(always)]
fn smooth(kind: Nonlinearity, z: f32) -> (f32, f32) {
    match kind {
        Nonlinearity::Sigmoid => {
            let (s, c) = sigmoid_pair(z);
            (s, s * c)
        }
        Nonlinearity::Silu => {
            let (s, c) = sigmoid_pair(z);
            (z * s, s * (1.0 + z * c))
        }
        Nonlinearity::Gelu => {
            let (cdf, pdf) = normal_cdf_pdf(z);
            (z * cdf, cdf + z * pdf)
        }
        Nonlinearity::GeluTanh => {
            // (1 + tanh u)/2 = σ(2u), u = √(2/π)·(z + 0.044715·z³).
            const K: f32 = 0.797_884_6;
            let u = K * (z + 0.044_715 * z * z * z);
            let (s, c) = sigmoid_pair(2.0 * u);
            let du = K * (1.0 + 3.0 * 0.044_715 * z * z);
            (z * s, s + z * 2.0 * s * c * du)
        }
        _ => (f32::NAN, f32::NAN),
    }
}

/// Whether `kind` has a [`smooth`] sweep (under any activation: smooth functions are never
/// replaced by the surrogate).
fn has_sweep(kind: Nonlinearity) -> bool {
    matches!(kind, Nonlinearity::Sigmoid | Nonlinearity::Silu | Nonlinearity::Gelu | Nonlinearity::GeluTanh)
}

/// `$body` once per function with a [`smooth`] sweep, with `$k` the function as a constant,
/// so that each loop is compiled for its own function and vectorises.
macro_rules! per_smooth_kind {
    ($kind:expr, $k:ident => $body:block) => {
        match $kind {
            Nonlinearity::Sigmoid => {
                const $k: Nonlinearity = Nonlinearity::Sigmoid;
                $body
            }
            Nonlinearity::Silu => {
                const $k: Nonlinearity = Nonlinearity::Silu;
                $body
            }
            Nonlinearity::Gelu => {
                const $k: Nonlinearity = Nonlinearity::Gelu;
                $body
            }
            Nonlinearity::GeluTanh => {
                const $k: Nonlinearity = Nonlinearity::GeluTanh;
                $body
            }
            _ => {}
        }
    };
}

avx2_sweep! {
    /// [`smooth`] over a buffer: values into `out`, derivatives into `deriv`.
    fn smooth_sweep / smooth_sweep_avx2 = smooth_loop(kind: Nonlinearity, z: &[f32], out: &mut [f32], deriv: &mut [f32])
}

#[inline(always)]
fn smooth_loop(kind: Nonlinearity, z: &[f32], out: &mut [f32], deriv: &mut [f32]) {
    per_smooth_kind!(kind, K => {
        for ((&z, o), d) in z.iter().zip(out.iter_mut()).zip(deriv.iter_mut()) {
            (*o, *d) = smooth(K, z);
        }
    })
}

avx2_sweep! {
    /// φ of `src` into `dst` (`src` None: `dst` in place) for a function with a [`smooth`]
    /// sweep: the same values as [`smooth_sweep`], vectorised the same way.
    fn smooth_values / smooth_values_avx2 = smooth_values_loop(kind: Nonlinearity, src: Option<&[f32]>, dst: &mut [f32])
}

#[inline(always)]
fn smooth_values_loop(kind: Nonlinearity, src: Option<&[f32]>, dst: &mut [f32]) {
    // Plain `for` loops: an iterator adapter's `for_each` is a separate function that does not
    // inherit the caller's AVX2 (measured: scalar code, slower than libm).
    per_smooth_kind!(kind, K => {
        match src {
            Some(src) => {
                for (d, &z) in dst.iter_mut().zip(src) {
                    *d = smooth(K, z).0;
                }
            }
            None => {
                for v in dst.iter_mut() {
                    *v = smooth(K, *v).0;
                }
            }
        }
    })
}

/// PyTorch's `Hardsigmoid` (MobileNetV3's squeeze-and-excitation gate).
const TORCH_HARD_SIGMOID: Nonlinearity = Nonlinearity::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 };

/// `$body` with `$k` the function as a constant, for the real piecewise-linear functions of
/// the newer networks (HardSwish, PyTorch's Hardsigmoid, ReLU6) under [`Activation::Exact`]:
/// their scalar definition itself ([`nonlinearity::eval_at`]), compiled for one function so
/// that the loop vectorises (the same operations, so the same bits). `$fallback` otherwise.
macro_rules! per_piecewise_kind {
    ($kind:expr, $act:expr, $k:ident => $body:block else $fallback:block) => {
        match ($kind, $act) {
            (Nonlinearity::HardSwish, Activation::Exact) => {
                const $k: Nonlinearity = Nonlinearity::HardSwish;
                $body
            }
            (TORCH_HARD_SIGMOID, Activation::Exact) => {
                const $k: Nonlinearity = TORCH_HARD_SIGMOID;
                $body
            }
            (Nonlinearity::Relu6, Activation::Exact) => {
                const $k: Nonlinearity = Nonlinearity::Relu6;
                $body
            }
            _ => $fallback,
        }
    };
}

avx2_sweep! {
    /// φ and φ′ of a [`per_piecewise_kind!`] function into `out` and `deriv`; false (nothing
    /// written) for any other function.
    fn piecewise_sweep / piecewise_sweep_avx2 = piecewise_loop(kind: Nonlinearity, act: Activation, z: &[f32], out: &mut [f32], deriv: &mut [f32]) -> bool
}

#[inline(always)]
fn piecewise_loop(
    kind: Nonlinearity,
    act: Activation,
    z: &[f32],
    out: &mut [f32],
    deriv: &mut [f32],
) -> bool {
    per_piecewise_kind!(kind, act, K => {
        for ((&z, o), d) in z.iter().zip(out.iter_mut()).zip(deriv.iter_mut()) {
            let (v, dv, _) = nonlinearity::eval_at::<f32>(K, Activation::Exact, z);
            (*o, *d) = (v, dv);
        }
        true
    } else { false })
}

avx2_sweep! {
    /// φ of `src` into `dst` (`src` None: in place) for a [`per_piecewise_kind!`] function;
    /// false (nothing written) for any other.
    fn piecewise_values / piecewise_values_avx2 = piecewise_values_loop(kind: Nonlinearity, act: Activation, src: Option<&[f32]>, dst: &mut [f32]) -> bool
}

#[inline(always)]
fn piecewise_values_loop(kind: Nonlinearity, act: Activation, src: Option<&[f32]>, dst: &mut [f32]) -> bool {
    per_piecewise_kind!(kind, act, K => {
        match src {
            Some(src) => {
                for (d, &z) in dst.iter_mut().zip(src) {
                    *d = nonlinearity::eval_at::<f32>(K, Activation::Exact, z).0;
                }
            }
            None => {
                for v in dst.iter_mut() {
                    *v = nonlinearity::eval_at::<f32>(K, Activation::Exact, *v).0;
                }
            }
        }
        true
    } else { false })
}

/// φ(z) and φ′(z) of every value.
pub(crate) fn activate(kind: Nonlinearity, act: Activation, z: &[f32]) -> (Vec<f32>, Vec<f32>) {
    if let (Nonlinearity::Relu, Activation::Exact) = (kind, act) {
        let out = z.iter().map(|&z| if z > 0.0 { z } else { 0.0 }).collect();
        let deriv = z.iter().map(|&z| if z > 0.0 { 1.0 } else { 0.0 }).collect();
        return (out, deriv);
    }
    let (mut out, mut deriv) = (vec![0.0f32; z.len()], vec![0.0f32; z.len()]);
    match (kind, act) {
        (Nonlinearity::Relu, Activation::Softplus { beta }) => {
            softplus_sweep(beta as f32, z, &mut out, &mut deriv)
        }
        (Nonlinearity::Relu, Activation::SmoothDerivative { beta }) => {
            softplus_sweep(beta as f32, z, &mut out, &mut deriv);
            for (o, &z) in out.iter_mut().zip(z) {
                *o = if z > 0.0 { z } else { 0.0 };
            }
        }
        (k, _) if has_sweep(k) => smooth_sweep(k, z, &mut out, &mut deriv),
        _ if piecewise_sweep(kind, act, z, &mut out, &mut deriv) => {}
        _ => {
            for ((&z, o), d) in z.iter().zip(&mut out).zip(&mut deriv) {
                let (v, dv, _) = nonlinearity::eval(kind, act, z);
                (*o, *d) = (v, dv);
            }
        }
    }
    (out, deriv)
}

/// φ(z) of every value, in place: the same values as [`activate`]'s first part.
pub(crate) fn apply_in_place(kind: Nonlinearity, act: Activation, z: &mut [f32]) {
    if has_sweep(kind) {
        return smooth_values(kind, None, z);
    }
    if piecewise_values(kind, act, None, z) {
        return;
    }
    apply_each(
        kind,
        act,
        z.iter_mut().map(|v| {
            let z = *v;
            (v, z)
        }),
    );
}

/// φ of `src` into `dst` (a rectangle's rows in occlusion's region pass).
#[inline]
pub(crate) fn apply_into(kind: Nonlinearity, act: Activation, src: &[f32], dst: &mut [f32]) {
    if has_sweep(kind) {
        return smooth_values(kind, Some(src), dst);
    }
    if piecewise_values(kind, act, Some(src), dst) {
        return;
    }
    apply_each(kind, act, dst.iter_mut().zip(src.iter().copied()));
}

/// φ(z) into each destination: one match, then a plain loop per case (the common ReLU a
/// select that vectorises).
#[inline(always)]
fn apply_each<'d>(kind: Nonlinearity, act: Activation, pairs: impl Iterator<Item = (&'d mut f32, f32)>) {
    match (kind, act) {
        (Nonlinearity::Relu, Activation::Exact) => {
            pairs.for_each(|(d, z)| *d = if z > 0.0 { z } else { 0.0 })
        }
        (Nonlinearity::Relu, Activation::Softplus { beta }) => {
            let beta = beta as f32;
            pairs.for_each(|(d, z)| *d = softplus(beta, z).0);
        }
        _ => pairs.for_each(|(d, z)| *d = nonlinearity::eval(kind, act, z).0),
    }
}

/// The rule's gradient with respect to z, elementwise.
pub(crate) fn rule_backward(
    kind: Nonlinearity,
    act: Activation,
    rule: Rule,
    (z, d, z0): (&[f32], &[f32], Option<&[f32]>),
    g: &[f32],
) -> Vec<f32> {
    match rule {
        Rule::Gradient => g.iter().zip(d).map(|(g, d)| g * d).collect(),
        Rule::Guided => g.iter().zip(d).map(|(g, d)| g.max(0.0) * d).collect(),
        Rule::Deconvnet => g.iter().map(|g| g.max(0.0)).collect(),
        Rule::Lrp(_) => g.to_vec(),
        Rule::Rescale
            if (kind, act) == (Nonlinearity::Relu, Activation::Exact)
                && z0.is_some_and(|b| b.len() == g.len())
                && z.len() == g.len() =>
        {
            let z0 = z0.unwrap_or(&[]);
            g.iter().zip(z).zip(z0).map(|((&g, &z), &z0)| g * nonlinearity::relu_rescale(z, z0)).collect()
        }
        Rule::Rescale => {
            let z0 = z0.unwrap_or(&[]);
            (0..g.len())
                .map(|i| {
                    nonlinearity::backward(
                        kind,
                        act,
                        rule,
                        z[i],
                        d[i],
                        z0.get(i).copied().unwrap_or(z[i]),
                        g[i],
                    )
                })
                .collect()
        }
    }
}

/// The rule's adjoint elementwise: (λ for g, z̄), z̄ `None` where it is zero everywhere (the
/// real model, deconvnet).
pub(crate) fn rule_adjoint(
    kind: Nonlinearity,
    act: Activation,
    rule: Rule,
    (z, d, z0): (&[f32], &[f32], Option<&[f32]>),
    g: &[f32],
    lam: &[f32],
) -> (Vec<f32>, Option<Vec<f32>>) {
    let n = g.len();
    if rule.is_lrp() {
        return (lam.to_vec(), None);
    }
    let smooth = !kind.flat_second(act);
    let mut up = vec![0.0f32; n];
    let mut zbar = vec![0.0f32; n];
    let z0 = z0.unwrap_or(&[]);
    if let (Nonlinearity::Relu, Rule::Gradient) = (kind, rule) {
        // The attacks' case: φ″ = β·φ′·(1 − φ′) from the stored derivative, no exp.
        for i in 0..n {
            up[i] = d[i] * lam[i];
            zbar[i] = g[i] * act.second_derivative_from_first(d[i]) * lam[i];
        }
    } else {
        for i in 0..n {
            let z0i = z0.get(i).copied().unwrap_or(z[i]);
            (up[i], zbar[i]) = nonlinearity::adjoint(kind, act, rule, z[i], d[i], z0i, g[i], lam[i]);
        }
    }
    let second = smooth && rule != Rule::Deconvnet || rule == Rule::Rescale;
    (up, second.then_some(zbar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wide_sweep_gives_the_same_bits() {
        // Where the CPU has AVX2 (AVX-512), softplus_sweep runs the 8-lane (16-lane) build; it
        // must equal the plain build bit for bit (odd length: the vector tail too).
        let zs: Vec<f32> =
            (-5001..=5001).map(|i| i as f32 * 3.7e-3).chain([-1e4, -90.0, 0.0, 90.0]).collect();
        for beta in [1.0f32, 10.0, 100.0] {
            let (mut a, mut da) = (vec![0.0; zs.len()], vec![0.0; zs.len()]);
            let (mut b, mut db) = (vec![0.0; zs.len()], vec![0.0; zs.len()]);
            softplus_sweep(beta, &zs, &mut a, &mut da);
            softplus_loop(beta, &zs, &mut b, &mut db);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "β={beta}");
            assert!(da.iter().zip(&db).all(|(x, y)| x.to_bits() == y.to_bits()), "β={beta}");
            // The dispatcher takes AVX-512 where the CPU has it: the AVX2 build must agree too.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { softplus_sweep_avx2(beta, &zs, &mut a, &mut da) };
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "AVX2, β={beta}");
                assert!(da.iter().zip(&db).all(|(x, y)| x.to_bits() == y.to_bits()), "AVX2, β={beta}");
            }
        }
        // The smooth functions' sweeps (the erfc polynomial of GELU, the exp of the sigmoids):
        // each build, bit for bit the plain loop.
        for kind in [Nonlinearity::Sigmoid, Nonlinearity::Silu, Nonlinearity::Gelu, Nonlinearity::GeluTanh] {
            let mut want = vec![0.0; zs.len()];
            smooth_values_loop(kind, Some(&zs), &mut want);
            let mut got = vec![0.0; zs.len()];
            smooth_values(kind, Some(&zs), &mut got);
            assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{kind:?}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { smooth_values_avx2(kind, Some(&zs), &mut got) };
                assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "AVX2, {kind:?}");
            }
        }
    }

    #[test]
    fn every_sweep_is_the_scalar_definition() {
        // activate, apply_in_place, rule_backward and rule_adjoint of every function against
        // nonlinearity::{eval, backward, adjoint}: bit for bit, except the polynomial softplus
        // sweep of ReLU (a few ulps, tested above).
        use crate::model::nonlinearity::{adjoint, backward, eval};
        let z: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.23).collect();
        let z0: Vec<f32> = z.iter().map(|v| 0.5 - v * 0.3).collect();
        let g: Vec<f32> = z.iter().map(|v| (v * 1.7).sin()).collect();
        let lam: Vec<f32> = z.iter().map(|v| (v * 0.9).cos()).collect();
        for kind in crate::model::nonlinearity::tests::ALL {
            let acts = [
                Activation::Exact,
                Activation::Softplus { beta: 4.0 },
                Activation::SmoothDerivative { beta: 4.0 },
            ];
            for act in acts {
                let swept = kind == Nonlinearity::Relu || has_sweep(kind);
                let tol = |want: f32| if swept { 2e-6 * want.abs().max(1.0) } else { 0.0 };
                let (v, d) = activate(kind, act, &z);
                let mut inplace = z.clone();
                apply_in_place(kind, act, &mut inplace);
                for i in 0..z.len() {
                    let (wv, wd, _) = eval(kind, act, z[i]);
                    assert!(
                        (v[i] - wv).abs() <= tol(wv) && (inplace[i] - wv).abs() <= tol(wv),
                        "{kind:?} {act:?}"
                    );
                    assert!((d[i] - wd).abs() <= tol(wd), "{kind:?} {act:?} φ′ at {}", z[i]);
                }
                for rule in [Rule::Gradient, Rule::Guided, Rule::Deconvnet, Rule::Rescale] {
                    let back = rule_backward(kind, act, rule, (&z, &d, Some(&z0)), &g);
                    let (up, zbar) = rule_adjoint(kind, act, rule, (&z, &d, Some(&z0)), &g, &lam);
                    for i in 0..z.len() {
                        let want = backward(kind, act, rule, z[i], d[i], z0[i], g[i]);
                        assert_eq!(back[i].to_bits(), want.to_bits(), "{kind:?} {act:?} {rule:?}");
                        let (wu, wz) = adjoint(kind, act, rule, z[i], d[i], z0[i], g[i], lam[i]);
                        let got_z = zbar.as_ref().map_or(0.0, |zb| zb[i]);
                        assert!(
                            (up[i] - wu).abs() <= 1e-6 && (got_z - wz).abs() <= 1e-6 * wz.abs().max(1.0),
                            "{kind:?} {act:?} {rule:?} adjoint at {}: {:?} vs {:?}",
                            z[i],
                            (up[i], got_z),
                            (wu, wz)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn smooth_sweeps_match_the_definitions_in_f64() {
        // Sigmoid, SiLU and both GELUs over a fine grid and the far tails: φ and φ′ against
        // the scalar definitions evaluated in f64, within a few float32 ulps (relative 1e-6 of
        // max(|φ|, 1e-3), absolute 1e-9 where φ vanishes and 2e-7 for φ′, a few ulps of its
        // order-one terms); the AVX2 build bit for bit against the plain one.
        use crate::model::nonlinearity::eval_at;
        let zs: Vec<f32> = (-30_001..=30_001)
            .map(|i| i as f32 * 1e-3)
            .chain([-1e4, -90.0, -20.0, 20.0, 90.0, 1e4])
            .collect();
        for kind in [Nonlinearity::Sigmoid, Nonlinearity::Silu, Nonlinearity::Gelu, Nonlinearity::GeluTanh] {
            let (mut v, mut d) = (vec![0.0; zs.len()], vec![0.0; zs.len()]);
            smooth_sweep(kind, &zs, &mut v, &mut d);
            let (mut pv, mut pd) = (vec![0.0; zs.len()], vec![0.0; zs.len()]);
            smooth_loop(kind, &zs, &mut pv, &mut pd);
            assert!(v.iter().zip(&pv).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}");
            assert!(d.iter().zip(&pd).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}");
            // The value-only sweeps (the forward pass without derivatives) give the same bits.
            let mut inplace = zs.clone();
            apply_in_place(kind, Activation::Exact, &mut inplace);
            let mut into = vec![0.0; zs.len()];
            apply_into(kind, Activation::Exact, &zs, &mut into);
            assert!(inplace
                .iter()
                .chain(&into)
                .zip(v.iter().chain(&v))
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            for (i, &z) in zs.iter().enumerate() {
                let (wv, wd, _) = eval_at(kind, Activation::Exact, f64::from(z));
                let close = |got: f32, want: f64, floor: f64| {
                    (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1e-3) + floor
                };
                assert!(close(v[i], wv, 1e-9), "{kind:?} φ({z}) = {} vs {wv}", v[i]);
                // φ′ is a sum of order-one terms that cancel where it crosses zero.
                assert!(close(d[i], wd, 2e-7), "{kind:?} φ′({z}) = {} vs {wd}", d[i]);
            }
        }
    }

    #[test]
    fn polynomial_softplus_matches_the_library_functions() {
        // A sweep over the range pooling sees, and the far tails: softplus and sigmoid to a
        // few float32 ulps of the libm forms (relative 1e-6, absolute 1e-12 near zero).
        for beta in [1.0f32, 10.0, 100.0] {
            let zs: Vec<f32> =
                (-20_000..=20_000).map(|i| i as f32 * 1e-3).chain([-1e4, -90.0, 90.0, 1e4]).collect();
            let (mut sp, mut d) = (vec![0.0; zs.len()], vec![0.0; zs.len()]);
            softplus_sweep(beta, &zs, &mut sp, &mut d);
            let act = Activation::Softplus { beta: f64::from(beta) };
            for (i, &z) in zs.iter().enumerate() {
                let (want, want_d) = act.apply_and_derivative(z);
                assert!(
                    (sp[i] - want).abs() <= 1e-6 * want.abs() + 1e-12,
                    "β={beta} z={z}: {} vs {want}",
                    sp[i]
                );
                assert!(
                    (d[i] - want_d).abs() <= 1e-6 * want_d.abs() + 1e-12,
                    "β={beta} z={z}: {} vs {want_d}",
                    d[i]
                );
            }
        }
        for x in [0.0f32, -1e-8, -0.3, -1.0, -10.0, -50.0, -86.9] {
            assert!((exp_nonpositive(x) - x.exp()).abs() <= 2e-7 * x.exp(), "{x}");
        }
        assert_eq!(exp_nonpositive(-88.0), 0.0);
    }
}
