//! SLIC superpixels (Achanta, Shaji, Smith, Lucchi, Fua and Süsstrunk, "SLIC Superpixels
//! Compared to State-of-the-Art Superpixel Methods", TPAMI 2012) on grey images: the optional
//! feature segmentation of LIME and KernelSHAP ([`super::surrogate`]).
//!
//! k-means in (intensity, row, column) space, each centre searching only a 2S × 2S window:
//!
//! * **Grid.** For K = `n_segments` (clamped to 1..=H·W) the grid interval is
//!   S = √(H·W / K). The initial centres sit on a regular gw × gh grid with
//!   gw = round(√(K·W/H)) (clamped to 1..=min(W, K)) and gh = round(K/gw) (clamped to 1..=H),
//!   so gh·gw ≈ K with near-square cells; centre (i, j) is the pixel
//!   (⌊(i + ½)·H/gh⌋, ⌊(j + ½)·W/gw⌋). Each then moves to the lowest-gradient pixel of its
//!   3 × 3 neighbourhood, G(y, x) = (I(y, x+1) − I(y, x−1))² + (I(y+1, x) − I(y−1, x))² with
//!   coordinates clamped to the image (ties keep the centre, then the first in row-major order).
//! * **Distance.** D = √(d_c² + (d_s/S)²·m²), with d_s the Euclidean pixel distance,
//!   m = `compactness`, and d_c = [`INTENSITY_SCALE`] · |I − I_k| for intensities I in [0,1]:
//!   intensities are measured on a 0–10 scale. So a full black-to-white step weighs as much as
//!   a spatial distance of 10·S/m: at m = 1 an intensity step of 0.1 equals one grid interval
//!   (segments follow edges of that contrast), at m = 3 (LIME's and KernelSHAP's default) a
//!   step of 0.3, at m = 10 only full-contrast steps (segments become grid-like), at m = 0.1
//!   steps of 0.01 already (segments follow noise). In the paper's terms (m ∈ [1, 40], 10 in
//!   its experiments, on CIELAB with lightness L ∈ [0, 100]) our m is the paper's m/10 on an
//!   L = 100·I scale; in scikit-image's (`slic`, which min–max rescales each image to [0,1] and
//!   uses that difference as d_c) it is skimage's `compactness`·10 on a full-range image.
//!   Unlike scikit-image we do not rescale per image: the intensity scale is fixed, so a
//!   perturbation of the image cannot change it.
//! * **Iterations.** Each of `iterations` passes (at least one; [`DEFAULT_ITERATIONS`] = 10 as
//!   in the paper) assigns every pixel to the centre of least D among the centres whose window
//!   |Δrow| ≤ S, |Δcol| ≤ S contains it (ties: the lower centre index), then moves each centre
//!   to the mean (row, column, intensity) of its pixels (a centre without pixels stays). A
//!   pixel no window reaches (possible after centres move, or for extreme aspect ratios) goes
//!   to the centre of least D overall. The passes stop early once an assignment repeats (a
//!   fixed point). No randomness: equal inputs give equal labels.
//! * **Connectivity.** The 4-connected components of the assignment become segments; each
//!   component smaller than min_size = max(1, ⌊[`MIN_SIZE_FACTOR`] · H·W / K₀⌋), K₀ the number
//!   of initial centres (scikit-image's `enforce_connectivity` with `min_size_factor` 0.5), is
//!   merged into the neighbouring segment with which it shares the longest border (ties: the
//!   lower component number, components being numbered in row-major order of their first
//!   pixel and a merged one keeping the absorbing one's number), smallest component first
//!   (ties: the lower number), repeatedly, until no segment smaller than min_size has a
//!   neighbour. A union of two touching connected sets is
//!   connected, so every segment is 4-connected; components of min_size or more that carry
//!   the same k-means label stay separate segments, so the count can exceed gh·gw.
//! * **Labels** are 0..k−1, numbered in row-major order of each segment's first pixel, and
//!   every label is used.
//!
//!
//! Other differences from scikit-image's `slic`: it searches ±2S around each centre, starts
//! from its own regular grid without the gradient move, and merges each orphan into the
//! neighbour its scan met last. Multi-channel images are segmented on their channel mean (see
//! [`super::surrogate::image_features`]).

use std::collections::{BTreeMap, BTreeSet};

/// Factor from an intensity difference in [0,1] units to the colour distance d_c.
pub const INTENSITY_SCALE: f64 = 10.0;
/// Default number of k-means passes (the paper's 10).
pub const DEFAULT_ITERATIONS: usize = 10;
/// Components smaller than this fraction of the expected segment size H·W/K₀ are merged into
/// a neighbour (scikit-image's `min_size_factor`).
pub const MIN_SIZE_FACTOR: f64 = 0.5;

