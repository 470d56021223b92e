//! The CPU kernels' arithmetic on plain f32 slices: matrix products ([`gemm`]), convolutions
//! on channel-major blocks ([`conv`]), pooling sweeps over gather tables ([`pool`]) and the
//! nonlinearities' vectorised sweeps ([`act`]). Leaves: the ops ([`super::ops`]) and the CPU
//! executor ([`super::cpu_exec`]) call them; they call nothing of the graph.
//!
//! Layout: one block of n images, each node's values channel-major [C, n, H·W] (flat vectors
//! [n, F]).

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
