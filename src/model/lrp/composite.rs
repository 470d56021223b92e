//! The composites: which LRP rule each layer gets, named and assigned as zennit 0.5.1's
//! `composites.py` does, with their settings.
//!
//! Every composite gives the activations, batch norms and affine maps `Pass`, residual sums
//! and average pooling `Norm` (zennit's `layer_map_base`), max-pooling its gradient (winner
//! takes all), dense layers ε; they differ in the convolutions and in the first layer:
//!
//! | name                            | first layer              | other convolutions |
//! |---------------------------------|--------------------------|--------------------|
//! | `lrp_epsilon_plus`              | (as the others)          | z⁺                 |
//! | `lrp_epsilon_plus_flat`         | flat (conv or dense)     | z⁺                 |
//! | `lrp_epsilon_gamma_box`         | z^B (first convolution)  | γ                  |
//! | `lrp_epsilon_alpha2_beta1`      | (as the others)          | α2-β1              |
//! | `lrp_epsilon_alpha2_beta1_flat` | flat (conv or dense)     | α2-β1              |
//!
//! "First layer" is the first convolution or dense layer in graph order (zennit: the first
//! module of those types in module order, the same layer for every torchvision network).
//! A composite's `first_layer` setting replaces its first-layer rule by w² or flat (zennit's
//! `SpecialFirstLayerMapComposite` with that rule as `first_map`).

use serde::Serialize;

/// One of zennit's composites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompositeKind {
    /// zennit's `EpsilonPlus`.
    EpsilonPlus,
    /// zennit's `EpsilonPlusFlat`.
    EpsilonPlusFlat,
    /// zennit's `EpsilonGammaBox`.
    EpsilonGammaBox,
    /// zennit's `EpsilonAlpha2Beta1`.
    EpsilonAlpha2Beta1,
    /// zennit's `EpsilonAlpha2Beta1Flat`.
    EpsilonAlpha2Beta1Flat,
}

/// Every composite, in the order docs/methods.md lists them.
pub const COMPOSITES: [CompositeKind; 5] = [
    CompositeKind::EpsilonPlus,
    CompositeKind::EpsilonPlusFlat,
    CompositeKind::EpsilonGammaBox,
    CompositeKind::EpsilonAlpha2Beta1,
    CompositeKind::EpsilonAlpha2Beta1Flat,
];

impl CompositeKind {
    /// The method name (`lrp_epsilon_plus_flat`).
    pub fn name(self) -> &'static str {
        match self {
            CompositeKind::EpsilonPlus => "lrp_epsilon_plus",
            CompositeKind::EpsilonPlusFlat => "lrp_epsilon_plus_flat",
            CompositeKind::EpsilonGammaBox => "lrp_epsilon_gamma_box",
            CompositeKind::EpsilonAlpha2Beta1 => "lrp_epsilon_alpha2_beta1",
            CompositeKind::EpsilonAlpha2Beta1Flat => "lrp_epsilon_alpha2_beta1_flat",
        }
    }

    /// The composite a method name names.
    pub fn by_name(name: &str) -> Option<Self> {
        COMPOSITES.into_iter().find(|k| k.name() == name)
    }

    /// Whether the first layer gets the flat rule.
    pub(crate) fn flat_first(self) -> bool {
        matches!(self, CompositeKind::EpsilonPlusFlat | CompositeKind::EpsilonAlpha2Beta1Flat)
    }
}

/// A first-layer rule that replaces the composite's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstLayer {
    /// w² (Montavon et al. 2017; zennit's `WSquare`: every parameter squared, bias included),
    /// for unbounded inputs.
    WSquare,
    /// Flat (Lapuschkin et al. 2019; zennit's `Flat`).
    Flat,
}

/// A composite with its settings (zennit's defaults by [`Composite::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Composite {
    /// Which composite.
    pub kind: CompositeKind,
    /// ε of the dense layers' ε rule: z + ε·(sign z + [z = 0]) in the denominator.
    pub epsilon: f32,
    /// The same shift in every other rule's denominator (a stabiliser only).
    pub stabilizer: f32,
    /// γ of the γ rule (`lrp_epsilon_gamma_box`).
    pub gamma: f32,
    /// The z^B rule's box in pixel space (`lrp_epsilon_gamma_box`): the lowest and highest
    /// input values. The model's own input normalisation (its affine first nodes) maps them
    /// per channel to the first convolution's input, as zennit's users pass normalised bounds.
    pub low: f32,
    /// The box's upper end (see `low`).
    pub high: f32,
    /// The first layer's rule in place of the composite's own (unset: the composite's; a run's
    /// record names it only where set, see `Lrp::params`).
    pub first_layer: Option<FirstLayer>,
}

impl Composite {
    /// `kind` with zennit's defaults: ε = stabiliser = 1e-6, γ = 0.25, and the box [0, 1] of
    /// this harness's pixels.
    pub fn of(kind: CompositeKind) -> Self {
        Self { kind, epsilon: 1e-6, stabilizer: 1e-6, gamma: 0.25, low: 0.0, high: 1.0, first_layer: None }
    }

    /// Checks the settings: ε and the stabiliser finite and > 0, γ finite and ≥ 0, low < high.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [("epsilon", self.epsilon), ("stabilizer", self.stabilizer)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be finite and > 0, got {v}"));
            }
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(format!("gamma must be finite and ≥ 0, got {}", self.gamma));
        }
        if !(self.low.is_finite() && self.high.is_finite() && self.low < self.high) {
            return Err(format!("the box needs finite low < high, got [{}, {}]", self.low, self.high));
        }
        Ok(())
    }
}
