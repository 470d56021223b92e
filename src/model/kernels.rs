//! Hand-written CPU passes of `fmnist_cnn` for every call that needs no autograd.
//!
//! Why: candle runs each layer as a chain of generic ops, each allocating its output and
//! walking memory again (bias add, activation, arg-max mask, mask product, pad, stack, ...).
//! On this small CNN that per-op cost, not arithmetic, dominated: ~1,300 gradients/s on two
//! cores against ~3,300 for PyTorch (reports/bench/README.md). Here one image goes through
//! conv1 → act → pool → conv2 → act → pool in reused buffers, with each conv as im2col + one
//! GEMM of the `gemm` crate (the one candle itself uses), bias, activation and pooling fused
//! into single sweeps, and the backward pass routing through the pools' stored arg-max
//! indices instead of dense masks. The fully connected layers run as GEMMs over a block of
//! images so that fc1's 1.6 MB of weights are read once per block, not once per image.
//! Occlusion has its own pass ([`Kernels::occluded_logits`]): the clean pass once per image,
//! then per window only the region of each layer that the window reaches.
//!
//! The math is exactly that of [`super::FmnistCnn`]'s candle passes (which remain the path
//! for anything autograd must see: second-order attacks, training): the same activations,
//! the same first-arg-max pooling on the activated values, the same [`ReluRule`]s and
//! DeepLIFT rescale rule. Results agree to float32 rounding (tested in `fmnist_cnn`).
//!
//! Determinism: images are processed in fixed blocks of [`BLOCK`] rows, one rayon task per
//! block, and every GEMM inside a task is single-threaded. The work of a block, and so every
//! float operation, is the same whatever the number of threads.
//!
//! Shapes (per image, row-major): x [1,28,28]; z1 [32,28·28]; p1 [32,14·14];
//! z2 [64,14·14]; p2 [64·7·7] (flattened in NCHW order, as fc1 expects); z3 [128]; logits [10].

use super::{Activation, ReluRule};
use rayon::prelude::*;

/// Images per parallel task (fixed, so results do not depend on the thread count).
const BLOCK: usize = 8;
const C1: usize = 32;
const C2: usize = 64;
const S1: usize = 28 * 28;
const S2: usize = 14 * 14;
const S3: usize = 7 * 7;
const FLAT: usize = C2 * S3;
const HIDDEN: usize = 128;
const CLASSES: usize = 10;
/// |z − z₀| below which DeepLIFT's multiplier falls back to the derivative (as the candle
/// path's `RESCALE_EPS`).
const RESCALE_EPS: f32 = 1e-6;

/// The weights, as flat row-major f32 arrays in the layouts the GEMMs read.
#[derive(Debug, Clone)]
pub(crate) struct Kernels {
    /// conv1 [32, 9] (out channel, tap).
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// conv2 [64, 32·9] (out channel, in channel · 9 + tap).
    w2: Vec<f32>,
    b2: Vec<f32>,
    /// fc1 [128, 3136].
    fc1: Vec<f32>,
    fc1_b: Vec<f32>,
    /// fc2 [10, 128].
    fc2: Vec<f32>,
    fc2_b: Vec<f32>,
}

/// The backward rule at every nonlinearity of one pass.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// A [`ReluRule`] (gradient, guided backprop, deconvnet).
    Relu(ReluRule),
    /// DeepLIFT's rescale multiplier against the baseline's pre-activations.
    Rescale,
}

/// Where the backward pass stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// At the input: the gradient [B, 784].
    Input,
    /// At conv2's post-activation output, before pooling: (act(z2), gradient) [B, 64·196].
    Conv2Relu,
    /// At conv2's pre-activation: (z2, gradient) [B, 64·196].
    Conv2,
}

/// One block's forward state, kept for its backward pass.
struct Block {
    n: usize,
    z1: Vec<f32>,
    idx1: Vec<u8>,
    /// act′ at each pool-1 window's arg-max [n, 32·196].
    d1: Vec<f32>,
    z2: Vec<f32>,
    idx2: Vec<u8>,
    /// act′ at each pool-2 window's arg-max [n, 3136].
    d2: Vec<f32>,
    p2: Vec<f32>,
    z3: Vec<f32>,
    logits: Vec<f32>,
}

/// One block's backward pass: its output (`grad`, and `layer`'s activations for the layer
/// stops) and the intermediate gradients the Hessian–vector stage reuses: at fc1's output
/// before the nonlinearity (`ga3` [n,128]) and at the pooled outputs of conv2 (`gp2`
/// [n,3136]) and conv1 (`gp1` [n,32·196], only for [`Stop::Input`]).
struct Backward {
    ga3: Vec<f32>,
    gp2: Vec<f32>,
    gp1: Vec<f32>,
    grad: Vec<f32>,
    layer: Vec<f32>,
}

/// One block's forward state and its backward pass (true gradient rule, to the input).
struct GradState {
    block: Block,
    back: Backward,
}

/// What one pass returns: logits [B,10], and the backward output (empty for a forward
/// pass) with, for the layer stops, the layer's activations.
pub(crate) struct PassOut {
    pub logits: Vec<f32>,
    pub grad: Vec<f32>,
    pub layer: Vec<f32>,
}

