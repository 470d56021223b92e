//! Convolutions on channel-major blocks: x [C, n, H, W] → y [O, n, OH, OW].
//!
//! With the images of a block side by side in each channel row, a convolution is a GEMM per
//! group over all of them: y_g [O/G, n·OH·OW] = W_g [O/G, (C/G)·kh·kw] · cols_g, where
//! cols (im2col) holds, for input channel c and tap (ky, kx), the input value each output
//! position reads (row (c·kh + ky)·kw + kx, matching W's layout; zero in the padding). The
//! columns are built and multiplied a tile of output rows at a time, each tile's patches
//! within a core's L2 cache, so that the patch matrix (kh·kw times the input) never goes out
//! to memory; tiles do not change a result (each output is the same dot product). A 1×1,
//! stride-1, unpadded convolution reads x directly, with no copy. A depthwise convolution (one
//! input channel per group) skips the GEMM: per channel and tap it adds w·x over the output
//! rows. The vector–Jacobian product is the transposed product W_gᵀ·g followed by the
//! adjoint of im2col (col2im, summing every patch entry back onto its pixel); the tangent is
//! the forward product without the bias.

use super::gemm::{matmul, matmul_into, View};
use std::ops::Range;

/// Patch values per tile at most (1 MiB of f32: a core's L2 cache here).
const TILE_FLOATS: usize = 1 << 18;

/// The output columns (ox) whose input column ox·s + off lies in 0..len.
pub(crate) fn valid(off: isize, s: usize, len: usize, out: usize) -> Range<usize> {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    let hi = ((len as isize - off) + s - 1).div_euclid(s).max(0);
    (lo.max(0) as usize).min(out)..(hi as usize).min(out)
}

/// The first `len` values of `scratch` (grown when short, never shrunk), left as they are:
/// im2col and the GEMM write every entry they are read at, so a tile's patches need no zero
/// fill but the shifted gather's (see [`ConvKernel::im2col`]).
fn patch_buffer(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    &mut scratch[..len]
}

/// Output rows and columns one register block of [`correlate_s1`] covers (4 × 8 sums: four
/// independent accumulator chains of one AVX2 vector each).
const DW_ROWS: usize = 4;
const DW_LANES: usize = 8;

/// The zero-padded plane of `src` ([h, w], placed at (top, left)) split into its s² phases
/// (row phase a, column phase b: the padded plane's rows a, a + s, ... and columns b, b + s,
/// ...), each [qh, qw] and clipped to it, one below the other in `dst` (phase a·s + b at row
/// (a·s + b)·qh). With s = 1 the one phase is the padded plane itself. A stride-s correlation
/// is then a stride-1 one over the phases.
fn phase_planes(
    src: &[f32],
    (h, w): (usize, usize),
    (top, left): (usize, usize),
    s: usize,
    (qh, qw): (usize, usize),
    dst: &mut Vec<f32>,
) {
    // Every element is written below (the padding as zeros), so the buffer is not cleared.
    dst.resize(s * s * qh * qw, 0.0);
    for a in 0..s {
        for b in 0..s {
            let phase = &mut dst[(a * s + b) * qh * qw..][..qh * qw];
            // Padded column s·j + b is source column s·j + b − left: the columns j0..j1 of the
            // phase hold source columns c0, c0 + s, ...
            let j0 = left.saturating_sub(b).div_ceil(s);
            let c0 = s * j0 + b - left;
            let j1 = qw.min(j0 + w.saturating_sub(c0).div_ceil(s));
            for (i, row) in phase.chunks_exact_mut(qw).enumerate() {
                // Padded row s·i + a is source row s·i + a − top.
                let Some(r) = (s * i + a).checked_sub(top).filter(|&r| r < h) else {
                    row.fill(0.0);
                    continue;
                };
                if j0 >= j1 {
                    row.fill(0.0);
                    continue;
                }
                row[..j0].fill(0.0);
                row[j1..].fill(0.0);
                let src_row = &src[r * w + c0..(r + 1) * w];
                if s == 1 {
                    row[j0..j1].copy_from_slice(&src_row[..j1 - j0]);
                } else {
                    row[j0..j1].iter_mut().zip(src_row.iter().step_by(s)).for_each(|(v, &x)| *v = x);
                }
            }
        }
    }
}

/// out[y][x] += Σ over `taps` (weight, dy, dx), in their order, of weight·padded[y + dy][x + dx],
/// for the [oh, ow] plane `out`; `padded` has row length `pw` and covers ⌈oh/4⌉·4 + max dy rows
/// and ⌈ow/8⌉·8 + max dx columns (a padded plane, or the phase planes of a strided one). Each
/// output's sum runs in tap order from its starting value with a separate multiply and add, as
/// the direct loop's does, so the two give the same bits; the blocks past the plane's edge
/// compute on zeros and are not stored.
fn correlate_s1(
    taps: &[(f32, usize, usize)],
    padded: &[f32],
    pw: usize,
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { correlate_s1_avx2(taps, padded, pw, out, oh, ow) };
    }
    for y0 in (0..oh).step_by(DW_ROWS) {
        for x0 in (0..ow).step_by(DW_LANES) {
            let mut acc = [[0.0f32; DW_LANES]; DW_ROWS];
            block_io(out, (oh, ow), (y0, x0), &mut acc, false);
            for &(wt, dy, dx) in taps {
                let at = (y0 + dy) * pw + x0 + dx;
                for (a, row) in acc.iter_mut().zip(padded[at..].chunks(pw)) {
                    for (s, &v) in a.iter_mut().zip(&row[..DW_LANES]) {
                        *s += wt * v;
                    }
                }
            }
            block_io(out, (oh, ow), (y0, x0), &mut acc, true);
        }
    }
}