/// SLIC superpixels of a grey image (row-major H × W, values in [0,1]): one label per pixel,
/// 0..k−1, every label used and every segment 4-connected. See the module docs for the exact
/// conventions. An empty image gives no labels.
///
/// # Panics
/// If `image.len() != h * w`.
pub fn slic(
    image: &[f32],
    h: usize,
    w: usize,
    n_segments: usize,
    compactness: f64,
    iterations: usize,
) -> Vec<usize> {
    assert_eq!(image.len(), h * w, "slic: {} pixels for a {h}×{w} image", image.len());
    let n = h * w;
    if n == 0 {
        return Vec::new();
    }
    let k = n_segments.clamp(1, n);
    let s = (n as f64 / k as f64).sqrt();
    let grey: Vec<f64> = image.iter().map(|&v| INTENSITY_SCALE * v as f64).collect();
    let mut centres = initial_centres(&grey, h, w, k);
    let labels = kmeans(&grey, h, w, &mut centres, s, compactness, iterations);
    enforce_connectivity(&labels, h, w, min_size(n, centres.len()))
}

/// The gh × gw grid of initial centres for K segments (see the module docs).
fn grid_shape(h: usize, w: usize, k: usize) -> (usize, usize) {
    let gw = ((k as f64 * w as f64 / h as f64).sqrt().round() as usize).clamp(1, w.min(k));
    let gh = ((k as f64 / gw as f64).round() as usize).clamp(1, h);
    (gh, gw)
}

/// The minimum segment size for `n` pixels and `k0` initial centres.
fn min_size(n: usize, k0: usize) -> usize {
    ((MIN_SIZE_FACTOR * n as f64 / k0 as f64) as usize).max(1)
}

/// Grid centres moved to the lowest gradient of their 3 × 3 neighbourhood, as
/// (row, column, scaled intensity).
fn initial_centres(grey: &[f64], h: usize, w: usize, k: usize) -> Vec<[f64; 3]> {
    let at = |y: isize, x: isize| {
        grey[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize]
    };
    let gradient = |y: isize, x: isize| {
        let gx = at(y, x + 1) - at(y, x - 1);
        let gy = at(y + 1, x) - at(y - 1, x);
        gx * gx + gy * gy
    };
    let (gh, gw) = grid_shape(h, w, k);
    let mut centres = Vec::with_capacity(gh * gw);
    for i in 0..gh {
        for j in 0..gw {
            let y = ((i as f64 + 0.5) * h as f64 / gh as f64) as isize;
            let x = ((j as f64 + 0.5) * w as f64 / gw as f64) as isize;
            let mut best = (gradient(y, x), y, x);
            for yy in y - 1..=y + 1 {
                for xx in x - 1..=x + 1 {
                    if (0..h as isize).contains(&yy) && (0..w as isize).contains(&xx) {
                        let g = gradient(yy, xx);
                        if g < best.0 {
                            best = (g, yy, xx);
                        }
                    }
                }
            }
            let (_, y, x) = best;
            centres.push([y as f64, x as f64, grey[y as usize * w + x as usize]]);
        }
    }
    centres
}

/// The k-means passes: returns the last assignment (one centre index per pixel).
fn kmeans(
    grey: &[f64],
    h: usize,
    w: usize,
    centres: &mut [[f64; 3]],
    s: f64,
    compactness: f64,
    iterations: usize,
) -> Vec<usize> {
    let n = h * w;
    let spatial = compactness * compactness / (s * s);
    let d2 = |p: usize, c: &[f64; 3]| {
        let (y, x) = ((p / w) as f64, (p % w) as f64);
        let dc = grey[p] - c[2];
        dc * dc + ((y - c[0]).powi(2) + (x - c[1]).powi(2)) * spatial
    };
    let mut labels = vec![usize::MAX; n];
    let mut dist = vec![0f64; n];
    let mut assigned = vec![usize::MAX; n];
    for pass in 0..iterations.max(1) {
        dist.fill(f64::INFINITY);
        assigned.fill(usize::MAX);
        for (k, c) in centres.iter().enumerate() {
            let y0 = (c[0] - s).ceil().max(0.0) as usize;
            let y1 = ((c[0] + s).floor() as usize).min(h - 1);
            let x0 = (c[1] - s).ceil().max(0.0) as usize;
            let x1 = ((c[1] + s).floor() as usize).min(w - 1);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let p = y * w + x;
                    let d = d2(p, c);
                    if d < dist[p] {
                        dist[p] = d;
                        assigned[p] = k;
                    }
                }
            }
        }
        for (p, a) in assigned.iter_mut().enumerate().filter(|(_, a)| **a == usize::MAX) {
            // Reached by no window: the nearest centre overall (ties: the lower index).
            let nearest = centres.iter().enumerate().map(|(k, c)| (d2(p, c), k));
            *a = nearest.min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1))).map_or(0, |t| t.1);
        }
        let fixed_point = assigned == labels;
        std::mem::swap(&mut labels, &mut assigned);
        if fixed_point || pass + 1 == iterations.max(1) {
            break;
        }
        let mut sums = vec![[0f64; 4]; centres.len()];
        for (p, &k) in labels.iter().enumerate() {
            let acc = &mut sums[k];
            acc[0] += (p / w) as f64;
            acc[1] += (p % w) as f64;
            acc[2] += grey[p];
            acc[3] += 1.0;
        }
        for (c, acc) in centres.iter_mut().zip(&sums) {
            if acc[3] > 0.0 {
                *c = [acc[0] / acc[3], acc[1] / acc[3], acc[2] / acc[3]];
            }
        }
    }
    labels
}

