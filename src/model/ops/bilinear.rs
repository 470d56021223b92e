//! Per-head matrix products: the arithmetic of the two attention ops that multiply two
//! activations, [`super::Scores`] (q·kᵀ) and [`super::Attend`] (a·v), written once for both
//! and for both executors.
//!
//! What: a token map Map(C, T, 1) (see [`crate::model::shape::Shape`]) is read as `heads`
//! matrices of C/heads rows (features) by T columns (tokens), head h holding channels
//! h·C/heads .. (h+1)·C/heads; Scores' output Map(heads·T, T, 1) is the same reading with
//! C = heads·T: per head a [T, T] matrix, row = key j, column = query i. A [`Bilinear`] op is
//! y = s · op(X) · op(Y) per head, X and Y two of the op's inputs and op the identity or the
//! transpose; the product of head h goes to the output's head h.
//!
//! Why one file: both ops are bilinear, so everything about them follows from the product
//! (as in [`super::mul`]): with A = op(X), B = op(Y), G the output's gradient,
//! * forward y = s·A·B; tangent s·Ȧ·B + s·A·Ḃ;
//! * vector–Jacobian product: ∂A = s·G·Bᵀ and ∂B = s·Aᵀ·G (transposed back where op is);
//! * second order (the attacks' adjoint, see [`super::Layer::tensor_second`]): ⟨vjp(g), λ⟩ =
//!   ⟨∂A(g; B), λ_A⟩ + ⟨∂B(g; A), λ_B⟩ is linear in each input, and its gradient with respect
//!   to X is the vector–Jacobian product with Y replaced by its tangent λ_Y (and vice versa).
//!
//! Layouts: on the tensor path a map [B, C, T, 1] is reshaped to [B, heads, C/heads, T] and
//! candle's batched matmul runs all heads at once. On the CPU a block [C, n, T] holds head h
//! of image b as a [C/heads, T] matrix starting at (h·C/heads·n + b)·T with rows n·T apart,
//! which the crate's GEMM ([`crate::model::kernels::gemm`]) reads in place (transposed by its
//! strides): one small product per image and head, each the same arithmetic whatever the
//! block's size, so results do not depend on how a batch is split.

use super::{CpuCx, TensorCx};
use crate::error::{Error, Result};
use crate::model::kernels::gemm::{matmul_into, View};
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// The passes of a [`Layer`](super::Layer) whose arithmetic is its `bilinear()` product
/// (inside `impl Layer for …` of [`super::Scores`] and [`super::Attend`]): nonlinear, keeps
/// both inputs; forward, tangent, vector–Jacobian product and second-order terms on both
/// executors, each the product's (see the module docs).
macro_rules! bilinear_passes {
    () => {
        fn nonlinear(&self) -> bool {
            true
        }

        fn tensor_forward(
            &self,
            cx: &mut super::TensorCx,
            ins: &[&candle_core::Tensor],
            _rank: Option<&candle_core::Tensor>,
        ) -> crate::error::Result<(candle_core::Tensor, Option<candle_core::Tensor>)> {
            Ok((self.bilinear().forward(&mut super::bilinear::TensorMats::new(cx), cx.ins, ins)?, None))
        }

        fn tensor_tangent(
            &self,
            cx: &mut super::TensorCx,
            ins: &[&candle_core::Tensor],
            kept: &super::TensorKept,
        ) -> crate::error::Result<candle_core::Tensor> {
            let kept = super::bilinear::kept_pair(|m| cx.error(m), kept.inputs)?;
            self.bilinear().tangent(&mut super::bilinear::TensorMats::new(cx), cx.ins, ins, &kept)
        }

        fn tensor_vjp(
            &self,
            cx: &mut super::TensorCx,
            g: &candle_core::Tensor,
            kept: &super::TensorKept,
        ) -> crate::error::Result<Vec<candle_core::Tensor>> {
            let kept = super::bilinear::kept_pair(|m| cx.error(m), kept.inputs)?;
            self.bilinear().grads(&mut super::bilinear::TensorMats::new(cx), (cx.ins, cx.out), g, &kept)
        }

        fn tensor_second(
            &self,
            cx: &mut super::TensorCx,
            g: &candle_core::Tensor,
            lam: &[&candle_core::Tensor],
            _kept: &super::TensorKept,
        ) -> crate::error::Result<Vec<Option<candle_core::Tensor>>> {
            let s =
                self.bilinear().grads(&mut super::bilinear::TensorMats::new(cx), (cx.ins, cx.out), g, lam)?;
            Ok(s.into_iter().map(Some).collect())
        }

        fn cpu_forward(
            &self,
            cx: &mut super::CpuCx,
            ins: &[&crate::model::kernels::Buf],
            _rank: Option<&crate::model::kernels::Buf>,
        ) -> crate::error::Result<(crate::model::kernels::Buf, Option<Vec<u32>>)> {
            Ok((self.bilinear().forward(&mut super::bilinear::CpuMats::new(cx), cx.ins, ins)?, None))
        }

        fn cpu_tangent(
            &self,
            cx: &mut super::CpuCx,
            ins: &[&crate::model::kernels::Buf],
            kept: &super::CpuKept,
        ) -> crate::error::Result<crate::model::kernels::Buf> {
            let kept = super::bilinear::kept_pair(|m| cx.error(m), kept.inputs)?;
            self.bilinear().tangent(&mut super::bilinear::CpuMats::new(cx), cx.ins, ins, &kept)
        }

        fn cpu_vjp(
            &self,
            cx: &mut super::CpuCx,
            g: &crate::model::kernels::Buf,
            kept: &super::CpuKept,
        ) -> crate::error::Result<Vec<crate::model::kernels::Buf>> {
            let kept = super::bilinear::kept_pair(|m| cx.error(m), kept.inputs)?;
            self.bilinear().grads(&mut super::bilinear::CpuMats::new(cx), (cx.ins, cx.out), g, &kept)
        }

        fn cpu_second(
            &self,
            cx: &mut super::CpuCx,
            g: &crate::model::kernels::Buf,
            lam: &[&crate::model::kernels::Buf],
            _kept: &super::CpuKept,
        ) -> crate::error::Result<Vec<Option<crate::model::kernels::Buf>>> {
            let s =
                self.bilinear().grads(&mut super::bilinear::CpuMats::new(cx), (cx.ins, cx.out), g, lam)?;
            Ok(s.into_iter().map(Some).collect())
        }
    };
}
pub(super) use bilinear_passes;

