//! Histograms of oriented gradients (Dalal and Triggs, CVPR 2005) exactly as scikit-image's
//! `skimage.feature.hog` computes them, for the sanity checks' `hog_pearson` similarity.
//!
//! With scikit-image's defaults, which Adebayo et al. kept (9 orientations, 3×3 cells per block,
//! L2-Hys, no sqrt transform), on an image of `c` channels `h × w` (channel-major `[c][y][x]`):
//!
//! 1. Gradients by central differences per channel, `g_row(y, x) = I(y+1, x) − I(y−1, x)` and
//!    `g_col(y, x) = I(y, x+1) − I(y, x−1)`, zero on the first and last row (for `g_row`) and
//!    column (for `g_col`). Per pixel the channel with the largest `hypot(g_row, g_col)` is kept
//!    (the first on ties, numpy's `argmax`).
//! 2. Magnitude `hypot(g_col, g_row)`, orientation `deg(atan2(g_row, g_col)) mod 180`.
//! 3. `⌊h / cell⌋ × ⌊w / cell⌋` cells (a partial cell at the bottom or right is dropped); a
//!    pixel votes its magnitude into bin `i` if `20·i ≤ orientation < 20·(i+1)`, no
//!    interpolation between bins or cells. A cell's bin is the sum of its votes divided by
//!    `cell²`, *accumulated in f32* as scikit-image's Cython does (`cdef float total`), which
//!    this reproduces to the bit. For even cells every pixel of the cell votes (scikit-image
//!    0.15 drops the last row and column of odd cells, later versions do not; callers here only
//!    use even cells, where both agree).
//! 4. Blocks of 3×3 cells at every cell offset, each normalised by L2-Hys:
//!    `v / √(‖v‖² + ε²)`, values capped at 0.2, then the same normalisation again, ε = 1e-5.
//! 5. The feature vector: blocks row by row, each block's cells row by row, each cell's 9 bins
//!    (numpy's ravel of (block_row, block_col, cell_row, cell_col, bin)).

/// Orientation bins over 0°..180°.
const ORIENTATIONS: usize = 9;
/// Cells per block side.
const BLOCK: usize = 3;
/// L2-Hys's ε.
const EPS: f64 = 1e-5;
/// L2-Hys's cap.
const CAP: f64 = 0.2;
/// Adebayo et al.'s cell side (pixels_per_cell=(16, 16)).
const ADEBAYO_CELL: usize = 16;

/// The cell side for an `h × w` map: Adebayo's 16, halved until three whole cells (one block)
/// fit along the shorter side: 16 from 48 pixels up (their 299×299, a 224×224 map), 8 for
/// Fashion-MNIST's 28×28, down to 2 for 6 pixels; `None` below.
pub fn hog_cell(h: usize, w: usize) -> Option<usize> {
    let side = h.min(w);
    let mut cell = ADEBAYO_CELL;
    while side < BLOCK * cell && cell > 2 {
        cell /= 2;
    }
    (side >= BLOCK * cell).then_some(cell)
}

/// The HOG feature vector of the `c`-channel `h × w` image (module docs); `None` if the image
/// holds fewer than 3×3 whole cells of side `cell`, `cell` is 0 or the length does not fit.
pub fn hog(image: &[f64], c: usize, h: usize, w: usize, cell: usize) -> Option<Vec<f64>> {
    if cell == 0 || c == 0 || image.len() != c.checked_mul(h)?.checked_mul(w)? {
        return None;
    }
    let (rows, cols) = (h / cell, w / cell);
    if rows < BLOCK || cols < BLOCK {
        return None;
    }
    let (g_row, g_col) = dominant_gradient(image, c, h, w);
    let cells = cell_histograms(&g_row, &g_col, w, cell, rows, cols);
    let mut out = Vec::with_capacity((rows - BLOCK + 1) * (cols - BLOCK + 1) * BLOCK * BLOCK * ORIENTATIONS);
    for br in 0..=rows - BLOCK {
        for bc in 0..=cols - BLOCK {
            let mut block = Vec::with_capacity(BLOCK * BLOCK * ORIENTATIONS);
            for r in br..br + BLOCK {
                block.extend_from_slice(
                    &cells[(r * cols + bc) * ORIENTATIONS..(r * cols + bc + BLOCK) * ORIENTATIONS],
                );
            }
            out.extend(l2_hys(block));
        }
    }
    Some(out)
}

/// Per pixel, the central-difference gradient (row, column) of the channel with the largest
/// magnitude.
fn dominant_gradient(image: &[f64], c: usize, h: usize, w: usize) -> (Vec<f64>, Vec<f64>) {
    let hw = h * w;
    let (mut g_row, mut g_col, mut best) = (vec![0.0; hw], vec![0.0; hw], vec![f64::NEG_INFINITY; hw]);
    for k in 0..c {
        let ch = &image[k * hw..(k + 1) * hw];
        for y in 0..h {
            for x in 0..w {
                let gr = if y == 0 || y + 1 == h { 0.0 } else { ch[(y + 1) * w + x] - ch[(y - 1) * w + x] };
                let gc = if x == 0 || x + 1 == w { 0.0 } else { ch[y * w + x + 1] - ch[y * w + x - 1] };
                let magnitude = gr.hypot(gc);
                let i = y * w + x;
                if magnitude > best[i] {
                    (best[i], g_row[i], g_col[i]) = (magnitude, gr, gc);
                }
            }
        }
    }
    (g_row, g_col)
}

