//! The LRP rules of one layer, as zennit 0.5.1's `rules.py` defines them, each written once as
//! a list of terms that [`super::pass`] evaluates on any executor.
//!
//! A rule is one or more groups; a group is a sum of terms. Term k reads a modified input
//! mₖ(x) (x itself, its positive or negative part, ones, or the box bounds) through the layer
//! with modified parameters Vₖ (the weights' positive part, …; with or without the bias):
//! outₖ = Vₖ mₖ(x) (+ bₖ). With z = Σₖ σₖ outₖ (σₖ = ±1) and s = R ⊙ mask / stab(z),
//!
//!   R_in = Σ_groups coef · Σₖ σₖ mₖ(x) ⊙ Vₖᵀ s,     stab(z) = z + ε·(sign z + [z = 0]).
//!
//! | rule     | terms (input, parameters, bias)                                       |
//! |----------|-----------------------------------------------------------------------|
//! | ε        | (x, W, b)                                                             |
//! | Norm     | (x, the op itself) — residual sums, average pooling                   |
//! | z⁺       | (x⁺, W⁺, b⁺) + (x⁻, W⁻, 0)                                            |
//! | α-β      | α·[(x⁺, W⁺, b⁺) + (x⁻, W⁻, 0)] − β·[(x⁺, W⁻, b⁻) + (x⁻, W⁺, 0)]       |
//! | γ        | [(x⁺, W+γW⁺, b+γb⁺) + (x⁻, W+γW⁻, 0)] where Wx+b > 0, and              |
//! |          | [(x⁺, W+γW⁻, b+γb⁻) + (x⁻, W+γW⁺, 0)] where Wx+b < 0                   |
//! | z^B      | (x, W, b) − (l, W⁺, b⁺) − (h, W⁻, b⁻), l and h the box's bounds       |
//! | flat     | (1, 1, 0)                                                             |
//! | w²       | (1, W², b²)                                                           |
//!
//! (zennit writes the same with `input_modifiers`, `param_modifiers`, `gradient_mapper` and
//! `reducer`; its generalised γ rule for negative inputs is the one above. Its `WSquare`
//! squares every parameter, the bias included, and keeps it: w² here does the same, where the
//! textbook rule (Montavon et al. 2017) has no bias.)

use crate::error::Result;
use candle_core::Tensor;

/// One LRP rule with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LrpRule {
    /// ε (LRP-0 as ε → 0), with the given ε.
    Epsilon(f32),
    /// Norm: ε as a stabiliser on an op without parameters.
    Norm(f32),
    /// z⁺ (α = 1, β = 0), with its stabiliser.
    ZPlus(f32),
    /// α-β (α − β = 1).
    AlphaBeta { alpha: f32, beta: f32, stabilizer: f32 },
    /// Generalised γ.
    Gamma { gamma: f32, stabilizer: f32 },
    /// z^B with the layer's per-channel input box.
    ZBox(f32),
    /// Flat: every weight one, no bias, input ones.
    Flat(f32),
    /// w²: the weights (and the bias) squared, input ones.
    WSquare(f32),
}

/// The input a term reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputMod {
    /// x.
    Same,
    /// max(x, 0).
    Pos,
    /// min(x, 0).
    Neg,
    /// Ones.
    Ones,
    /// The box's lower bounds (per channel).
    Low,
    /// The box's upper bounds (per channel).
    High,
}

impl InputMod {
    /// Whether the term's input depends on x (the others are constants).
    pub fn reads_x(self) -> bool {
        matches!(self, InputMod::Same | InputMod::Pos | InputMod::Neg)
    }
}

/// A modification of a layer's parameters (weight and bias alike, as zennit's `ParamMod`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ParamMod {
    /// max(θ, 0).
    Pos,
    /// min(θ, 0).
    Neg,
    /// θ + γ·max(θ, 0).
    GammaPos(f32),
    /// θ + γ·min(θ, 0).
    GammaNeg(f32),
    /// Ones (the bias zero).
    Ones,
    /// θ² (weight and bias alike, as zennit's `WSquare`).
    Square,
}