/// One factor of a product: which input of the op, transposed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Factor {
    /// The op's input (0 or 1).
    pub input: usize,
    /// Whether its per-head matrices enter transposed.
    pub t: bool,
}

/// y = s · op(X) · op(Y) per head (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Bilinear {
    /// Heads.
    pub heads: usize,
    /// The factor s.
    pub scale: f64,
    /// The left factor X.
    pub x: Factor,
    /// The right factor Y.
    pub y: Factor,
}

/// One operand of a product: values, their node's shape, transposed or not.
type Operand<'a, B> = (&'a B, Shape, bool);

/// The per-head products on one executor's buffers.
pub(super) trait Mats {
    /// A node's values.
    type B: Clone;

    /// s · op(a) · op(b) per head, as a map Map(heads·m, n, 1).
    fn product(&mut self, heads: usize, s: f64, a: Operand<Self::B>, b: Operand<Self::B>) -> Result<Self::B>;

    /// a + b.
    fn add(&mut self, a: Self::B, b: Self::B) -> Result<Self::B>;
}

/// (rows, columns) of each head's matrix of a map of `shape`.
fn head_dims(shape: Shape, heads: usize) -> Result<(usize, usize)> {
    let (c, r, _) = shape.map().map_err(Error::Invalid)?;
    Ok((c / heads.max(1), r))
}

impl Bilinear {
    /// y from the values `x` of X and `y` of Y; `ins` the inputs' shapes, `out` the output's.
    fn apply<M: Mats>(&self, m: &mut M, ins: &[Shape], x: &M::B, y: &M::B) -> Result<M::B> {
        let (fx, fy) = (self.x, self.y);
        m.product(self.heads, self.scale, (x, ins[fx.input], fx.t), (y, ins[fy.input], fy.t))
    }

    /// The gradient with respect to X from the output's gradient `g` and Y's values `y`.
    fn grad_x<M: Mats>(&self, m: &mut M, (ins, out): (&[Shape], Shape), g: &M::B, y: &M::B) -> Result<M::B> {
        let (sy, ty) = (ins[self.y.input], self.y.t);
        if self.x.t {
            // ∂X = (s·G·Bᵀ)ᵀ = s·B·Gᵀ.
            m.product(self.heads, self.scale, (y, sy, ty), (g, out, true))
        } else {
            m.product(self.heads, self.scale, (g, out, false), (y, sy, !ty))
        }
    }

    /// The gradient with respect to Y from `g` and X's values `x`.
    fn grad_y<M: Mats>(&self, m: &mut M, (ins, out): (&[Shape], Shape), g: &M::B, x: &M::B) -> Result<M::B> {
        let (sx, tx) = (ins[self.x.input], self.x.t);
        if self.y.t {
            // ∂Y = (s·Aᵀ·G)ᵀ = s·Gᵀ·A.
            m.product(self.heads, self.scale, (g, out, true), (x, sx, tx))
        } else {
            m.product(self.heads, self.scale, (x, sx, !tx), (g, out, false))
        }
    }

