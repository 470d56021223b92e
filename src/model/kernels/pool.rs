//! Pooling on channel-major planes from one gather table per node: for each output
//! position, the k input positions of its window (the plane length for padding) and, for
//! averages, their weights (built by [`crate::model::ops`]' pool module and shared with the
//! candle path, so that both read the same windows).
//!
//! Max-pooling keeps each window's first maximum (strict >, row-major: PyTorch's choice) by
//! a rank plane (the input itself, or the pre-activation under the surrogate) and routes
//! gradients and tangents through it; averages are linear and their own tangents.

/// A pool's gather table.
#[derive(Debug, Clone)]
pub(crate) struct PoolTable {
    /// Source positions [out·k]; `len` marks padding.
    pub index: Vec<u32>,
    /// Weights [out·k] (averages only).
    pub weights: Option<Vec<f32>>,
    /// Window size.
    pub k: usize,
    /// Input plane length H·W.
    pub len: usize,
    /// Output plane length OH·OW.
    pub out: usize,
    /// (H, W) when the windows are 2×2 at stride 2 without padding and tile the plane
    /// exactly (the fast path of [`max_forward`]).
    pub tiles: Option<(usize, usize)>,
    /// A max-pool's geometry, for [`max_forward`]'s row sweeps.
    pub geometry: Option<MaxGeometry>,
}

/// A max-pool's windows: kernel, stride and leading padding (rows, columns), and the input
/// and output plane sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxGeometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Max-pools each of the `planes` planes of `x` (ranked by `rank`): (values, routes), the
/// route of an output being its source position in the plane (u32::MAX for a window with no
/// input position, whose value is 0).
pub(crate) fn max_forward(t: &PoolTable, x: &[f32], rank: &[f32], planes: usize) -> (Vec<f32>, Vec<u32>) {
    if let Some(tiles) = t.tiles {
        return max_tiled(t, tiles, x, rank, planes);
    }
    if let Some(g) = t.geometry {
        return max_rows(t, &g, x, rank, planes);
    }
    let mut out = vec![0.0f32; planes * t.out];
    let mut route = vec![u32::MAX; planes * t.out];
    for p in 0..planes {
        let (xs, rs) = (&x[p * t.len..][..t.len], &rank[p * t.len..][..t.len]);
        for (o, win) in t.index.chunks_exact(t.k).enumerate() {
            let mut best: Option<(f32, u32)> = None;
            for &i in win {
                if i as usize >= t.len {
                    continue;
                }
                let r = rs[i as usize];
                if best.is_none_or(|(b, _)| r > b) {
                    best = Some((r, i));
                }
            }
            if let Some((_, i)) = best {
                out[p * t.out + o] = xs[i as usize];
                route[p * t.out + o] = i;
            }
        }
    }
    (out, route)
}

/// [`max_forward`] by whole output rows: for each window tap (ky, kx) in the table's order,
/// one sweep along the row keeps the strictly larger rank, so each output keeps its window's
/// first maximum exactly as the table's scan does. The input row is first split into its
/// stride phases (columns q, q + s, q + 2s, …), so that every tap reads a contiguous run and
/// the sweep, which records the winning tap rather than its position, vectorises.
fn max_rows(t: &PoolTable, g: &MaxGeometry, x: &[f32], rank: &[f32], planes: usize) -> (Vec<f32>, Vec<u32>) {
    const NONE: u32 = u32::MAX;
    let mut out = vec![0.0f32; planes * t.out];
    let mut route = vec![NONE; planes * t.out];
    let ([kh, kw], [sy, sx], [py, px]) = (g.kernel, g.stride, g.pad);
    let phase_len = g.w.div_ceil(sx);
    let mut phases = vec![0.0f32; sx * phase_len];
    let (mut best, mut tap) = (vec![0.0f32; g.ow], vec![NONE; g.ow]);
    // Each tap's position relative to its window's corner (no division per output).
    let offset: Vec<isize> = (0..kh * kw).map(|k| ((k / kw) * g.w + k % kw) as isize).collect();
    for p in 0..planes {
        let (xs, rs) = (&x[p * t.len..][..t.len], &rank[p * t.len..][..t.len]);
        for oy in 0..g.oh {
            tap.fill(NONE);
            for ky in 0..kh {
                let iy = (oy * sy + ky) as isize - py as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let line = &rs[iy as usize * g.w..][..g.w];
                for (q, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
                    for (d, &v) in phase.iter_mut().zip(line.iter().skip(q).step_by(sx)) {
                        *d = v;
                    }
                }
                for kx in 0..kw {
                    let off = kx as isize - px as isize;
                    let cols = super::conv::valid(off, sx, g.w, g.ow);
                    if cols.is_empty() {
                        continue;
                    }
                    let ix0 = ((cols.start * sx) as isize + off) as usize;
                    let src = &phases[(ix0 % sx) * phase_len + ix0 / sx..][..cols.len()];
                    let id = (ky * kw + kx) as u32;
                    for ((b, k), &r) in best[cols.clone()].iter_mut().zip(&mut tap[cols]).zip(src) {
                        // All ones where this tap wins; selects by masks, which vectorise.
                        let take = 0u32.wrapping_sub(u32::from((r > *b) | (*k == NONE)));
                        *b = f32::from_bits((r.to_bits() & take) | (b.to_bits() & !take));
                        *k = (id & take) | (*k & !take);
                    }
                }
            }
            let o = p * t.out + oy * g.ow;
            // Output ox's winning tap k reads position (oy·sy − py)·W + ox·sx − px + offset[k].
            let row = (oy * sy) as isize - py as isize;
            for (ox, &k) in tap.iter().enumerate() {
                if k != NONE {
                    let at =
                        (row * g.w as isize + (ox * sx) as isize - px as isize + offset[k as usize]) as usize;
                    route[o + ox] = at as u32;
                    out[o + ox] = xs[at];
                }
            }
        }
    }
    (out, route)
}