impl ParamMod {
    /// The modified parameter `t` (`bias` tells which one it is).
    pub fn apply(self, t: &Tensor, bias: bool) -> Result<Tensor> {
        let neg = |t: &Tensor| -> Result<Tensor> { Ok(t.sub(&t.relu()?)?) };
        Ok(match self {
            ParamMod::Pos => t.relu()?,
            ParamMod::Neg => neg(t)?,
            ParamMod::GammaPos(g) => t.add(&t.relu()?.affine(f64::from(g), 0.0)?)?,
            ParamMod::GammaNeg(g) => t.add(&neg(t)?.affine(f64::from(g), 0.0)?)?,
            ParamMod::Ones if bias => t.zeros_like()?,
            ParamMod::Ones => t.ones_like()?,
            ParamMod::Square => t.sqr()?,
        })
    }
}

/// The layer a term runs: the op itself or its modified copy `k` (in [`LrpRule::params`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weights {
    /// The op's own parameters.
    Own,
    /// Modified copy k.
    Modified(usize),
}

/// One term: σ · m(x) through the layer's (modified) parameters, with or without the bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Term {
    pub input: InputMod,
    pub weights: Weights,
    pub bias: bool,
    pub sign: f32,
}

/// Where a value is kept: a γ group's outputs by the sign of the layer's own output
/// y = Wx + b (> 0, < 0); the adjoint's slopes of x⁺ (x ≥ 0: the right derivative at 0, as
/// autograd's ReLU takes it, the side a pixel at 0 can move to) and x⁻ (x < 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mask {
    /// y > 0.
    Positive,
    /// y < 0.
    Negative,
    /// y ≥ 0.
    NonNegative,
}

/// Terms sharing one denominator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub terms: Vec<Term>,
    pub coef: f32,
    pub mask: Option<Mask>,
    pub stabilizer: f32,
}

const fn term(input: InputMod, weights: Weights, bias: bool, sign: f32) -> Term {
    Term { input, weights, bias, sign }
}

impl LrpRule {
    /// The modified parameter copies the rule's terms run ([`Weights::Modified`] indexes
    /// them).
    pub fn params(self) -> Vec<ParamMod> {
        match self {
            LrpRule::Epsilon(_) | LrpRule::Norm(_) => vec![],
            LrpRule::ZPlus(_) | LrpRule::AlphaBeta { .. } | LrpRule::ZBox(_) => {
                vec![ParamMod::Pos, ParamMod::Neg]
            }
            LrpRule::Gamma { gamma, .. } => vec![ParamMod::GammaPos(gamma), ParamMod::GammaNeg(gamma)],
            LrpRule::Flat(_) => vec![ParamMod::Ones],
            LrpRule::WSquare(_) => vec![ParamMod::Square],
        }
    }

    /// The rule's groups (see the module docs).
    pub fn groups(self) -> Vec<Group> {
        use InputMod::{High, Low, Neg, Ones, Pos, Same};
        use Weights::{Modified as M, Own};
        let group = |terms: Vec<Term>, coef: f32, mask: Option<Mask>, stabilizer: f32| Group {
            terms,
            coef,
            mask,
            stabilizer,
        };
        // (x⁺ through copy a with its bias) + (x⁻ through copy b without).
        let split = |a: usize, b: usize| vec![term(Pos, M(a), true, 1.0), term(Neg, M(b), false, 1.0)];
        match self {
            LrpRule::Epsilon(e) | LrpRule::Norm(e) => {
                vec![group(vec![term(Same, Own, true, 1.0)], 1.0, None, e)]
            }
            LrpRule::ZPlus(s) => vec![group(split(0, 1), 1.0, None, s)],
            LrpRule::AlphaBeta { alpha, beta, stabilizer } => {
                vec![group(split(0, 1), alpha, None, stabilizer), group(split(1, 0), -beta, None, stabilizer)]
            }
            LrpRule::Gamma { stabilizer, .. } => vec![
                group(split(0, 1), 1.0, Some(Mask::Positive), stabilizer),
                group(split(1, 0), 1.0, Some(Mask::Negative), stabilizer),
            ],
            LrpRule::ZBox(s) => vec![group(
                vec![term(Same, Own, true, 1.0), term(Low, M(0), true, -1.0), term(High, M(1), true, -1.0)],
                1.0,
                None,
                s,
            )],
            LrpRule::Flat(s) => vec![group(vec![term(Ones, M(0), false, 1.0)], 1.0, None, s)],
            LrpRule::WSquare(s) => vec![group(vec![term(Ones, M(0), true, 1.0)], 1.0, None, s)],
        }
    }
}