/// The `rows × cols` cells' orientation histograms, cell-major then bin, each bin the f32 sum of
/// its pixels' magnitudes over `cell²` (scikit-image's `hog_histograms`).
fn cell_histograms(
    g_row: &[f64],
    g_col: &[f64],
    w: usize,
    cell: usize,
    rows: usize,
    cols: usize,
) -> Vec<f64> {
    let per_bin = 180.0 / ORIENTATIONS as f64;
    let mut out = vec![0.0; rows * cols * ORIENTATIONS];
    for r in 0..rows {
        for cc in 0..cols {
            let mut totals = [0.0f32; ORIENTATIONS];
            for y in r * cell..(r + 1) * cell {
                for x in cc * cell..(cc + 1) * cell {
                    let i = y * w + x;
                    let orientation = g_row[i].atan2(g_col[i]).to_degrees().rem_euclid(180.0);
                    // Bin b holds [20·b, 20·(b+1)): bounds exact in f32 and f64, compared as
                    // scikit-image does (an orientation that rounds to 180 votes nowhere).
                    if let Some(bin) = (0..ORIENTATIONS).find(|&b| {
                        orientation >= per_bin * b as f64 && orientation < per_bin * (b + 1) as f64
                    }) {
                        // C's `float += double`: the sum in double, rounded back to float.
                        totals[bin] = (f64::from(totals[bin]) + g_col[i].hypot(g_row[i])) as f32;
                    }
                }
            }
            let area = (cell * cell) as f32;
            for (b, total) in totals.iter().enumerate() {
                out[(r * cols + cc) * ORIENTATIONS + b] = f64::from(total / area);
            }
        }
    }
    out
}

/// scikit-image's L2-Hys block normalisation.
fn l2_hys(block: Vec<f64>) -> Vec<f64> {
    let normalise = |v: Vec<f64>| {
        let norm = (v.iter().map(|x| x * x).sum::<f64>() + EPS * EPS).sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<_>>()
    };
    normalise(normalise(block).into_iter().map(|x| x.min(CAP)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_adebayo_and_shrink_to_fit_three() {
        assert_eq!(hog_cell(299, 299), Some(16));
        assert_eq!(hog_cell(224, 224), Some(16));
        assert_eq!(hog_cell(48, 60), Some(16));
        assert_eq!(hog_cell(47, 60), Some(8));
        assert_eq!(hog_cell(28, 28), Some(8));
        assert_eq!(hog_cell(23, 28), Some(4));
        assert_eq!(hog_cell(6, 6), Some(2));
        assert_eq!(hog_cell(5, 60), None);
    }

    #[test]
    fn a_vertical_edge_votes_into_the_zero_degree_bin() {
        // 6×6, one channel, cell 2: columns 0..3 dark, 3..6 bright. g_col = 1 at columns 2 and 3
        // (x ± 1 straddles the edge), 0 elsewhere and on the border columns; g_row = 0. So
        // orientation 0°, bin 0, magnitude 1 at columns 2, 3 of every row.
        let img: Vec<f64> = (0..36).map(|i| if i % 6 >= 3 { 1.0 } else { 0.0 }).collect();
        let f = hog(&img, 1, 6, 6, 2).unwrap();
        // One block of 3×3 cells: cells in column 1 (x 2..4) hold bin 0 = 4·1 / 4 = 1; all else
        // 0. Three equal non-zero entries: L2 gives 1/√3 each (≈ 0.577, capped to 0.2), the
        // second normalisation gives 0.2/√(3·0.04) = 1/√3 again.
        assert_eq!(f.len(), 81);
        for (i, v) in f.iter().enumerate() {
            let (cell_col, bin) = ((i / 9) % 3, i % 9);
            let want = if cell_col == 1 && bin == 0 { 1.0 / 3f64.sqrt() } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "feature {i}: {v} vs {want}");
        }
    }

    #[test]
    fn the_channel_with_the_strongest_gradient_wins_and_ties_go_to_the_first() {
        // Channel 0 = 0.1·y (g_row 0.2 off the border rows), channel 1 = x (g_col 2 off the
        // border columns).
        let (h, w) = (4, 5);
        let mut img = vec![0.0; 2 * h * w];
        for y in 0..h {
            for x in 0..w {
                img[y * w + x] = 0.1 * y as f64;
                img[h * w + y * w + x] = x as f64;
            }
        }
        let (g_row, g_col) = dominant_gradient(&img, 2, h, w);
        assert_eq!((g_row[w + 2], g_col[w + 2]), (0.0, 2.0), "interior: channel 1");
        assert!((g_row[w] - 0.2).abs() < 1e-15 && g_col[w] == 0.0, "border column: channel 0");
        assert_eq!((g_row[2], g_col[2]), (0.0, 2.0), "border row: channel 1");
        // Equal magnitudes: numpy's argmax keeps the first channel.
        let twins: Vec<f64> =
            (0..2 * h * w).map(|i| if i < h * w { (i % w) as f64 } else { -((i % w) as f64) }).collect();
        let (_, g_col) = dominant_gradient(&twins, 2, h, w);
        assert_eq!(g_col[w + 2], 2.0);
    }
}
