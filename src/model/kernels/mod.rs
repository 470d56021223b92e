//! The CPU kernels' arithmetic on plain f32 slices: matrix products ([`gemm`]), convolutions
//! on channel-major blocks ([`conv`]), pooling sweeps over gather tables ([`pool`]) and the
//! nonlinearities' vectorised sweeps ([`act`]). Leaves: the ops ([`super::ops`]) and the CPU
//! executor ([`super::cpu_exec`]) call them; they call nothing of the graph.
//!
//! Layout: one block of n images, each node's values channel-major [C, n, H·W] (flat vectors
//! [n, F]).

/// `$sweep(args)` runs the `#[inline(always)]` loop `$body(args)`, on x86-64 CPUs with AVX2
/// compiled for it (8 lanes instead of SSE2's 4), and with AVX-512 where the CPU has it (16
/// lanes, and 32 vector registers, so that a long polynomial's constants stay in registers):
/// the same IEEE operations in the same order (no fused multiply–add), so the same bits.
macro_rules! avx2_sweep {
    ($(#[$doc:meta])* fn $sweep:ident / $wide:ident = $body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        fn $sweep($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn widest($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { widest($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { $wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $wide($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
}

pub(crate) mod act;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod pool;

use std::sync::Arc;

/// One node's values in a block.
pub(crate) type Buf = Arc<Vec<f32>>;

/// [a, b, len] → [b, a, len].
pub(crate) fn transpose(x: &[f32], a: usize, b: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a * b * len];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * len..][..len].copy_from_slice(&x[(i * b + j) * len..][..len]);
        }
    }
    out
}