    /// The inputs `ins` (in the op's order) as (X, Y).
    fn pick<'b, B>(&self, ins: &[&'b B]) -> (&'b B, &'b B) {
        (ins[self.x.input], ins[self.y.input])
    }

    /// Per-input values from values for X and for Y, in the op's order.
    fn order<B>(&self, for_x: B, for_y: B) -> Vec<B> {
        if self.x.input == 0 {
            vec![for_x, for_y]
        } else {
            vec![for_y, for_x]
        }
    }

    /// The forward pass from the inputs `ins`.
    pub fn forward<M: Mats>(&self, m: &mut M, shapes: &[Shape], ins: &[&M::B]) -> Result<M::B> {
        let (x, y) = self.pick(ins);
        self.apply(m, shapes, x, y)
    }

    /// The tangent at the kept inputs `kept` of the inputs' tangents `tan`.
    pub fn tangent<M: Mats>(
        &self,
        m: &mut M,
        shapes: &[Shape],
        tan: &[&M::B],
        kept: &[&M::B],
    ) -> Result<M::B> {
        let ((dx, dy), (x, y)) = (self.pick(tan), self.pick(kept));
        let a = self.apply(m, shapes, dx, y)?;
        let b = self.apply(m, shapes, x, dy)?;
        m.add(a, b)
    }

    /// The gradients of both inputs (in the op's order) from `g`; with the kept inputs as
    /// `other` this is the vector–Jacobian product, with their tangents λ the second-order
    /// terms (see the module docs).
    pub fn grads<M: Mats>(
        &self,
        m: &mut M,
        shapes: (&[Shape], Shape),
        g: &M::B,
        other: &[&M::B],
    ) -> Result<Vec<M::B>> {
        let (x, y) = self.pick(other);
        let gx = self.grad_x(m, shapes, g, y)?;
        let gy = self.grad_y(m, shapes, g, x)?;
        Ok(self.order(gx, gy))
    }
}

/// [`Mats`] on the candle tensor path, for a batch of `batch` images.
pub(super) struct TensorMats {
    batch: usize,
}

impl TensorMats {
    /// For the batch of the node `cx` runs.
    pub fn new(cx: &TensorCx) -> Self {
        Self { batch: cx.batch }
    }
}

impl Mats for TensorMats {
    type B = Tensor;

    fn product(
        &mut self,
        heads: usize,
        s: f64,
        (a, sa, ta): Operand<Tensor>,
        (b, sb, tb): Operand<Tensor>,
    ) -> Result<Tensor> {
        let batch = self.batch;
        let mat = |t: &Tensor, shape: Shape, tr: bool| -> Result<Tensor> {
            let (r, c) = head_dims(shape, heads)?;
            let m = t.reshape((batch, heads, r, c))?;
            Ok(if tr { m.transpose(2, 3)?.contiguous()? } else { m })
        };
        let y = mat(a, sa, ta)?.matmul(&mat(b, sb, tb)?)?;
        let (_, _, m, n) = y.dims4()?;
        let y = if s == 1.0 { y } else { (y * s)? };
        Ok(y.reshape((batch, heads * m, n, 1))?)
    }

    fn add(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        Ok((a + b)?)
    }
}

/// [`Mats`] on the CPU kernels, for a block of `n` images.
pub(super) struct CpuMats {
    n: usize,
}

impl CpuMats {
    /// For the block the node `cx` runs.
    pub fn new(cx: &CpuCx) -> Self {
        Self { n: cx.n }
    }

    /// Head `h` of image `b` of a block of a map whose heads are `rows` × `cols`, as a GEMM
    /// operand (transposed when `tr`).
    fn view<'a>(
        &self,
        data: &'a [f32],
        (rows, cols): (usize, usize),
        (h, b): (usize, usize),
        tr: bool,
    ) -> View<'a> {
        let (base, stride) = ((h * rows * self.n + b) * cols, self.n * cols);
        if tr {
            View::transposed(&data[base..], stride)
        } else {
            View::strided(&data[base..], stride)
        }
    }
}

impl Mats for CpuMats {
    type B = Buf;

    fn product(
        &mut self,
        heads: usize,
        s: f64,
        (a, sa, ta): Operand<Buf>,
        (b, sb, tb): Operand<Buf>,
    ) -> Result<Buf> {
        let (da, db) = (head_dims(sa, heads)?, head_dims(sb, heads)?);
        let (m, k) = if ta { (da.1, da.0) } else { da };
        let (kb, n) = if tb { (db.1, db.0) } else { db };
        if k != kb {
            return Err(Error::Invalid(format!("internal: per-head product of {m}×{k} and {kb}×{n}")));
        }
        let mut out = vec![0.0f32; heads * m * self.n * n];
        for h in 0..heads {
            for img in 0..self.n {
                let (va, vb) = (self.view(a, da, (h, img), ta), self.view(b, db, (h, img), tb));
                let at = (h * m * self.n + img) * n;
                matmul_into(m, n, k, &mut out[at..], self.n * n, va, vb, false);
            }
        }
        if s != 1.0 {
            let s = s as f32;
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(Arc::new(out))
    }

    fn add(&mut self, a: Buf, b: Buf) -> Result<Buf> {
        Ok(Arc::new(a.iter().zip(b.iter()).map(|(u, v)| u + v).collect()))
    }
}

/// The kept inputs of a two-input nonlinear op, or an error naming the op.
pub(super) fn kept_pair<B>(err: impl Fn(&str) -> Error, kept: &[B]) -> Result<[&B; 2]> {
    match kept {
        [a, b] => Ok([a, b]),
        _ => Err(err("internal: a product without its kept inputs")),
    }
}
