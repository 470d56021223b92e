//! Single-threaded matrix products into caller-owned buffers, through the `gemm` crate (the
//! one candle itself uses). The parallelism is over blocks of images, one rayon task each, so
//! every product inside a task runs alone and the float operations do not depend on the
//! number of threads.
//!
//! Nor on the batch: one image's rows or columns of a product are a different share of it in
//! a batch of 1 and of 8, and the `gemm` crate picks its algorithm by shape (a matrix–vector
//! kernel when m or n is 1, a dot-product kernel for small products with a column-major right
//! operand, and depth blocks of a size that depends on m and n when k > 512), each summing in
//! another order. So every product here is computed in the one form whose per-entry sum does
//! not depend on m or n: depth in chunks of at most [`DEPTH`] (one `gemm` block each, summed
//! in order), m and n of at least 2 (a 1 is padded with a zero row or column), and the right
//! operand row-major (the dot-product kernel's column-major form is copied). The layer test
//! table checks that a batch of one gives the same bits as the same image in a batch.
//!
//! Nor on the CPU: `gemm` runs its AVX-512 kernels where the CPU has them (the crate's `x86-v4`
//! feature, detected at run time) and its FMA kernels otherwise; both compute an entry as one
//! fused multiply–add chain in depth order per depth chunk, which a test below checks bit for
//! bit against that definition.

/// A row-major matrix operand: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    /// A matrix whose rows start `stride` values apart, columns contiguous (a block of
    /// columns of a wider row-major matrix).
    pub fn strided(data: &'a [f32], stride: usize) -> Self {
        Self { data, rs: stride, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }

    /// Element (i, j).
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// The most depth one `gemm` call sums (its own block size for every shape up to it).
const DEPTH: usize = 512;

/// dst [m,n] (row-major, contiguous) = a [m,k] · b [k,n], plus dst's old value if
/// `accumulate`.
pub(crate) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], a: View, b: View, accumulate: bool) {
    matmul_into(m, n, k, dst, n, a, b, accumulate)
}

/// [`matmul`] into a block of columns of a wider row-major matrix: dst's rows start
/// `dst_stride` ≥ n values apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_stride: usize,
    a: View,
    b: View,
    accumulate: bool,
) {
    assert!(
        dst_stride >= n
            && (m == 0 || n == 0 || dst.len() > (m - 1) * dst_stride + n - 1)
            && a.fits(m, k)
            && b.fits(k, n),
        "kernel matmul: operands too small for {m}×{k}·{k}×{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    if m == 1 {
        // A zero second row: the general kernel, not the matrix–vector one.
        let mut rows = vec![0.0f32; 2 * k];
        (0..k).for_each(|j| rows[j] = a.at(0, j));
        let mut out = vec![0.0f32; 2 * n];
        out[..n].copy_from_slice(&dst[..n]);
        matmul_into(2, n, k, &mut out, n, View::rows(&rows, k), b, accumulate);
        dst[..n].copy_from_slice(&out[..n]);
        return;
    }
    if n == 1 || b.rs == 1 {
        // A row-major right operand of at least two columns (a zero one added to a vector).
        let cols = n.max(2);
        let mut rhs = vec![0.0f32; k * cols];
        for i in 0..k {
            for j in 0..n {
                rhs[i * cols + j] = b.at(i, j);
            }
        }
        let mut out = vec![0.0f32; m * cols];
        for i in 0..m {
            out[i * cols..][..n].copy_from_slice(&dst[i * dst_stride..][..n]);
        }
        matmul_into(m, cols, k, &mut out, cols, a, View::rows(&rhs, cols), accumulate);
        for i in 0..m {
            dst[i * dst_stride..][..n].copy_from_slice(&out[i * cols..][..n]);
        }
        return;
    }
    for k0 in (0..k).step_by(DEPTH) {
        let kc = DEPTH.min(k - k0);
        // SAFETY: the assertion above keeps every index the kernel reads or writes in bounds
        // of its slice (the chunk's operands start k0 columns of a, k0 rows of b in); `dst`
        // is borrowed mutably, so it does not alias `a` or `b`.
        unsafe {
            gemm::gemm(
                m,
                n,
                kc,
                dst.as_mut_ptr(),
                1,
                dst_stride as isize,
                accumulate || k0 > 0,
                a.data.as_ptr().add(k0 * a.cs),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(k0 * b.rs),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry (i, j) as every product here must compute it, whatever the `gemm` kernel the CPU
    /// runs (AVX-512 or FMA) and whatever m and n: per depth chunk of [`DEPTH`], a fused
    /// multiply–add chain from zero in depth order, the chunks' sums added in order.
    fn reference(k: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
        let mut total = 0.0f32;
        for k0 in (0..k).step_by(DEPTH) {
            let chunk = (k0..(k0 + DEPTH).min(k)).fold(0.0f32, |acc, p| a(p).mul_add(b(p), acc));
            total = if k0 == 0 { chunk } else { total + chunk };
        }
        total
    }

    #[test]
    fn every_entry_is_one_fused_chain_in_depth_order() {
        // Values with full mantissas, so that any other order or an unfused step shows.
        let value = |i: usize| ((i as f32 * 0.618_034).fract() - 0.5) * 1.3;
        for (m, n, k) in [(2, 2, 1), (7, 3, 37), (64, 6, 512), (130, 50, 513), (1, 9, 100), (5, 1, 1100)] {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 7)).collect();
            for transposed in [false, true] {
                let (bv, at): (View, Box<dyn Fn(usize, usize) -> f32 + '_>) = if transposed {
                    (View::transposed(&b, k), Box::new(|p: usize, j: usize| b[j * k + p]))
                } else {
                    (View::rows(&b, n), Box::new(|p: usize, j: usize| b[p * n + j]))
                };
                let mut d = vec![0.0f32; m * n];
                matmul(m, n, k, &mut d, View::rows(&a, k), bv, false);
                for i in 0..m {
                    for j in 0..n {
                        let want = reference(k, |p| a[i * k + p], |p| at(p, j));
                        assert_eq!(
                            d[i * n + j].to_bits(),
                            want.to_bits(),
                            "{m}×{k}·{k}×{n} ({transposed}): ({i},{j})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn products_by_hand() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]; with the second transposed: [17 23; 39 53].
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [5.0f32, 6.0, 7.0, 8.0];
        let mut d = [0.0f32; 4];
        matmul(2, 2, 2, &mut d, View::rows(&a, 2), View::rows(&b, 2), false);
        assert_eq!(d, [19.0, 22.0, 43.0, 50.0]);
        matmul(2, 2, 2, &mut d, View::rows(&a, 2), View::transposed(&b, 2), false);
        assert_eq!(d, [17.0, 23.0, 39.0, 53.0]);
        // Accumulating adds onto the old values.
        matmul(2, 2, 2, &mut d, View::rows(&a, 2), View::transposed(&b, 2), true);
        assert_eq!(d, [34.0, 46.0, 78.0, 106.0]);
        // Into the second column of a 2×3 matrix, from the second column of a 2×3 operand:
        // [1 2; 3 4] · [6; 8] = [22; 50].
        let b3 = [0.0f32, 6.0, 0.0, 0.0, 8.0, 0.0];
        let mut d3 = [-1.0f32; 6];
        matmul_into(2, 1, 2, &mut d3[1..], 3, View::rows(&a, 2), View::strided(&b3[1..], 3), false);
        assert_eq!(d3, [-1.0, 22.0, -1.0, -1.0, 50.0, -1.0]);
    }
}