/// Splits `labels` into 4-connected components, merges those smaller than `min_size` into
/// their longest-bordering neighbour (smallest first) and numbers the segments 0..k−1 in
/// row-major order of their first pixel.
fn enforce_connectivity(labels: &[usize], h: usize, w: usize, min_size: usize) -> Vec<usize> {
    let n = h * w;
    // Components, numbered in row-major order of their first pixel.
    let mut comp = vec![usize::MAX; n];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..n {
        if comp[start] != usize::MAX {
            continue;
        }
        let id = sizes.len();
        comp[start] = id;
        stack.push(start);
        let mut size = 0;
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = (p / w, p % w);
            let mut visit = |q: usize| {
                if comp[q] == usize::MAX && labels[q] == labels[p] {
                    comp[q] = id;
                    stack.push(q);
                }
            };
            if x > 0 {
                visit(p - 1);
            }
            if x + 1 < w {
                visit(p + 1);
            }
            if y > 0 {
                visit(p - w);
            }
            if y + 1 < h {
                visit(p + w);
            }
        }
        sizes.push(size);
    }
    // Shared border lengths between touching components.
    let mut border: Vec<BTreeMap<usize, usize>> = vec![BTreeMap::new(); sizes.len()];
    let mut touch = |a: usize, b: usize| {
        if a != b {
            *border[a].entry(b).or_default() += 1;
            *border[b].entry(a).or_default() += 1;
        }
    };
    for p in 0..n {
        if p % w + 1 < w {
            touch(comp[p], comp[p + 1]);
        }
        if p + w < n {
            touch(comp[p], comp[p + w]);
        }
    }
    // Merge small components, smallest first (ties: the lower id).
    let mut owner: Vec<usize> = (0..sizes.len()).collect();
    let mut small: BTreeSet<(usize, usize)> =
        sizes.iter().enumerate().filter(|(_, &s)| s < min_size).map(|(i, &s)| (s, i)).collect();
    while let Some((size, a)) = small.pop_first() {
        if owner[a] != a || sizes[a] != size {
            continue; // merged away, or grown since this entry was queued
        }
        // Longest shared border; ties: the lower id (the neighbour met first).
        let Some(b) = border[a].iter().max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0))).map(|(&b, _)| b) else {
            continue; // the whole image
        };
        for (c, len) in std::mem::take(&mut border[a]) {
            border[c].remove(&a);
            if c != b {
                *border[c].entry(b).or_default() += len;
                *border[b].entry(c).or_default() += len;
            }
        }
        owner[a] = b;
        sizes[b] += size;
        if sizes[b] < min_size {
            small.insert((sizes[b], b));
        }
    }
    let root = |mut c: usize| {
        while owner[c] != c {
            c = owner[c];
        }
        c
    };
    let mut new_id = vec![usize::MAX; sizes.len()];
    let mut next = 0;
    comp.iter()
        .map(|&c| {
            let r = root(c);
            if new_id[r] == usize::MAX {
                new_id[r] = next;
                next += 1;
            }
            new_id[r]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of distinct labels, after checking that they are exactly 0..k−1 (each used)
    /// and that each label's pixels form one 4-connected set.
    fn check_segments(labels: &[usize], h: usize, w: usize) -> usize {
        assert_eq!(labels.len(), h * w);
        let k = labels.iter().max().map_or(0, |&m| m + 1);
        let mut used = vec![false; k];
        labels.iter().for_each(|&l| used[l] = true);
        assert!(used.iter().all(|&u| u), "labels are not contiguous 0..{k}");
        // Flood-fill each label from its first pixel through 4-neighbours of the same label:
        // it must reach all of the label's pixels.
        for l in 0..k {
            let first = labels.iter().position(|&v| v == l).unwrap();
            let mut seen = vec![false; h * w];
            let mut stack = vec![first];
            seen[first] = true;
            let mut reached = 0;
            while let Some(p) = stack.pop() {
                reached += 1;
                let (y, x) = (p / w, p % w);
                let near = [
                    (y > 0, p.wrapping_sub(w)),
                    (y + 1 < h, p + w),
                    (x > 0, p.wrapping_sub(1)),
                    (x + 1 < w, p + 1),
                ];
                for (inside, q) in near {
                    if inside && !seen[q] && labels[q] == l {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
            assert_eq!(reached, labels.iter().filter(|&&v| v == l).count(), "segment {l} is not 4-connected");
        }
        k
    }

    fn sizes(labels: &[usize]) -> Vec<usize> {
        let mut s = vec![0; labels.iter().max().map_or(0, |&m| m + 1)];
        labels.iter().for_each(|&l| s[l] += 1);
        s
    }

    /// A deterministic textured image: smooth waves plus hashed noise, values in [0,1].
    fn texture(h: usize, w: usize, seed: u64) -> Vec<f32> {
        (0..h * w)
            .map(|p| {
                let (y, x) = ((p / w) as f32, (p % w) as f32);
                let noise = (crate::seed::mix(seed, p as u64) % 1000) as f32 / 1000.0;
                (0.35 + 0.25 * (0.4 * x).sin() * (0.3 * y).cos() + 0.3 * noise).clamp(0.0, 1.0)
            })
            .collect()
    }

    #[test]
    fn two_halves_with_two_segments_are_the_two_halves() {
        // 8×16, left 8 columns 0, right 8 columns 1, K = 2: gw = round(√(2·16/8)) = 2, gh = 1,
        // S = √(128/2) = 8, centres (⌊4⌋, ⌊4⌋) = (4, 4) and (4, 12). The gradient is 0 there
        // (both horizontal neighbours lie in the same half), so they stay. Every left pixel is
        // nearer (4, 4) in space and equal to it in intensity, every right pixel likewise for
        // (4, 12): the halves, a fixed point from the first pass. Both 64 ≥ min_size 32.
        let (h, w) = (8, 16);
        let img: Vec<f32> = (0..h * w).map(|p| if p % w < 8 { 0.0 } else { 1.0 }).collect();
        let want: Vec<usize> = (0..h * w).map(|p| usize::from(p % w >= 8)).collect();
        for m in [0.1, 1.0, 10.0] {
            assert_eq!(slic(&img, h, w, 2, m, DEFAULT_ITERATIONS), want, "compactness {m}");
        }
    }

    #[test]
    fn segments_follow_an_off_centre_edge_unless_compactness_is_huge() {
        // 8×16, columns 0–5 are 0 and 6–15 are 1 (scaled: 0 and 10); K = 2 gives centres (4, 4)
        // (gradient (I(4,5) − I(4,3))² = 0 there) and (4, 12), S = 8.
        // m = 1: a 1-pixel at column 6 or 7 pays d_c² = 100 to the left centre, but at most
        // (6² + 4²)/64 < 1 to the right one (whose window, columns 4–15, reaches it), so it goes
        // right; a 0-pixel at columns 4–5 pays ≤ 0.5 left and ≥ 100 right. Hence left = columns
        // 0–5, and the updated centres (3.5, 2.5) and (3.5, 10.5) reproduce it: a fixed point.
        // m = 10⁴: d_c² ≤ 100 is negligible beside any difference of spatial terms
        // (Δd_s²)·m²/S² ≥ 10⁸/64, so columns 0–7 go left (nearer column 4) and 9–15 right;
        // column 8, equally far from both, is decided by intensity: its 1 matches the right
        // centre. Left = columns 0–7, ignoring the edge at 6; the updated centres, columns 3.5
        // and 11.5, reproduce it.
        let (h, w) = (8, 16);
        let img: Vec<f32> = (0..h * w).map(|p| if p % w < 6 { 0.0 } else { 1.0 }).collect();
        let split = |cols: usize| (0..h * w).map(|p| usize::from(p % w >= cols)).collect::<Vec<_>>();
        assert_eq!(slic(&img, h, w, 2, 1.0, DEFAULT_ITERATIONS), split(6));
        assert_eq!(slic(&img, h, w, 2, 1e4, DEFAULT_ITERATIONS), split(8));
    }

    #[test]
    fn labels_cover_every_pixel_are_contiguous_and_4_connected() {
        let checker: Vec<f32> = (0..20 * 30).map(|p| ((p / 30 / 3 + p % 30 / 3) % 2) as f32).collect();
        let disk: Vec<f32> = (0..20 * 30)
            .map(|p| {
                let (y, x) = ((p / 30) as f32 - 9.5, (p % 30) as f32 - 14.5);
                if y * y + x * x < 49.0 {
                    0.9
                } else {
                    0.1
                }
            })
            .collect();
        for (name, img) in [("texture", texture(20, 30, 1)), ("checker", checker), ("disk", disk)] {
            for n in [0, 1, 2, 7, 30, 100, 600, 5000] {
                for m in [0.01, 0.1, 1.0, 10.0] {
                    let labels = slic(&img, 20, 30, n, m, DEFAULT_ITERATIONS);
                    let k = check_segments(&labels, 20, 30);
                    // No segment below min_size unless it is the only one.
                    let nc = n.clamp(1, 600);
                    let (gh, gw) = grid_shape(20, 30, nc);
                    let smallest = *sizes(&labels).iter().min().unwrap();
                    assert!(k == 1 || smallest >= min_size(600, gh * gw), "{name} n={n} m={m}");
                }
            }
        }
        // Degenerate shapes.
        assert!(slic(&[], 0, 5, 3, 1.0, 10).is_empty());
        check_segments(&slic(&texture(1, 40, 2), 1, 40, 5, 1.0, 10), 1, 40);
        check_segments(&slic(&texture(40, 1, 3), 40, 1, 5, 1.0, 10), 40, 1);
        check_segments(&slic(&[0.5], 1, 1, 4, 1.0, 0), 1, 1);
    }

    #[test]
    fn a_constant_image_gives_a_regular_grid() {
        // 28×28, K = 16: gw = gh = 4, S = 7, centres at rows and columns ⌊3.5 + 7j⌋ = 3, 10, 17,
        // 24; zero gradient everywhere, so they stay. With d_c = 0 a pixel goes to the nearest
        // centre in its window (|Δ| ≤ 7), and the midpoints between centres (6.5, 13.5, 20.5)
        // are never hit exactly: the segments are the 7×7 blocks, label 4·(y/7) + x/7. Their
        // means (3, 10, 17, 24) are the centres again: a fixed point.
        let labels = slic(&[0.5; 784], 28, 28, 16, 1.0, DEFAULT_ITERATIONS);
        let want: Vec<usize> = (0..784).map(|p| 4 * (p / 28 / 7) + p % 28 / 7).collect();
        assert_eq!(labels, want);
        // Uneven sizes: 30×20, K = 10 gives a 3×3 grid (gw = round(√(10·20/30)) = 3,
        // gh = round(10/3) = 3) of cells about 10×6.7 pixels; every segment within a factor 1.25
        // of the mean size 600/9 ≈ 66.7.
        let labels = slic(&[0.2; 600], 30, 20, 10, 1.0, DEFAULT_ITERATIONS);
        assert_eq!(check_segments(&labels, 30, 20), 9);
        for s in sizes(&labels) {
            let ratio = s as f64 / (600.0 / 9.0);
            assert!((0.8..=1.25).contains(&ratio), "size {s}");
        }
    }

    #[test]
    fn slic_is_deterministic() {
        let img = texture(28, 28, 5);
        let a = slic(&img, 28, 28, 50, 1.0, DEFAULT_ITERATIONS);
        assert_eq!(a, slic(&img, 28, 28, 50, 1.0, DEFAULT_ITERATIONS));
        assert!(check_segments(&a, 28, 28) > 1);
    }

    #[test]
    fn more_segments_requested_give_no_fewer_segments() {
        // K = 1: one centre whose window (S = 28) covers the image: a single segment.
        let img = texture(28, 28, 9);
        assert!(slic(&img, 28, 28, 1, 1.0, DEFAULT_ITERATIONS).iter().all(|&l| l == 0));
        for m in [0.3, 1.0, 3.0] {
            let counts: Vec<usize> = [1, 4, 9, 16, 25, 50, 100, 200, 400]
                .iter()
                .map(|&n| check_segments(&slic(&img, 28, 28, n, m, DEFAULT_ITERATIONS), 28, 28))
                .collect();
            assert!(counts.windows(2).all(|c| c[0] <= c[1]), "compactness {m}: {counts:?}");
        }
    }
}