/// Loads the register block at (y0, x0) of the [oh, ow] plane `out` (or, with `store`, stores
/// it back): the rows below `oh` and the columns below `ow`.
fn block_io(
    out: &mut [f32],
    (oh, ow): (usize, usize),
    (y0, x0): (usize, usize),
    acc: &mut [[f32; DW_LANES]; DW_ROWS],
    store: bool,
) {
    let lanes = DW_LANES.min(ow - x0);
    for (r, a) in acc.iter_mut().enumerate().take(oh - y0) {
        let o = &mut out[(y0 + r) * ow + x0..][..lanes];
        if store {
            o.copy_from_slice(&a[..lanes]);
        } else {
            a[..lanes].copy_from_slice(o);
        }
    }
}

/// [`correlate_s1`] in AVX2 registers: four rows × eight columns of sums, one vector per row
/// (LLVM keeps the portable loop's accumulators in memory, scalar).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn correlate_s1_avx2(
    taps: &[(f32, usize, usize)],
    padded: &[f32],
    pw: usize,
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps,
    };
    // Eight values from `v` (at least eight long), as one vector.
    let load = |v: &[f32]| -> __m256 {
        let v = &v[..DW_LANES];
        // SAFETY: `v` holds DW_LANES = 8 floats, what one unaligned 256-bit load reads.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    };
    for y0 in (0..oh).step_by(DW_ROWS) {
        for x0 in (0..ow).step_by(DW_LANES) {
            let mut start = [[0.0f32; DW_LANES]; DW_ROWS];
            block_io(out, (oh, ow), (y0, x0), &mut start, false);
            let mut acc = start.map(|row| load(&row));
            for &(wt, dy, dx) in taps {
                let w = _mm256_set1_ps(wt);
                let at = (y0 + dy) * pw + x0 + dx;
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(w, load(&padded[at + r * pw..])));
                }
            }
            for (row, a) in start.iter_mut().zip(acc) {
                // SAFETY: `row` holds DW_LANES = 8 floats, what one 256-bit store writes.
                unsafe { _mm256_storeu_ps(row.as_mut_ptr(), a) };
            }
            block_io(out, (oh, ow), (y0, x0), &mut start, true);
        }
    }
}

/// The two directions of [`ConvKernel::shifted`]: fill the patches from the input, or sum
/// them back onto it.
enum Shift<'c> {
    Gather { x: &'c [f32], cols: &'c mut [f32] },
    Scatter { cols: &'c mut [f32], x: &'c mut [f32] },
}

/// One convolution's geometry and weights, flattened for the kernels.
#[derive(Debug, Clone)]
pub(crate) struct ConvKernel {
    /// W [O, C/G·kh·kw], row-major.
    pub w: Vec<f32>,
    /// Bias [O] (zeros when the layer has none).
    pub b: Vec<f32>,
    pub o: usize,
    pub c: usize,
    pub groups: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
}

