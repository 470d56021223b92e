//! Single-threaded matrix products into caller-owned buffers, through the `gemm` crate (the
//! one candle itself uses). The parallelism is over blocks of images, one rayon task each, so
//! every product inside a task runs alone and the float operations do not depend on the
//! number of threads.

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

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

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
    // SAFETY: the assertion above keeps every index the kernel reads or writes in bounds of
    // its slice; `dst` is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
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

#[cfg(test)]
mod tests {
    use super::*;

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