/// A row-major matrix operand: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// dst [m,n] (row-major, contiguous) = a [m,k] · b [k,n], plus dst's old value if
/// `accumulate`. Single-threaded (the parallelism is over image blocks).
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], a: View, b: View, accumulate: bool) {
    assert!(
        dst.len() >= m * n && a.fits(m, k) && b.fits(k, n),
        "kernel matmul: operands too small for {m}×{k}·{k}×{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the assertion above keeps every index the kernel reads or writes in bounds of
    // its slice; `dst` is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Patches of a 3×3, padding-1 convolution: x [c, h·w] → cols [c·9, h·w], row c·9 + 3i + j
/// holding x[c, y+i−1, x+j−1] (zero outside).
fn im2col(x: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
    for ci in 0..c {
        let plane = &x[ci * h * w..][..h * w];
        for i in 0..3 {
            for j in 0..3 {
                let row = &mut cols[(ci * 9 + i * 3 + j) * h * w..][..h * w];
                for y in 0..h {
                    let dst = &mut row[y * w..][..w];
                    let sy = y + i;
                    if sy == 0 || sy > h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[(sy - 1) * w..][..w];
                    match j {
                        0 => {
                            dst[0] = 0.0;
                            dst[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => dst.copy_from_slice(src),
                        _ => {
                            dst[..w - 1].copy_from_slice(&src[1..]);
                            dst[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: cols [c·9, h·w] → x [c, h·w], summing every patch entry back
/// onto the pixel it was copied from.
fn col2im(cols: &[f32], c: usize, h: usize, w: usize, x: &mut [f32]) {
    x[..c * h * w].fill(0.0);
    for ci in 0..c {
        let plane = &mut x[ci * h * w..][..h * w];
        for i in 0..3 {
            for j in 0..3 {
                let row = &cols[(ci * 9 + i * 3 + j) * h * w..][..h * w];
                for y in 0..h {
                    let sy = y + i;
                    if sy == 0 || sy > h {
                        continue;
                    }
                    let src = &row[y * w..][..w];
                    let dst = &mut plane[(sy - 1) * w..][..w];
                    let (d, s) = match j {
                        0 => (&mut dst[..w - 1], &src[1..]),
                        1 => (&mut dst[..], src),
                        _ => (&mut dst[1..], &src[..w - 1]),
                    };
                    for (d, s) in d.iter_mut().zip(s) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Adds `bias[r]` to every entry of row r of `m` [rows, cols].
fn fill_rows(m: &mut [f32], bias: &[f32], cols: usize) {
    for (row, &b) in m.chunks_exact_mut(cols).zip(bias) {
        row.fill(b);
    }
}

/// 2×2 max-pooling of act(z) for z [c, h·w]: pooled [c, h/2·w/2], the index (2·di + dj) of
/// each window's first maximum in row-major order (ranked as [`Activation::pool_rank`]
/// says, as PyTorch and the candle path pick it), and act′ at that maximum, which every
/// backward pass through the window needs: one activation and one derivative per window.
#[allow(clippy::too_many_arguments)]
fn pool(
    z: &[f32],
    c: usize,
    h: usize,
    w: usize,
    act: Activation,
    out: &mut [f32],
    idx: &mut [u8],
    deriv: &mut [f32],
) {
    let (h2, w2) = (h / 2, w / 2);
    let by_output = act.pool_ranks_outputs();
    for ci in 0..c {
        let plane = &z[ci * h * w..][..h * w];
        for py in 0..h2 {
            let (top, bottom) = (&plane[2 * py * w..][..w], &plane[(2 * py + 1) * w..][..w]);
            let o = ci * h2 * w2 + py * w2;
            let (out, idx) = (&mut out[o..][..w2], &mut idx[o..][..w2]);
            // ReLU's outputs are max(z, 0): rank by that, so a window of negatives ties at
            // zero and keeps its first position; strict > keeps the first maximum. The
            // pooled value is the best rank either way: relu(z_max), or z_max for softplus,
            // whose activation and derivative follow below (relu′(z_max) = [relu(z_max) > 0]).
            // Selects, not branches: the compiler vectorises this loop.
            let floor = if by_output { 0.0 } else { f32::NEG_INFINITY };
            for px in 0..w2 {
                let r =
                    [top[2 * px], top[2 * px + 1], bottom[2 * px], bottom[2 * px + 1]].map(|v| v.max(floor));
                let (mut best, mut arg) = (r[0], 0u8);
                for (q, &v) in r.iter().enumerate().skip(1) {
                    let up = v > best;
                    best = if up { v } else { best };
                    arg = if up { q as u8 } else { arg };
                }
                out[px] = best;
                idx[px] = arg;
            }
        }
    }
    // One activation and derivative per window, on the maxima gathered above.
    activate_pooled(act, &mut out[..c * h2 * w2], &mut deriv[..c * h2 * w2]);
}

/// The activation of each pooled maximum in place, and its derivative into `deriv`.
fn activate_pooled(act: Activation, out: &mut [f32], deriv: &mut [f32]) {
    match act {
        Activation::Relu => {
            for (o, d) in out.iter_mut().zip(deriv.iter_mut()) {
                (*o, *d) = act.apply_and_derivative(*o);
            }
        }
        Activation::Softplus { beta } => softplus_sweep(beta as f32, out, deriv),
    }
}

/// A half-open range of rows (or columns) of a feature map.
type Span = std::ops::Range<usize>;

/// The outputs of a 3×3, padding-1 convolution that read any of `r` (of `len` positions).
fn conv_reach(r: &Span, len: usize) -> Span {
    r.start.saturating_sub(1)..(r.end + 1).min(len)
}

/// The 2×2 pooling windows that contain any of `r`.
fn pool_reach(r: &Span) -> Span {
    r.start / 2..(r.end - 1) / 2 + 1
}

/// One region of a 3×3, padding-1 convolution: z[:, rows × cols] = bias + w · patches of
/// x [cin, h·w], written into `z` [cout, h·w] (the rest of `z` untouched). The patches are
/// [`im2col`]'s rows for those positions, so the arithmetic is that of the full pass.
fn conv_region(
    x: &[f32],
    (cin, h, w): (usize, usize, usize),
    weights: &[f32],
    bias: &[f32],
    (rows, cols): (&Span, &Span),
    scratch: &mut Vec<f32>,
    z: &mut [f32],
) {
    let np = rows.len() * cols.len();
    let cout = bias.len();
    scratch.clear();
    scratch.resize(cin * 9 * np + cout * np, 0.0);
    let (patches, out) = scratch.split_at_mut(cin * 9 * np);
    for ci in 0..cin {
        let plane = &x[ci * h * w..][..h * w];
        for tap in 0..9 {
            let (i, j) = (tap / 3, tap % 3);
            let row = &mut patches[(ci * 9 + tap) * np..][..np];
            let mut at = 0;
            for y in rows.clone() {
                for xx in cols.clone() {
                    let (sy, sx) = (y + i, xx + j);
                    let inside = sy >= 1 && sy <= h && sx >= 1 && sx <= w;
                    row[at] = if inside { plane[(sy - 1) * w + sx - 1] } else { 0.0 };
                    at += 1;
                }
            }
        }
    }
    fill_rows(out, bias, np);
    matmul(cout, np, cin * 9, out, View::rows(weights, cin * 9), View::rows(patches, np), true);
    for (co, vals) in out.chunks_exact(np).enumerate() {
        let mut at = 0;
        for y in rows.clone() {
            let dst = &mut z[co * h * w + y * w..][..w];
            dst[cols.clone()].copy_from_slice(&vals[at..at + cols.len()]);
            at += cols.len();
        }
    }
}

/// [`pool`] for the windows `rows × cols` (pooled coordinates) of z [c, h·w]: their
/// activated maxima written into `out` [c, h/2·w/2], the rest untouched. The same ranking and
/// activation as [`pool`].
fn pool_region(
    z: &[f32],
    (c, h, w): (usize, usize, usize),
    act: Activation,
    (rows, cols): (&Span, &Span),
    out: &mut [f32],
) {
    let (h2, w2) = (h / 2, w / 2);
    let floor = if act.pool_ranks_outputs() { 0.0 } else { f32::NEG_INFINITY };
    let mut best = Vec::with_capacity(c * rows.len() * cols.len());
    for ci in 0..c {
        let plane = &z[ci * h * w..][..h * w];
        for py in rows.clone() {
            for px in cols.clone() {
                let at = |dy: usize, dx: usize| plane[(2 * py + dy) * w + 2 * px + dx].max(floor);
                let r = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                // The first maximum, as `pool` keeps it (strict >).
                best.push(r[1..].iter().fold(r[0], |m, &v| if v > m { v } else { m }));
            }
        }
    }
    let mut deriv = vec![0.0; best.len()];
    activate_pooled(act, &mut best, &mut deriv);
    let mut vals = best.into_iter();
    for ci in 0..c {
        for py in rows.clone() {
            for px in cols.clone() {
                out[ci * h2 * w2 + py * w2 + px] = vals.next().unwrap_or(0.0);
            }
        }
    }
}

/// Copies `rows × cols` of every channel of `clean` [c, h·w] back into `z`.
fn restore(z: &mut [f32], clean: &[f32], (c, h, w): (usize, usize, usize), (rows, cols): (&Span, &Span)) {
    for ci in 0..c {
        for y in rows.clone() {
            let at = ci * h * w + y * w;
            z[at..][cols.clone()].copy_from_slice(&clean[at..][cols.clone()]);
        }
    }
}

/// exp(x) for x ≤ 0 without a library call, so loops over it vectorise: x = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, Cephes' degree-6 polynomial for e^r (relative error ~1e-7), times 2^n
/// built in the exponent bits; 0 below −87 (where f32 would go subnormal).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits((((n as i32).max(-126) + 127) as u32) << 23);
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

/// softplus_β and its derivative sigmoid(βz) in place of each z in `z` (derivatives into
/// `deriv`), from one e = exp(−β|z|) as [`Activation::apply_and_derivative`], with the
/// library calls replaced by the polynomials above so that the loop vectorises.
fn softplus_sweep(beta: f32, z: &mut [f32], deriv: &mut [f32]) {
    for (z, d) in z.iter_mut().zip(deriv.iter_mut()) {
        let e = exp_nonpositive(-beta * z.abs());
        let inv = 1.0 / (1.0 + e);
        *d = if *z >= 0.0 { inv } else { e * inv };
        *z = z.max(0.0) + ln_1p_unit(e) / beta;
    }
}

/// The gradient with respect to z [c, h·w] at one pool + nonlinearity: each pooled
/// gradient goes whole to its window's arg-max, through the rule there (`z0` are the
/// baseline's pre-activations, for the rescale rule); everything else is zero. With
/// `rule = None` only the routing is done (the gradient with respect to act(z)).
#[allow(clippy::too_many_arguments)]
fn unpool(
    g: &[f32],
    idx: &[u8],
    deriv: &[f32],
    z: &[f32],
    z0: Option<&[f32]>,
    c: usize,
    h: usize,
    w: usize,
    act: Activation,
    rule: Option<Rule>,
    out: &mut [f32],
) {
    out[..c * h * w].fill(0.0);
    let (h2, w2) = (h / 2, w / 2);
    for ci in 0..c {
        for py in 0..h2 {
            for px in 0..w2 {
                let o = ci * h2 * w2 + py * w2 + px;
                let q = idx[o] as usize;
                let at = ci * h * w + (2 * py + q / 2) * w + 2 * px + q % 2;
                out[at] = match rule {
                    None => g[o],
                    Some(Rule::Relu(ReluRule::Gradient)) => g[o] * deriv[o],
                    Some(Rule::Relu(ReluRule::Guided)) => g[o].max(0.0) * deriv[o],
                    Some(rule) => backward_scalar(rule, act, z[at], z0.map(|z0| z0[at]), g[o]),
                };
            }
        }
    }
}

/// One nonlinearity's backward rule on scalars (see [`ReluRule::backward`] and the candle
/// path's rescale closure).
fn backward_scalar(rule: Rule, act: Activation, z: f32, z0: Option<f32>, g: f32) -> f32 {
    match (rule, z0) {
        (Rule::Relu(ReluRule::Gradient), _) => g * act.derivative_scalar(z),
        (Rule::Relu(ReluRule::Guided), _) => g.max(0.0) * act.derivative_scalar(z),
        (Rule::Relu(ReluRule::Deconvnet), _) => g.max(0.0),
        (Rule::Rescale, Some(z0)) => {
            let dz = z - z0;
            if dz.abs() > RESCALE_EPS {
                g * ((act.apply_scalar(z) - act.apply_scalar(z0)) / dz)
            } else {
                g * act.derivative_scalar(z)
            }
        }
        (Rule::Rescale, None) => g * act.derivative_scalar(z),
    }
}

/// One pool + nonlinearity of the Hessian–vector pass (Pearlmutter's R-operator): from the
/// pooled gradient `g` and its directional derivative `rg`, the gradient with respect to z,
/// g·σ'(z), and its directional derivative rg·σ'(z) + g·σ''(z)·rz, both at the arg-max only.
#[allow(clippy::too_many_arguments)]
fn unpool_r(
    g: &[f32],
    rg: &[f32],
    idx: &[u8],
    deriv: &[f32],
    rz: &[f32],
    (c, h, w): (usize, usize, usize),
    act: Activation,
    out: &mut [f32],
    rout: &mut [f32],
) {
    out[..c * h * w].fill(0.0);
    rout[..c * h * w].fill(0.0);
    let (h2, w2) = (h / 2, w / 2);
    for ci in 0..c {
        for py in 0..h2 {
            for px in 0..w2 {
                let o = ci * h2 * w2 + py * w2 + px;
                let q = idx[o] as usize;
                let at = ci * h * w + (2 * py + q / 2) * w + 2 * px + q % 2;
                let d1 = deriv[o];
                out[at] = g[o] * d1;
                rout[at] = rg[o] * d1 + g[o] * act.second_derivative_from_first(d1) * rz[at];
            }
        }
    }
}

/// The directional derivative of pooling along `rz` [c, h·w]: σ'(z)·rz at each window's
/// arg-max (the arg-max itself is held fixed, as in every pass).
fn pool_r(deriv: &[f32], rz: &[f32], idx: &[u8], (c, h, w): (usize, usize, usize), out: &mut [f32]) {
    let (h2, w2) = (h / 2, w / 2);
    for ci in 0..c {
        for py in 0..h2 {
            for px in 0..w2 {
                let o = ci * h2 * w2 + py * w2 + px;
                let q = idx[o] as usize;
                let at = ci * h * w + (2 * py + q / 2) * w + 2 * px + q % 2;
                out[o] = deriv[o] * rz[at];
            }
        }
    }
}

impl Kernels {
    /// Takes the weights in PyTorch layouts: conv1 [32,1,3,3], conv2 [64,32,3,3],
    /// fc1 [128,3136], fc2 [10,128] and their biases, all flattened row-major.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        fc1: Vec<f32>,
        fc1_b: Vec<f32>,
        fc2: Vec<f32>,
        fc2_b: Vec<f32>,
    ) -> Option<Self> {
        let sizes = [
            (w1.len(), C1 * 9),
            (b1.len(), C1),
            (w2.len(), C2 * C1 * 9),
            (b2.len(), C2),
            (fc1.len(), HIDDEN * FLAT),
            (fc1_b.len(), HIDDEN),
            (fc2.len(), CLASSES * HIDDEN),
            (fc2_b.len(), CLASSES),
        ];
        sizes.iter().all(|(have, want)| have == want).then_some(Self {
            w1,
            b1,
            w2,
            b2,
            fc1,
            fc1_b,
            fc2,
            fc2_b,
        })
    }

    /// The forward pass of `n` images `x` [n, 784] (each block's state kept).
    fn forward_block(&self, x: &[f32], n: usize, act: Activation) -> Block {
        let mut b = Block {
            n,
            z1: vec![0.0; n * C1 * S1],
            idx1: vec![0; n * C1 * S2],
            d1: vec![0.0; n * C1 * S2],
            z2: vec![0.0; n * C2 * S2],
            idx2: vec![0; n * FLAT],
            d2: vec![0.0; n * FLAT],
            p2: vec![0.0; n * FLAT],
            z3: Vec::new(),
            logits: Vec::new(),
        };
        let mut cols1 = vec![0.0; 9 * S1];
        let mut p1 = vec![0.0; C1 * S2];
        let mut cols2 = vec![0.0; C1 * 9 * S2];
        for i in 0..n {
            im2col(&x[i * S1..][..S1], 1, 28, 28, &mut cols1);
            let z1 = &mut b.z1[i * C1 * S1..][..C1 * S1];
            fill_rows(z1, &self.b1, S1);
            matmul(C1, S1, 9, z1, View::rows(&self.w1, 9), View::rows(&cols1, S1), true);
            let (idx1, d1) = (&mut b.idx1[i * C1 * S2..][..C1 * S2], &mut b.d1[i * C1 * S2..][..C1 * S2]);
            pool(z1, C1, 28, 28, act, &mut p1, idx1, d1);
            im2col(&p1, C1, 14, 14, &mut cols2);
            let z2 = &mut b.z2[i * C2 * S2..][..C2 * S2];
            fill_rows(z2, &self.b2, S2);
            matmul(C2, S2, C1 * 9, z2, View::rows(&self.w2, C1 * 9), View::rows(&cols2, S2), true);
            let (p2, idx2) = (&mut b.p2[i * FLAT..][..FLAT], &mut b.idx2[i * FLAT..][..FLAT]);
            pool(z2, C2, 14, 14, act, p2, idx2, &mut b.d2[i * FLAT..][..FLAT]);
        }
        (b.z3, b.logits) = self.dense_head(&b.p2, n, act);
        b
    }

    /// fc1 → act → fc2 for `n` rows of pooled features `p2` [n, 3136], as two GEMMs over the
    /// rows: (z3 [n,128] before the activation, logits [n,10]).
    fn dense_head(&self, p2: &[f32], n: usize, act: Activation) -> (Vec<f32>, Vec<f32>) {
        let mut z3 = self.fc1_b.repeat(n);
        matmul(n, HIDDEN, FLAT, &mut z3, View::rows(p2, FLAT), View::transposed(&self.fc1, FLAT), true);
        let a3: Vec<f32> = z3.iter().map(|&z| act.apply_scalar(z)).collect();
        let mut logits = self.fc2_b.repeat(n);
        matmul(
            n,
            CLASSES,
            HIDDEN,
            &mut logits,
            View::rows(&a3, HIDDEN),
            View::transposed(&self.fc2, HIDDEN),
            true,
        );
        (z3, logits)
    }

    /// The backward pass of one block from `gl` [n,10] (the upstream gradient of the
    /// logits) down to `stop`; `base` is the baseline block for the rescale rule (one row
    /// broadcast, or one row per image). Returns (gradient, layer activations).
    fn backward_block(
        &self,
        b: &Block,
        gl: &[f32],
        act: Activation,
        rule: Rule,
        base: Option<&Block>,
        stop: Stop,
    ) -> Backward {
        let n = b.n;
        let base_row = |i: usize| base.map(|z| if z.n == 1 { 0 } else { i });
        let mut ga3 = vec![0.0; n * HIDDEN];
        matmul(n, HIDDEN, CLASSES, &mut ga3, View::rows(gl, CLASSES), View::rows(&self.fc2, HIDDEN), false);
        let mut g3 = vec![0.0; n * HIDDEN];
        for i in 0..n {
            for j in 0..HIDDEN {
                let z0 = base.zip(base_row(i)).map(|(z, r)| z.z3[r * HIDDEN + j]);
                let at = i * HIDDEN + j;
                g3[at] = backward_scalar(rule, act, b.z3[at], z0, ga3[at]);
            }
        }
        let mut gp2 = vec![0.0; n * FLAT];
        matmul(n, FLAT, HIDDEN, &mut gp2, View::rows(&g3, HIDDEN), View::rows(&self.fc1, FLAT), false);
        let per_image = match stop {
            Stop::Input => S1,
            Stop::Conv2 | Stop::Conv2Relu => C2 * S2,
        };
        let mut grad = vec![0.0; n * per_image];
        let mut layer = Vec::new();
        let mut g2 = vec![0.0; C2 * S2];
        let mut gcols2 = vec![0.0; C1 * 9 * S2];
        let mut gp1 = vec![0.0; if stop == Stop::Input { n * C1 * S2 } else { 0 }];
        let mut gz1 = vec![0.0; C1 * S1];
        let mut gcols1 = vec![0.0; 9 * S1];
        for i in 0..n {
            let z2 = &b.z2[i * C2 * S2..][..C2 * S2];
            let z2_0 = base.zip(base_row(i)).map(|(z, r)| &z.z2[r * C2 * S2..][..C2 * S2]);
            let (gp2_i, idx2) = (&gp2[i * FLAT..][..FLAT], &b.idx2[i * FLAT..][..FLAT]);
            let d2 = &b.d2[i * FLAT..][..FLAT];
            let out = &mut grad[i * per_image..][..per_image];
            match stop {
                Stop::Conv2Relu => {
                    unpool(gp2_i, idx2, d2, z2, None, C2, 14, 14, act, None, out);
                    layer.extend(z2.iter().map(|&z| act.apply_scalar(z)));
                    continue;
                }
                Stop::Conv2 => {
                    unpool(gp2_i, idx2, d2, z2, z2_0, C2, 14, 14, act, Some(rule), out);
                    layer.extend_from_slice(z2);
                    continue;
                }
                Stop::Input => unpool(gp2_i, idx2, d2, z2, z2_0, C2, 14, 14, act, Some(rule), &mut g2),
            }
            matmul(
                C1 * 9,
                S2,
                C2,
                &mut gcols2,
                View::transposed(&self.w2, C1 * 9),
                View::rows(&g2, S2),
                false,
            );
            let gp1_i = &mut gp1[i * C1 * S2..][..C1 * S2];
            col2im(&gcols2, C1, 14, 14, gp1_i);
            let z1 = &b.z1[i * C1 * S1..][..C1 * S1];
            let z1_0 = base.zip(base_row(i)).map(|(z, r)| &z.z1[r * C1 * S1..][..C1 * S1]);
            let (idx1, d1) = (&b.idx1[i * C1 * S2..][..C1 * S2], &b.d1[i * C1 * S2..][..C1 * S2]);
            unpool(gp1_i, idx1, d1, z1, z1_0, C1, 28, 28, act, Some(rule), &mut gz1);
            matmul(9, S1, C1, &mut gcols1, View::transposed(&self.w1, 9), View::rows(&gz1, S1), false);
            col2im(&gcols1, 1, 28, 28, out);
        }
        Backward { ga3, gp2, gp1, grad, layer }
    }

    /// Stage one of the Hessian–vector pass for one block (true gradient rule): the forward
    /// pass and the backward pass of ⟨gl, logits⟩, keeping what stage two needs.
    fn gradient_state(&self, x: &[f32], gl: &[f32], n: usize, act: Activation) -> GradState {
        let block = self.forward_block(x, n, act);
        let back = self.backward_block(&block, gl, act, Rule::Relu(ReluRule::Gradient), None, Stop::Input);
        GradState { block, back }
    }

    /// Stage two: H·v for one block from its [`GradState`] (Pearlmutter's R-operator): the
    /// forward pass's directional derivative along `v` [n·784], then the backward pass's,
    /// layer by layer. Costs about one gradient.
    fn hessian_vector_from(&self, st: &GradState, v: &[f32], act: Activation) -> Vec<f32> {
        let b = &st.block;
        let n = b.n;
        let mut rz1 = vec![0.0; n * C1 * S1];
        let mut rz2 = vec![0.0; n * C2 * S2];
        let mut rp2 = vec![0.0; n * FLAT];
        let mut cols1 = vec![0.0; 9 * S1];
        let mut rp1 = vec![0.0; C1 * S2];
        let mut cols2 = vec![0.0; C1 * 9 * S2];
        for i in 0..n {
            im2col(&v[i * S1..][..S1], 1, 28, 28, &mut cols1);
            let rz1_i = &mut rz1[i * C1 * S1..][..C1 * S1];
            matmul(C1, S1, 9, rz1_i, View::rows(&self.w1, 9), View::rows(&cols1, S1), false);
            let (d1, idx1) = (&b.d1[i * C1 * S2..][..C1 * S2], &b.idx1[i * C1 * S2..][..C1 * S2]);
            pool_r(d1, rz1_i, idx1, (C1, 28, 28), &mut rp1);
            im2col(&rp1, C1, 14, 14, &mut cols2);
            let rz2_i = &mut rz2[i * C2 * S2..][..C2 * S2];
            matmul(C2, S2, C1 * 9, rz2_i, View::rows(&self.w2, C1 * 9), View::rows(&cols2, S2), false);
            let (d2, idx2) = (&b.d2[i * FLAT..][..FLAT], &b.idx2[i * FLAT..][..FLAT]);
            pool_r(d2, rz2_i, idx2, (C2, 14, 14), &mut rp2[i * FLAT..][..FLAT]);
        }
        let mut rz3 = vec![0.0; n * HIDDEN];
        matmul(n, HIDDEN, FLAT, &mut rz3, View::rows(&rp2, FLAT), View::transposed(&self.fc1, FLAT), false);
        // fc2 is linear and gl constant, so only the nonlinearity's derivative moves at fc1.
        let rgz3: Vec<f32> = (0..n * HIDDEN)
            .map(|at| {
                let d = act.derivative_scalar(b.z3[at]);
                st.back.ga3[at] * act.second_derivative_from_first(d) * rz3[at]
            })
            .collect();
        let mut rgp2 = vec![0.0; n * FLAT];
        matmul(n, FLAT, HIDDEN, &mut rgp2, View::rows(&rgz3, HIDDEN), View::rows(&self.fc1, FLAT), false);
        let mut hv = vec![0.0; n * S1];
        let (mut gz2, mut rgz2) = (vec![0.0; C2 * S2], vec![0.0; C2 * S2]);
        let mut rgp1 = vec![0.0; C1 * S2];
        let (mut gz1, mut rgz1) = (vec![0.0; C1 * S1], vec![0.0; C1 * S1]);
        let mut gcols2 = vec![0.0; C1 * 9 * S2];
        let mut gcols1 = vec![0.0; 9 * S1];
        for i in 0..n {
            let (g, rg) = (&st.back.gp2[i * FLAT..][..FLAT], &rgp2[i * FLAT..][..FLAT]);
            let (d2, idx2) = (&b.d2[i * FLAT..][..FLAT], &b.idx2[i * FLAT..][..FLAT]);
            let rz2_i = &rz2[i * C2 * S2..][..C2 * S2];
            unpool_r(g, rg, idx2, d2, rz2_i, (C2, 14, 14), act, &mut gz2, &mut rgz2);
            matmul(
                C1 * 9,
                S2,
                C2,
                &mut gcols2,
                View::transposed(&self.w2, C1 * 9),
                View::rows(&rgz2, S2),
                false,
            );
            col2im(&gcols2, C1, 14, 14, &mut rgp1);
            let (d1, idx1) = (&b.d1[i * C1 * S2..][..C1 * S2], &b.idx1[i * C1 * S2..][..C1 * S2]);
            let rz1_i = &rz1[i * C1 * S1..][..C1 * S1];
            let gp1 = &st.back.gp1[i * C1 * S2..][..C1 * S2];
            unpool_r(gp1, &rgp1, idx1, d1, rz1_i, (C1, 28, 28), act, &mut gz1, &mut rgz1);
            matmul(9, S1, C1, &mut gcols1, View::transposed(&self.w1, 9), View::rows(&rgz1, S1), false);
            col2im(&gcols1, 1, 28, 28, &mut hv[i * S1..][..S1]);
        }
        hv
    }

    /// The gradients g of ⟨gl, logits⟩ for `n` images, then `then(g)` = v (all rows at
    /// once), then H·v, the forward and backward passes shared by both: (g, Hv), [n·784]
    /// each, or `then`'s error.
    pub(crate) fn gradient_then_hessian_vector<E>(
        &self,
        x: &[f32],
        gl: &[f32],
        n: usize,
        act: Activation,
        then: impl FnOnce(&[f32]) -> Result<Vec<f32>, E>,
    ) -> Result<(Vec<f32>, Vec<f32>), E> {
        let states: Vec<GradState> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|k| {
                let (start, len) = (k * BLOCK, BLOCK.min(n - k * BLOCK));
                self.gradient_state(
                    &x[start * S1..][..len * S1],
                    &gl[start * CLASSES..][..len * CLASSES],
                    len,
                    act,
                )
            })
            .collect();
        let g: Vec<f32> = states.iter().flat_map(|st| st.back.grad.iter().copied()).collect();
        let v = then(&g)?;
        assert_eq!(v.len(), n * S1, "kernel H·v: the vector must be shaped like the input");
        let hv: Vec<Vec<f32>> = states
            .par_iter()
            .enumerate()
            .map(|(k, st)| self.hessian_vector_from(st, &v[k * BLOCK * S1..][..st.block.n * S1], act))
            .collect();
        Ok((g, hv.concat()))
    }

    /// Runs `n` images `x` [n·784] through the forward pass and, when `grad_logits`
    /// [n·10] is given, the backward pass to `stop` with `rule`. `baseline` ([784] or
    /// [n·784]) is the reference input of the rescale rule.
    pub(crate) fn pass(
        &self,
        x: &[f32],
        n: usize,
        act: Activation,
        backward: Option<(&[f32], Rule, Stop)>,
        baseline: Option<&[f32]>,
    ) -> PassOut {
        // One baseline for every row: its forward pass once, shared by all blocks.
        let shared_base = baseline.filter(|b0| b0.len() == S1).map(|b0| self.forward_block(b0, 1, act));
        let blocks: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|k| {
                let (start, len) = (k * BLOCK, BLOCK.min(n - k * BLOCK));
                let block = self.forward_block(&x[start * S1..][..len * S1], len, act);
                let Some((gl, rule, stop)) = backward else {
                    return (block.logits, Vec::new(), Vec::new());
                };
                let per_row = baseline
                    .filter(|b0| b0.len() != S1)
                    .map(|b0| self.forward_block(&b0[start * S1..][..len * S1], len, act));
                let base = per_row.as_ref().or(shared_base.as_ref());
                let gl = &gl[start * CLASSES..][..len * CLASSES];
                let back = self.backward_block(&block, gl, act, rule, base, stop);
                (block.logits, back.grad, back.layer)
            })
            .collect();
        let mut out = PassOut { logits: Vec::new(), grad: Vec::new(), layer: Vec::new() };
        for (l, g, a) in blocks {
            out.logits.extend(l);
            out.grad.extend(g);
            out.layer.extend(a);
        }
        out
    }

    /// Logits [P·n, 10] of `n` images `x` [n·784] with each window (top, left) of `size`
    /// [h, w] in turn set to `fill`; row k·n + i is image i under window k. Every window must
    /// fit the 28×28 image.
    ///
    /// Occlusion changes a small patch, so most of each pass equals the clean image's: per
    /// image the clean pass runs once, and per window only the conv1 outputs that read the
    /// window, the pool-1 windows over them, the conv2 outputs that read those and the pool-2
    /// windows over these are recomputed (from 4×4 pixels: 6×6 of conv1's 28×28 outputs and at
    /// most 6×6 of conv2's 14×14), in working copies restored after each window; fc1 and fc2
    /// then run as GEMMs over all of an image's windows. With 4×4 windows at stride 2 this
    /// does about a quarter of the arithmetic of the occluded copies' full passes. One rayon
    /// task per image, so the result does not depend on the number of threads.
    pub(crate) fn occluded_logits(
        &self,
        x: &[f32],
        n: usize,
        windows: &[(usize, usize)],
        size: [usize; 2],
        fill: f32,
        act: Activation,
    ) -> Vec<f32> {
        let p = windows.len();
        let per_image: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .map(|i| self.occluded_image(&x[i * S1..][..S1], windows, size, fill, act))
            .collect();
        let mut out = vec![0.0; p * n * CLASSES];
        for (i, logits) in per_image.iter().enumerate() {
            for (k, row) in logits.chunks_exact(CLASSES).enumerate() {
                out[(k * n + i) * CLASSES..][..CLASSES].copy_from_slice(row);
            }
        }
        out
    }

    /// [`Kernels::occluded_logits`] for one image: [P, 10].
    fn occluded_image(
        &self,
        x: &[f32],
        windows: &[(usize, usize)],
        [wh, ww]: [usize; 2],
        fill: f32,
        act: Activation,
    ) -> Vec<f32> {
        let clean = self.forward_block(x, 1, act);
        let mut p1 = vec![0.0; C1 * S2];
        let (mut idx, mut deriv) = (vec![0; C1 * S2], vec![0.0; C1 * S2]);
        pool(&clean.z1, C1, 28, 28, act, &mut p1, &mut idx, &mut deriv);
        // Working copies: each window writes its patch, then restores the clean values.
        let (mut xw, mut z1, mut p1w, mut z2) = (x.to_vec(), clean.z1.clone(), p1.clone(), clean.z2.clone());
        let mut scratch = Vec::new();
        let mut p2 = Vec::with_capacity(windows.len() * FLAT);
        for &(r0, c0) in windows {
            let (wr, wc) = (r0..r0 + wh, c0..c0 + ww);
            for y in wr.clone() {
                xw[y * 28..][wc.clone()].fill(fill);
            }
            let (r1, c1) = (conv_reach(&wr, 28), conv_reach(&wc, 28));
            conv_region(&xw, (1, 28, 28), &self.w1, &self.b1, (&r1, &c1), &mut scratch, &mut z1);
            let (q1r, q1c) = (pool_reach(&r1), pool_reach(&c1));
            pool_region(&z1, (C1, 28, 28), act, (&q1r, &q1c), &mut p1w);
            let (r2, c2) = (conv_reach(&q1r, 14), conv_reach(&q1c, 14));
            conv_region(&p1w, (C1, 14, 14), &self.w2, &self.b2, (&r2, &c2), &mut scratch, &mut z2);
            let start = p2.len();
            p2.extend_from_slice(&clean.p2);
            pool_region(&z2, (C2, 14, 14), act, (&pool_reach(&r2), &pool_reach(&c2)), &mut p2[start..]);
            // Restore the clean values the window changed.
            for y in wr {
                xw[y * 28..][wc.clone()].copy_from_slice(&x[y * 28..][wc.clone()]);
            }
            restore(&mut z1, &clean.z1, (C1, 28, 28), (&r1, &c1));
            restore(&mut p1w, &p1, (C1, 14, 14), (&q1r, &q1c));
            restore(&mut z2, &clean.z2, (C2, 14, 14), (&r2, &c2));
        }
        self.dense_head(&p2, windows.len(), act).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_softplus_matches_the_library_functions() {
        // A sweep over the range pooling sees, and the far tails: softplus and sigmoid to a
        // few float32 ulps of the libm forms (relative 1e-6, absolute 1e-12 near zero).
        for beta in [1.0f32, 10.0, 100.0] {
            let zs: Vec<f32> =
                (-20_000..=20_000).map(|i| i as f32 * 1e-3).chain([-1e4, -90.0, 90.0, 1e4]).collect();
            let (mut sp, mut d) = (zs.clone(), vec![0.0; zs.len()]);
            softplus_sweep(beta, &mut sp, &mut d);
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