/// Input and output plane sizes (H, W, OH, OW) and block size n.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvKernel {
    fn taps(&self) -> usize {
        self.k[0] * self.k[1]
    }

    fn pointwise(&self) -> bool {
        self.k == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0]
    }

    fn depthwise(&self) -> bool {
        self.groups == self.c && self.o == self.c
    }

    /// The input offset of tap (ky, kx) along each axis.
    fn offsets(&self, ky: usize, kx: usize) -> (isize, isize) {
        (
            (ky * self.dil[0]) as isize - self.pad[0] as isize,
            (kx * self.dil[1]) as isize - self.pad[1] as isize,
        )
    }

    /// Fills `cols` [cg·kk, rows.len()·OW] from input channels `c0..c0+cg` of x [C, n, H, W]
    /// for the output rows `rows` (flattened i·OH + oy).
    fn im2col(&self, x: &[f32], c0: usize, cg: usize, p: Planes, rows: Range<usize>, cols: &mut [f32]) {
        if self.same_size(p) {
            // The shifted copies leave the rows above and below the image alone: zero.
            cols.fill(0.0);
            return self.shifted(c0, cg, p, rows, Shift::Gather { x, cols });
        }
        if self.stride[1] > 1 {
            return self.im2col_strided(x, c0, cg, p, rows, cols);
        }
        let (kh, kw) = (self.k[0], self.k[1]);
        let (hw, len) = (p.h * p.w, rows.len() * p.ow);
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut cols[((ci * kh + ky) * kw + kx) * len..][..len];
                    let (oy_off, ox_off) = self.offsets(ky, kx);
                    let xs = valid(ox_off, self.stride[1], p.w, p.ow);
                    for (t, r) in rows.clone().enumerate() {
                        let (i, oy) = (r / p.oh, r % p.oh);
                        let plane = &x[((c0 + ci) * p.n + i) * hw..][..hw];
                        let dst = &mut row[t * p.ow..][..p.ow];
                        let iy = (oy * self.stride[0]) as isize + oy_off;
                        if iy < 0 || iy >= p.h as isize || xs.is_empty() {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * p.w..][..p.w];
                        dst[..xs.start].fill(0.0);
                        dst[xs.end..].fill(0.0);
                        let ix0 = (xs.start * self.stride[1]) as isize + ox_off;
                        if self.stride[1] == 1 {
                            dst[xs.clone()].copy_from_slice(&src[ix0 as usize..][..xs.len()]);
                        } else {
                            for (j, ox) in xs.clone().enumerate() {
                                dst[ox] = src[ix0 as usize + j * self.stride[1]];
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`ConvKernel::im2col`] for a column stride s > 1: the input rows a tile reads are
    /// first split into their s column phases (columns q, q + s, q + 2s, … one after the
    /// other), once per plane and tile, so that each tap copies one contiguous run per output
    /// row where it would gather every s-th value (ResNet's 7×7 stride-2 stem, the stride-2
    /// 3×3 and 1×1 convolutions of the downsampling blocks). The same values land in the same
    /// places.
    fn im2col_strided(
        &self,
        x: &[f32],
        c0: usize,
        cg: usize,
        p: Planes,
        rows: Range<usize>,
        cols: &mut [f32],
    ) {
        let (kh, kw, s) = (self.k[0], self.k[1], self.stride[1]);
        let (hw, len, qw) = (p.h * p.w, rows.len() * p.ow, p.w.div_ceil(s));
        let mut phases = Vec::new();
        let mut r = rows.start;
        while r < rows.end {
            // One image's output rows within the tile, and the input rows they read.
            let (i, oy0) = (r / p.oh, r % p.oh);
            let oy1 = (oy0 + rows.end - r).min(p.oh);
            let first = (oy0 * self.stride[0]) as isize - self.pad[0] as isize;
            let last = ((oy1 - 1) * self.stride[0] + (kh - 1) * self.dil[0]) as isize - self.pad[0] as isize;
            let (lo, hi) = (first.max(0) as usize, ((last + 1).max(0) as usize).min(p.h));
            let span = hi.saturating_sub(lo);
            phases.clear();
            phases.resize(s * span * qw, 0.0f32);
            for ci in 0..cg {
                let plane = &x[((c0 + ci) * p.n + i) * hw..][..hw];
                for y in lo..hi {
                    let line = &plane[y * p.w..][..p.w];
                    for q in 0..s {
                        let dst = &mut phases[(q * span + y - lo) * qw..][..qw];
                        for (d, v) in dst.iter_mut().zip(line.iter().skip(q).step_by(s)) {
                            *d = *v;
                        }
                    }
                }
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut cols[((ci * kh + ky) * kw + kx) * len..][..len];
                        let (oy_off, ox_off) = self.offsets(ky, kx);
                        let xs = valid(ox_off, s, p.w, p.ow);
                        // Output ox reads input column ox·s + ox_off: phase q, entry j0 + ox − xs.start.
                        let ix0 = ((xs.start * s) as isize + ox_off).max(0) as usize;
                        let (q, j0) = (ix0 % s, ix0 / s);
                        for oy in oy0..oy1 {
                            let dst = &mut row[(r - rows.start + oy - oy0) * p.ow..][..p.ow];
                            let iy = (oy * self.stride[0]) as isize + oy_off;
                            if iy < 0 || iy >= p.h as isize || xs.is_empty() {
                                dst.fill(0.0);
                                continue;
                            }
                            dst[..xs.start].fill(0.0);
                            dst[xs.end..].fill(0.0);
                            let src = &phases[(q * span + iy as usize - lo) * qw + j0..][..xs.len()];
                            dst[xs.clone()].copy_from_slice(src);
                        }
                    }
                }
            }
            r += oy1 - oy0;
        }
    }

    /// The adjoint of [`ConvKernel::im2col`]: adds `cols` back onto channels `c0..c0+cg` of
    /// `x`.
    fn col2im(&self, cols: &mut [f32], c0: usize, cg: usize, p: Planes, rows: Range<usize>, x: &mut [f32]) {
        if self.same_size(p) {
            return self.shifted(c0, cg, p, rows, Shift::Scatter { cols, x });
        }
        let (kh, kw) = (self.k[0], self.k[1]);
        let (hw, len) = (p.h * p.w, rows.len() * p.ow);
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &cols[((ci * kh + ky) * kw + kx) * len..][..len];
                    let (oy_off, ox_off) = self.offsets(ky, kx);
                    let xs = valid(ox_off, self.stride[1], p.w, p.ow);
                    if xs.is_empty() {
                        continue;
                    }
                    for (t, r) in rows.clone().enumerate() {
                        let (i, oy) = (r / p.oh, r % p.oh);
                        let iy = (oy * self.stride[0]) as isize + oy_off;
                        if iy < 0 || iy >= p.h as isize {
                            continue;
                        }
                        let plane = &mut x[((c0 + ci) * p.n + i) * hw..][..hw];
                        let src = &row[t * p.ow..][..p.ow];
                        let dst = &mut plane[iy as usize * p.w..][..p.w];
                        let ix0 = ((xs.start * self.stride[1]) as isize + ox_off) as usize;
                        if self.stride[1] == 1 {
                            // Contiguous on both sides: a loop the compiler vectorises.
                            for (d, s) in dst[ix0..ix0 + xs.len()].iter_mut().zip(&src[xs.clone()]) {
                                *d += s;
                            }
                        } else {
                            for (j, ox) in xs.clone().enumerate() {
                                dst[ix0 + j * self.stride[1]] += src[ox];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether every tap reads the output plane shifted: stride 1 and the output as large as
    /// the input (a "same" convolution: 3×3 with padding 1, 5×5 with 2, ...).
    fn same_size(&self, p: Planes) -> bool {
        self.stride == [1, 1] && (p.oh, p.ow) == (p.h, p.w)
    }

    /// [`ConvKernel::im2col`] (`Gather`) and [`ConvKernel::col2im`] (`Scatter`) for a
    /// [`ConvKernel::same_size`] convolution, whose tap (ky, kx) reads output position t of a
    /// plane at input position t + δ, δ = oy_off·W + ox_off: over the rows a tap reads inside
    /// the image that is one contiguous copy (or sum) of whole rows, clipped at the plane's
    /// ends, after which the columns the shift carried across a row edge are set to zero
    /// (gather) or dropped before summing (scatter). The patch buffer of a gather must be
    /// zeroed by the caller (rows above and below the image stay zero).
    fn shifted(&self, c0: usize, cg: usize, p: Planes, rows: Range<usize>, mut op: Shift) {
        let (kh, kw, w) = (self.k[0], self.k[1], p.w);
        let (hw, len) = (p.h * w, rows.len() * w);
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (oy_off, ox_off) = self.offsets(ky, kx);
                    // The columns whose shifted read leaves the row.
                    let bad = valid(ox_off, 1, w, w);
                    let tap = ((ci * kh + ky) * kw + kx) * len;
                    let mut r = rows.start;
                    while r < rows.end {
                        // One image's rows within the tile, then those this tap reads inside it.
                        let (i, oy0) = (r / p.oh, r % p.oh);
                        let oy1 = (oy0 + rows.end - r).min(p.oh);
                        let lo = (oy0 as isize).max(-oy_off).min(oy1 as isize) as usize;
                        let hi = (oy1 as isize).min(p.h as isize - oy_off).max(lo as isize) as usize;
                        if hi == lo {
                            r += oy1 - oy0;
                            continue;
                        }
                        let plane = ((c0 + ci) * p.n + i) * hw;
                        // Patch entries (from `at`) and input values (from `from`, relative to
                        // the plane) of the rows lo..hi, clipped to the plane.
                        let at = tap + (r - rows.start + lo - oy0) * w;
                        let from = (lo as isize + oy_off) * w as isize + ox_off;
                        let skip = (-from).max(0) as usize;
                        let n =
                            ((hi - lo) * w).saturating_sub(skip).min((hw as isize - from.max(0)) as usize);
                        let src = plane + (from + skip as isize) as usize;
                        let edges = |c: &mut [f32]| {
                            for col in (0..bad.start).chain(bad.end..w) {
                                for row in lo..hi {
                                    c[at + (row - lo) * w + col] = 0.0;
                                }
                            }
                        };
                        match &mut op {
                            Shift::Gather { x, cols: c } => {
                                c[at + skip..][..n].copy_from_slice(&x[src..][..n]);
                                edges(c);
                            }
                            Shift::Scatter { cols: c, x } => {
                                edges(c);
                                for (d, v) in x[src..][..n].iter_mut().zip(&c[at + skip..][..n]) {
                                    *d += v;
                                }
                            }
                        }
                        r += oy1 - oy0;
                    }
                }
            }
        }
    }

    /// The patch tiles of a block: ranges of output rows (image i, row oy, flattened
    /// i·OH + oy) whose patches, [cg·kk, rows·OW], stay within [`TILE_FLOATS`] (the L2
    /// cache), so that writing them and the GEMM's reading them do not go out to memory.
    /// A tile holds whole images when one fits, or else splits every image alike into even
    /// parts. Either way an image's tiles do not depend on the block it is in, so the
    /// vector–Jacobian product sums each pixel's patch entries in the same order whatever the
    /// block (the forward pass does not depend on tiling at all: each output is the same dot
    /// product); results stay independent of the batch size.
    fn tiles(&self, cg: usize, p: Planes) -> Vec<Range<usize>> {
        let most = (TILE_FLOATS / (cg * self.taps() * p.ow).max(1)).max(1);
        if most >= p.oh {
            let per = (most / p.oh).min(p.n).max(1);
            let per = p.n.div_ceil(p.n.div_ceil(per));
            (0..p.n).step_by(per).map(|i| i * p.oh..(i + per).min(p.n) * p.oh).collect()
        } else {
            let step = p.oh.div_ceil(p.oh.div_ceil(most));
            (0..p.n)
                .flat_map(|i| {
                    (0..p.oh).step_by(step).map(move |r| i * p.oh + r..i * p.oh + (r + step).min(p.oh))
                })
                .collect()
        }
    }

    /// y [O, n, OH, OW] = conv(x) (+ bias when `bias`); `scratch` is reused for the patches.
    pub fn forward(&self, x: &[f32], p: Planes, bias: bool, scratch: &mut Vec<f32>) -> Vec<f32> {
        let ohw = p.n * p.oh * p.ow;
        // Each row starts at its bias (or zero); the products accumulate onto it.
        let mut y = Vec::with_capacity(self.o * ohw);
        for &b in &self.b {
            y.extend(std::iter::repeat_n(if bias { b } else { 0.0 }, ohw));
        }
        if self.depthwise() {
            self.depthwise_forward(x, p, &mut y);
            return y;
        }
        let (cg, og, kk) = (self.c / self.groups, self.o / self.groups, self.taps());
        for gi in 0..self.groups {
            let w = &self.w[gi * og * cg * kk..][..og * cg * kk];
            let out = &mut y[gi * og * ohw..][..og * ohw];
            if self.pointwise() {
                let xg = &x[gi * cg * ohw..][..cg * ohw];
                matmul(og, ohw, cg, out, View::rows(w, cg), View::rows(xg, ohw), true);
                continue;
            }
            for rows in self.tiles(cg, p) {
                let (at, len) = (rows.start * p.ow, rows.len() * p.ow);
                let patches = patch_buffer(scratch, cg * kk * len);
                self.im2col(x, gi * cg, cg, p, rows, patches);
                let (a, b) = (View::rows(w, cg * kk), View::rows(patches, len));
                matmul_into(og, len, cg * kk, &mut out[at..], ohw, a, b, true);
            }
        }
        y
    }

    /// g_x [C, n, H, W] from g_y [O, n, OH, OW].
    pub fn vjp(&self, g: &[f32], p: Planes, scratch: &mut Vec<f32>) -> Vec<f32> {
        let (hw, ohw) = (p.n * p.h * p.w, p.n * p.oh * p.ow);
        let mut gx = vec![0.0f32; self.c * hw];
        if self.depthwise() {
            self.depthwise_vjp(g, p, &mut gx);
            return gx;
        }
        let (cg, og, kk) = (self.c / self.groups, self.o / self.groups, self.taps());
        for gi in 0..self.groups {
            let w = &self.w[gi * og * cg * kk..][..og * cg * kk];
            let gg = &g[gi * og * ohw..][..og * ohw];
            if self.pointwise() {
                let out = &mut gx[gi * cg * hw..][..cg * hw];
                matmul(cg, ohw, og, out, View::transposed(w, cg), View::rows(gg, ohw), false);
                continue;
            }
            for rows in self.tiles(cg, p) {
                let (at, len) = (rows.start * p.ow, rows.len() * p.ow);
                let patches = patch_buffer(scratch, cg * kk * len);
                let (a, b) = (View::transposed(w, cg * kk), View::strided(&gg[at..], ohw));
                matmul(cg * kk, len, og, patches, a, b, false);
                self.col2im(patches, gi * cg, cg, p, rows, &mut gx);
            }
        }
        gx
    }

    /// The stride of the register-blocked depthwise kernel, when it applies: dilation 1,
    /// padding within the kernel (as every "same" depthwise convolution: MobileNet's 3×3 and
    /// 5×5, ConvNeXt's 7×7), stride 1, or, for the forward pass, 2 in both directions.
    fn depthwise_blocked(&self, vjp: bool) -> Option<usize> {
        let s = self.stride[0];
        let fits = self.dil == [1, 1] && self.pad[0] < self.k[0] && self.pad[1] < self.k[1];
        (fits && self.stride[1] == s && (s == 1 || (s == 2 && !vjp))).then_some(s)
    }

    /// The taps of a blocked depthwise kernel of stride `s` in summation order (ky, then kx),
    /// each with its weight and its offset into the phase planes of [`phase_planes`] (`qh`
    /// rows each): the forward pass reads phase (ky mod s, kx mod s) at (ky div s, kx div s);
    /// the vector–Jacobian product (stride 1) reads the gradient padded by k − 1 − pad at
    /// (kh − 1 − ky, kw − 1 − kx).
    fn blocked_taps(&self, c: usize, s: usize, qh: usize, vjp: bool) -> Vec<(f32, usize, usize)> {
        let (kh, kw) = (self.k[0], self.k[1]);
        let w = &self.w[c * kh * kw..][..kh * kw];
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                let (dy, dx) = if vjp {
                    (kh - 1 - ky, kw - 1 - kx)
                } else {
                    ((ky % s * s + kx % s) * qh + ky / s, kx / s)
                };
                taps.push((w[ky * kw + kx], dy, dx));
            }
        }
        taps
    }

    /// The blocked depthwise convolution of stride `s` (forward, or its stride-1
    /// vector–Jacobian product with `vjp`) of every plane of `src` ([C, n, sh, sw]) onto `dst`
    /// ([C, n, dh, dw], starting values kept): each plane split once into zero-padded phase
    /// planes, then [`correlate_s1`].
    #[allow(clippy::too_many_arguments)]
    fn depthwise_blocked_planes(
        &self,
        src: &[f32],
        (sh, sw): (usize, usize),
        dst: &mut [f32],
        (dh, dw): (usize, usize),
        n: usize,
        s: usize,
        vjp: bool,
    ) {
        let (kh, kw) = (self.k[0], self.k[1]);
        // Where the source sits in the padded plane; the phase planes cover every output block.
        let (top, left) =
            if vjp { (kh - 1 - self.pad[0], kw - 1 - self.pad[1]) } else { (self.pad[0], self.pad[1]) };
        let qh = dh.next_multiple_of(DW_ROWS) + (kh - 1) / s;
        let qw = dw.next_multiple_of(DW_LANES) + (kw - 1) / s;
        let mut planes = Vec::new();
        for c in 0..self.c {
            let taps = self.blocked_taps(c, s, qh, vjp);
            for i in 0..n {
                let plane = &src[(c * n + i) * sh * sw..][..sh * sw];
                phase_planes(plane, (sh, sw), (top, left), s, (qh, qw), &mut planes);
                correlate_s1(&taps, &planes, qw, &mut dst[(c * n + i) * dh * dw..][..dh * dw], dh, dw);
            }
        }
    }

    fn depthwise_forward(&self, x: &[f32], p: Planes, y: &mut [f32]) {
        if let Some(s) = self.depthwise_blocked(false) {
            self.depthwise_blocked_planes(x, (p.h, p.w), y, (p.oh, p.ow), p.n, s, false);
        } else {
            self.depthwise_direct_forward(x, p, y);
        }
    }

    fn depthwise_vjp(&self, g: &[f32], p: Planes, gx: &mut [f32]) {
        if self.depthwise_blocked(true).is_some() {
            self.depthwise_blocked_planes(g, (p.oh, p.ow), gx, (p.h, p.w), p.n, 1, true);
        } else {
            self.depthwise_direct_vjp(g, p, gx);
        }
    }

    /// The depthwise convolution as a direct loop: per channel and tap, w·x added over the
    /// output rows (any stride and dilation).
    fn depthwise_direct_forward(&self, x: &[f32], p: Planes, y: &mut [f32]) {
        let (kh, kw) = (self.k[0], self.k[1]);
        let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
        for c in 0..self.c {
            let w = &self.w[c * kh * kw..][..kh * kw];
            for i in 0..p.n {
                let src = &x[(c * p.n + i) * hw..][..hw];
                let dst = &mut y[(c * p.n + i) * ohw..][..ohw];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wt = w[ky * kw + kx];
                        let (oy_off, ox_off) = self.offsets(ky, kx);
                        let xs = valid(ox_off, self.stride[1], p.w, p.ow);
                        for oy in 0..p.oh {
                            let iy = (oy * self.stride[0]) as isize + oy_off;
                            if iy < 0 || iy >= p.h as isize || xs.is_empty() {
                                continue;
                            }
                            let row = &src[iy as usize * p.w..][..p.w];
                            let out = &mut dst[oy * p.ow..][..p.ow];
                            let ix0 = ((xs.start * self.stride[1]) as isize + ox_off) as usize;
                            if self.stride[1] == 1 {
                                for (o, &v) in out[xs.clone()].iter_mut().zip(&row[ix0..]) {
                                    *o += wt * v;
                                }
                            } else {
                                for (j, ox) in xs.clone().enumerate() {
                                    out[ox] += wt * row[ix0 + j * self.stride[1]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`ConvKernel::depthwise_direct_forward`]'s vector–Jacobian product.
    fn depthwise_direct_vjp(&self, g: &[f32], p: Planes, gx: &mut [f32]) {
        let (kh, kw) = (self.k[0], self.k[1]);
        let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
        for c in 0..self.c {
            let w = &self.w[c * kh * kw..][..kh * kw];
            for i in 0..p.n {
                let src = &g[(c * p.n + i) * ohw..][..ohw];
                let dst = &mut gx[(c * p.n + i) * hw..][..hw];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wt = w[ky * kw + kx];
                        let (oy_off, ox_off) = self.offsets(ky, kx);
                        let xs = valid(ox_off, self.stride[1], p.w, p.ow);
                        for oy in 0..p.oh {
                            let iy = (oy * self.stride[0]) as isize + oy_off;
                            if iy < 0 || iy >= p.h as isize || xs.is_empty() {
                                continue;
                            }
                            let row = &mut dst[iy as usize * p.w..][..p.w];
                            let gr = &src[oy * p.ow..][..p.ow];
                            let ix0 = ((xs.start * self.stride[1]) as isize + ox_off) as usize;
                            if self.stride[1] == 1 {
                                for (d, g) in row[ix0..ix0 + xs.len()].iter_mut().zip(&gr[xs.clone()]) {
                                    *d += wt * g;
                                }
                            } else {
                                for (j, ox) in xs.clone().enumerate() {
                                    row[ix0 + j * self.stride[1]] += wt * gr[ox];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::Conv;
    use candle_core::{Device, Tensor};

    /// Direct reference: y[o,i,oy,ox] = b[o] + Σ w[o,c',ky,kx]·x[c,i,oy·s+ky·d−p, ...].
    fn reference(k: &ConvKernel, x: &[f32], p: Planes) -> Vec<f32> {
        let (cg, og) = (k.c / k.groups, k.o / k.groups);
        let mut y = vec![0.0; k.o * p.n * p.oh * p.ow];
        for o in 0..k.o {
            let gi = o / og;
            for i in 0..p.n {
                for oy in 0..p.oh {
                    for ox in 0..p.ow {
                        let mut s = k.b[o];
                        for ci in 0..cg {
                            let c = gi * cg + ci;
                            for ky in 0..k.k[0] {
                                for kx in 0..k.k[1] {
                                    let iy = (oy * k.stride[0] + ky * k.dil[0]) as isize - k.pad[0] as isize;
                                    let ix = (ox * k.stride[1] + kx * k.dil[1]) as isize - k.pad[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < p.h && (ix as usize) < p.w {
                                        let xv = x[((c * p.n + i) * p.h + iy as usize) * p.w + ix as usize];
                                        s += k.w[((o * cg + ci) * k.k[0] + ky) * k.k[1] + kx] * xv;
                                    }
                                }
                            }
                        }
                        y[((o * p.n + i) * p.oh + oy) * p.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn every_geometry_equals_the_direct_sum_and_its_adjoint() {
        let dev = Device::Cpu;
        // (C, O, groups, k, stride, pad, dilation): plain, strided, 1×1, grouped, depthwise,
        // dilated, rectangular.
        let cases = [
            (3, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1]),
            (2, 3, 1, [3, 3], [2, 2], [1, 1], [1, 1]),
            (4, 5, 1, [1, 1], [1, 1], [0, 0], [1, 1]),
            (4, 6, 2, [3, 3], [1, 2], [0, 1], [1, 1]),
            (3, 3, 3, [3, 3], [2, 2], [1, 1], [1, 1]),
            (2, 2, 1, [3, 3], [1, 1], [2, 2], [2, 2]),
            (2, 3, 1, [1, 3], [1, 1], [0, 1], [1, 1]),
            // Column strides above 1 (split into phases): a 7×7 stem, a 1×1 downsampling, a
            // dilated stride 3, a row stride different from the column stride.
            (3, 4, 1, [7, 7], [2, 2], [3, 3], [1, 1]),
            (4, 3, 1, [1, 1], [2, 2], [0, 0], [1, 1]),
            (2, 3, 1, [3, 3], [3, 3], [1, 1], [2, 2]),
            (2, 3, 1, [2, 3], [3, 2], [1, 0], [1, 1]),
            (3, 16, 1, [3, 3], [1, 1], [1, 1], [1, 1]),
            (4, 32, 2, [3, 3], [2, 2], [1, 1], [1, 1]),
        ];
        for (c, o, groups, k, stride, pad, dil) in cases {
            let w = Tensor::randn(0f32, 1f32, (o, c / groups, k[0], k[1]), &dev).unwrap();
            let b = Tensor::randn(0f32, 1f32, o, &dev).unwrap();
            let conv = Conv {
                weight: w,
                bias: Some(b),
                stride,
                padding: [pad[0], pad[1], pad[0], pad[1]],
                dilation: dil,
                groups,
            };
            let kern = conv.kernel().unwrap();
            let (h, wd, n) = (7, 6, 2);
            let oh = (h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) / stride[0] + 1;
            let ow = (wd + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) / stride[1] + 1;
            let p = Planes { n, h, w: wd, oh, ow };
            let x = Tensor::randn(0f32, 1f32, c * n * h * wd, &dev).unwrap().to_vec1::<f32>().unwrap();
            check(&kern, &x, p, 1e-4, &format!("{c}→{o} g{groups} k{k:?} s{stride:?}"));
        }
    }

    #[test]
    fn blocked_depthwise_kernels_give_the_direct_loops_bits() {
        let dev = Device::Cpu;
        // (k, pad, stride, h, w): ConvNeXt's 7×7 on planes narrower and shorter than a
        // register block and wider than one, MobileNet's 3×3 and 5×5 at stride 1 and 2 (even
        // and odd sides), a rectangular kernel with asymmetric padding, "valid" ones.
        let cases = [
            ([7, 7], [3, 3, 3, 3], 1, 5, 6),
            ([7, 7], [3, 3, 3, 3], 1, 9, 19),
            ([3, 3], [1, 1, 1, 1], 1, 7, 6),
            ([5, 5], [2, 2, 2, 2], 1, 11, 13),
            ([3, 5], [1, 2, 0, 1], 1, 6, 9),
            ([3, 3], [0, 0, 0, 0], 1, 6, 10),
            ([3, 3], [1, 1, 1, 1], 2, 14, 14),
            ([5, 5], [2, 2, 2, 2], 2, 11, 21),
            ([3, 3], [0, 1, 1, 0], 2, 9, 8),
            ([5, 5], [0, 0, 0, 0], 2, 12, 17),
        ];
        for (k, pad, s, h, wd) in cases {
            let c = 3;
            let conv = Conv {
                weight: Tensor::randn(0f32, 1f32, (c, 1, k[0], k[1]), &dev).unwrap(),
                bias: Some(Tensor::randn(0f32, 1f32, c, &dev).unwrap()),
                stride: [s, s],
                padding: pad,
                dilation: [1, 1],
                groups: c,
            };
            let kern = conv.kernel().unwrap();
            assert_eq!(kern.depthwise_blocked(false), Some(s), "{k:?}");
            let (oh, ow) = ((h + pad[0] + pad[2] - k[0]) / s + 1, (wd + pad[1] + pad[3] - k[1]) / s + 1);
            let p = Planes { n: 2, h, w: wd, oh, ow };
            let x = Tensor::randn(0f32, 1f32, c * 2 * h * wd, &dev).unwrap().to_vec1::<f32>().unwrap();
            let what = format!("depthwise {k:?} pad {pad:?} stride {s} on {h}×{wd}");
            let y = check(&kern, &x, p, 1e-4, &what);
            let mut direct = vec![0.0; y.len()];
            for (ch, &b) in kern.b.iter().enumerate() {
                direct[ch * 2 * oh * ow..][..2 * oh * ow].fill(b);
            }
            kern.depthwise_direct_forward(&x, p, &mut direct);
            assert_eq!(y, direct, "{what}");
            let g = Tensor::randn(0f32, 1f32, y.len(), &dev).unwrap().to_vec1::<f32>().unwrap();
            let mut gx = vec![0.0; x.len()];
            kern.depthwise_direct_vjp(&g, p, &mut gx);
            assert_eq!(kern.vjp(&g, p, &mut Vec::new()), gx, "{what} vjp");
        }
    }

    /// Checks conv(x) against the direct sum (to `tol`) and its adjoint by
    /// ⟨conv(x) − b, g⟩ = ⟨x, vjp(g)⟩; returns conv(x).
    fn check(kern: &ConvKernel, x: &[f32], p: Planes, tol: f32, what: &str) -> Vec<f32> {
        let mut scratch = Vec::new();
        let y = kern.forward(x, p, true, &mut scratch);
        for (a, b) in y.iter().zip(&reference(kern, x, p)) {
            assert!((a - b).abs() < tol, "{what}: {a} vs {b}");
        }
        let g = Tensor::randn(0f32, 1f32, y.len(), &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        let gx = kern.vjp(&g, p, &mut scratch);
        let lin = kern.forward(x, p, false, &mut scratch);
        let lhs: f64 = lin.iter().zip(&g).map(|(a, b)| f64::from(a * b)).sum();
        let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| f64::from(a * b)).sum();
        assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "{what} adjoint: {lhs} vs {rhs}");
        y
    }

    #[test]
    fn one_row_tiles_of_a_wide_kernel_equal_the_direct_sum() {
        // 140 channels × 5×5 taps × 40 columns = 140,000 patch values per output row, so
        // every tile is one row, and the rows near the top and bottom read taps that fall
        // wholly outside the image.
        let dev = Device::Cpu;
        let (c, o, h, wd) = (140, 2, 6, 40);
        let conv = Conv {
            weight: Tensor::randn(0f32, 1f32, (o, c, 5, 5), &dev).unwrap(),
            bias: None,
            stride: [1, 1],
            padding: [2, 2, 2, 2],
            dilation: [1, 1],
            groups: 1,
        };
        let kern = conv.kernel().unwrap();
        let p = Planes { n: 1, h, w: wd, oh: h, ow: wd };
        assert_eq!(kern.tiles(c, p), (0..6).map(|r| r..r + 1).collect::<Vec<_>>());
        let x = Tensor::randn(0f32, 1f32, c * h * wd, &dev).unwrap().to_vec1::<f32>().unwrap();
        check(&kern, &x, p, 1e-3, "5×5 in one-row tiles");
    }

    #[test]
    fn strided_tiles_within_an_image_equal_the_direct_sum() {
        // 60 channels × 7×7 taps × 20 columns = 58,800 patch values per output row: tiles of
        // 3 of the 6 output rows, so each tile splits only the input rows it reads into
        // phases, the first tile's top rows in the padding.
        let dev = Device::Cpu;
        let (c, o, h, wd) = (60, 3, 12, 40);
        let conv = Conv {
            weight: Tensor::randn(0f32, 1f32, (o, c, 7, 7), &dev).unwrap(),
            bias: Some(Tensor::randn(0f32, 1f32, o, &dev).unwrap()),
            stride: [2, 2],
            padding: [3, 3, 3, 3],
            dilation: [1, 1],
            groups: 1,
        };
        let kern = conv.kernel().unwrap();
        let p = Planes { n: 2, h, w: wd, oh: 6, ow: 20 };
        assert_eq!(kern.tiles(c, p), vec![0..3, 3..6, 6..9, 9..12]);
        let x = Tensor::randn(0f32, 1f32, c * 2 * h * wd, &dev).unwrap().to_vec1::<f32>().unwrap();
        check(&kern, &x, p, 1e-3, "7×7 stride 2 in half-image tiles");
    }

    #[test]
    fn images_tile_alike_in_any_block_and_give_the_same_bits() {
        // 64 channels × 3×3 taps × 40 columns = 23,040 patch values per output row, so a
        // tile holds at most 11 rows: each 38-row image splits into 4 tiles of 10, 10, 10 and
        // 8 rows, in a block of two as alone. Of 14×14 images two whole ones fit a tile (32
        // rows): nine make five tiles.
        let dev = Device::Cpu;
        let (c, o, h, wd, n) = (64, 4, 38, 40, 2);
        let conv = Conv {
            weight: Tensor::randn(0f32, 1f32, (o, c, 3, 3), &dev).unwrap(),
            bias: Some(Tensor::randn(0f32, 1f32, o, &dev).unwrap()),
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let kern = conv.kernel().unwrap();
        let p = Planes { n, h, w: wd, oh: h, ow: wd };
        let starts: Vec<usize> = kern.tiles(c, p).iter().map(|r| r.start).collect();
        assert_eq!(starts, [0, 10, 20, 30, 38, 48, 58, 68]);
        let small = Planes { n: 9, h: 14, w: 14, oh: 14, ow: 14 };
        let starts: Vec<usize> = kern.tiles(c, small).iter().map(|r| r.start / 14).collect();
        assert_eq!(starts, [0, 2, 4, 6, 8]);
        let x = Tensor::randn(0f32, 1f32, c * n * h * wd, &dev).unwrap().to_vec1::<f32>().unwrap();
        let y = check(&kern, &x, p, 1e-3, "3×3 in 10-row tiles");
        // The second image alone gives bit for bit what it got in the block, forward and back.
        let one = Planes { n: 1, ..p };
        let plane = |v: &[f32], ch: usize, len: usize| v[(ch * n + 1) * len..][..len].to_vec();
        let x1: Vec<f32> = (0..c).flat_map(|ci| plane(&x, ci, h * wd)).collect();
        let y1 = kern.forward(&x1, one, true, &mut Vec::new());
        assert_eq!(y1, (0..o).flat_map(|oi| plane(&y, oi, h * wd)).collect::<Vec<_>>());
        let g = Tensor::randn(0f32, 1f32, y.len(), &dev).unwrap().to_vec1::<f32>().unwrap();
        let gx = kern.vjp(&g, p, &mut Vec::new());
        let g1: Vec<f32> = (0..o).flat_map(|oi| plane(&g, oi, h * wd)).collect();
        let gx1 = kern.vjp(&g1, one, &mut Vec::new());
        assert_eq!(gx1, (0..c).flat_map(|ci| plane(&gx, ci, h * wd)).collect::<Vec<_>>());
    }
}