/// [`max_forward`] for 2×2 windows that tile the plane exactly (stride 2, no padding):
/// the same first-maximum choice, as branch-free selects over whole rows, which vectorise.
fn max_tiled(
    t: &PoolTable,
    (h, w): (usize, usize),
    x: &[f32],
    rank: &[f32],
    planes: usize,
) -> (Vec<f32>, Vec<u32>) {
    let (h2, w2) = (h / 2, w / 2);
    let mut out = vec![0.0f32; planes * t.out];
    let mut route = vec![0u32; planes * t.out];
    for p in 0..planes {
        let (xs, rs) = (&x[p * t.len..][..t.len], &rank[p * t.len..][..t.len]);
        for py in 0..h2 {
            let (top, bottom) = (2 * py * w, (2 * py + 1) * w);
            let (rt, rb) = (&rs[top..][..w], &rs[bottom..][..w]);
            let (xt, xb) = (&xs[top..][..w], &xs[bottom..][..w]);
            let o = p * t.out + py * w2;
            let (orow, rrow) = (&mut out[o..][..w2], &mut route[o..][..w2]);
            let offsets = [top as u32, top as u32 + 1, bottom as u32, bottom as u32 + 1];
            for px in 0..w2 {
                let r = [rt[2 * px], rt[2 * px + 1], rb[2 * px], rb[2 * px + 1]];
                let v = [xt[2 * px], xt[2 * px + 1], xb[2 * px], xb[2 * px + 1]];
                let (mut best, mut q) = (r[0], 0usize);
                for (k, &rk) in r.iter().enumerate().skip(1) {
                    let up = rk > best;
                    best = if up { rk } else { best };
                    q = if up { k } else { q };
                }
                orow[px] = v[q];
                rrow[px] = offsets[q] + 2 * px as u32;
            }
        }
    }
    (out, route)
}

/// Values of `t` [planes, len] at the routes: a max-pool's tangent.
pub(crate) fn max_gather(t: &PoolTable, v: &[f32], route: &[u32], planes: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; planes * t.out];
    for p in 0..planes {
        let vs = &v[p * t.len..][..t.len];
        for (o, &r) in out[p * t.out..][..t.out].iter_mut().zip(&route[p * t.out..][..t.out]) {
            if (r as usize) < t.len {
                *o = vs[r as usize];
            }
        }
    }
    out
}

/// A max-pool's vector–Jacobian product: each output gradient goes whole to its route.
pub(crate) fn max_vjp(t: &PoolTable, g: &[f32], route: &[u32], planes: usize) -> Vec<f32> {
    let mut gx = vec![0.0f32; planes * t.len];
    for p in 0..planes {
        let dst = &mut gx[p * t.len..][..t.len];
        for (&gv, &r) in g[p * t.out..][..t.out].iter().zip(&route[p * t.out..][..t.out]) {
            if (r as usize) < t.len {
                dst[r as usize] += gv;
            }
        }
    }
    gx
}

/// Weighted window sums (average pools): forward and tangent.
pub(crate) fn avg_forward(t: &PoolTable, x: &[f32], planes: usize) -> Vec<f32> {
    let w = t.weights.as_deref().unwrap_or(&[]);
    let mut out = vec![0.0f32; planes * t.out];
    for p in 0..planes {
        let xs = &x[p * t.len..][..t.len];
        for (o, (win, ws)) in t.index.chunks_exact(t.k).zip(w.chunks_exact(t.k)).enumerate() {
            let mut s = 0.0f32;
            for (&i, &wt) in win.iter().zip(ws) {
                if (i as usize) < t.len {
                    s += wt * xs[i as usize];
                }
            }
            out[p * t.out + o] = s;
        }
    }
    out
}

/// The adjoint of [`avg_forward`].
pub(crate) fn avg_vjp(t: &PoolTable, g: &[f32], planes: usize) -> Vec<f32> {
    let w = t.weights.as_deref().unwrap_or(&[]);
    let mut gx = vec![0.0f32; planes * t.len];
    for p in 0..planes {
        let dst = &mut gx[p * t.len..][..t.len];
        for (o, (win, ws)) in t.index.chunks_exact(t.k).zip(w.chunks_exact(t.k)).enumerate() {
            let gv = g[p * t.out + o];
            for (&i, &wt) in win.iter().zip(ws) {
                if (i as usize) < t.len {
                    dst[i as usize] += wt * gv;
                }
            }
        }
    }
    gx
}
