//! β-smoothing (Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
//! NeurIPS 2019, Section 5): a backpropagation method's map computed on the network with every
//! ReLU replaced by softplus_β(z) = ln(1 + e^{βz})/β, forward and backward, while the
//! prediction stays the real network's.
//!
//! Why: the geometry of a ReLU network's decision surface (its large curvature) is what lets a
//! small perturbation move a gradient map anywhere; the softplus network's maps change slowly,
//! and Dombrowski et al. show (their Theorem 2) that its gradient map approximates SmoothGrad's.
//! Smaller β is smoother (and further from the real network); β → ∞ is the real map.
//!
//! A smoothed method is named `<method>_beta_smooth<β>` (`gradient_beta_smooth3`,
//! `lrp_epsilon_plus_flat_beta_smooth10`), in `fragility explain --methods` (or with
//! `--beta-smooth β`, which smooths every listed method) and in a study's `[methods] names`,
//! so that one study can set several β beside the unsmoothed map and no output ever labels a
//! smoothed map with the plain method's name. Every method computed by backpropagation can be
//! smoothed (those that are [`Attribution::differentiable`]: gradient, gradient × input,
//! integrated gradients, the noise tunnels over them, guided backprop, deconvnet, DeepLIFT, LRP,
//! Grad-CAM and the differentiable CAMs, guided Grad-CAM); the forward-only methods (occlusion,
//! LIME, KernelSHAP, Score-CAM, Ablation-CAM, EigenCAM) are refused.
//!
//! "Every ReLU" means every nonlinearity with kinks, each through its softplus construction
//! ([`crate::model::Activation::Softplus`]: ReLU6, leaky ReLU, HardSigmoid and HardSwish
//! included); smooth ones (SiLU, GELU, sigmoid, tanh) are unchanged. The target class and
//! everything an attack checks (the label, the logits, the metrics' maps) come from the real
//! network: the wrapper passes the smoothed activation to the wrapped method and never hands
//! on the logits its pass computed. Its maps are differentiable functions of the input with
//! their exact derivatives (the softplus network is smooth), so attacks steer them directly.
//!
//! zennit 0.5.1's `BetaSmooth` composite differs: it keeps the ReLU forward pass and replaces
//! only the ReLU's derivative by sigmoid(βz) (its `ReLUBetaSmooth` hook), which leaves LRP
//! unchanged (relevance passes activations) and computes the activations of the real network.
//! This module follows the paper (the softplus network, as the authors' code
//! `convert_relu_to_softplus` does); the tests check it against PyTorch autograd through the
//! softplus network and against zennit's LRP on it (scripts/beta_smooth_fixtures.py).
//!
//! Shapes: as the wrapped method (x [B,C,H,W] → [B,C,H,W], a CAM [B,1,H,W]).

use super::Attribution;
use crate::error::{Error, Result};
use crate::model::{Activation, Classifier};
use candle_core::Tensor;
use std::sync::Arc;

/// The name suffix before β.
pub const SUFFIX: &str = "_beta_smooth";

/// What an "unknown method" message adds after the list of names.
pub const HINT: &str =
    "; and each backpropagation method on the softplus(β) network: `<method>_beta_smooth<β>`";

/// A method by name, as `make` builds a plain one, or `<method>_beta_smooth<β>` around the
/// method `make` builds; the error says why a name builds nothing.
pub fn resolve(
    name: &str,
    make: &dyn Fn(&str) -> Option<Arc<dyn Attribution>>,
    known: &[&str],
) -> std::result::Result<Arc<dyn Attribution>, String> {
    if let Some(m) = make(name) {
        return Ok(m);
    }
    let Some(split) = split(name) else {
        return Err(format!("unknown method `{name}` (known: {}{HINT})", known.join(", ")));
    };
    let (inner, beta) = split?;
    let inner = resolve(inner, make, known)?;
    BetaSmooth::new(beta, inner).map(|m| Arc::new(m) as _).map_err(|e| format!("`{name}`: {e}"))
}

/// A method computed on the softplus(β) network.
pub struct BetaSmooth {
    /// softplus's β (> 0): smaller is smoother.
    pub beta: f64,
    /// The wrapped method.
    pub inner: Arc<dyn Attribution>,
    /// `<inner>_beta_smooth<β>`.
    name: String,
}

impl BetaSmooth {
    /// `inner` smoothed with `beta`; refused for a β that is not finite and positive, and for
    /// a method not computed by backpropagation.
    pub fn new(beta: f64, inner: Arc<dyn Attribution>) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::Invalid(format!("β-smoothing: β must be finite and > 0, not {beta}")));
        }
        if !inner.differentiable() {
            return Err(Error::Invalid(format!(
                "β-smoothing applies to methods computed by backpropagation; `{}` is not one",
                inner.name()
            )));
        }
        let name = name_of(inner.name(), beta);
        Ok(Self { beta, inner, name })
    }

    fn act(&self) -> Activation {
        Activation::Softplus { beta: self.beta }
    }
}

/// The name of `method` smoothed with `beta`: `gradient_beta_smooth3`, `…_beta_smooth0.5`.
pub fn name_of(method: &str, beta: f64) -> String {
    format!("{method}{SUFFIX}{beta}")
}

/// Splits `gradient_beta_smooth3` into the method and β; `None` where the name has no
/// suffix. A suffix whose β does not parse is an error that says so.
pub fn split(name: &str) -> Option<std::result::Result<(&str, f64), String>> {
    let (method, beta) = name.rsplit_once(SUFFIX)?;
    Some(match beta.parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 && !method.is_empty() => Ok((method, b)),
        _ => Err(format!("`{name}`: β-smoothing needs a β > 0 after `{SUFFIX}` (e.g. `{method}{SUFFIX}3`)")),
    })
}

impl Attribution for BetaSmooth {
    fn name(&self) -> &str {
        &self.name
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        _act: Activation,
    ) -> Result<Tensor> {
        self.inner.attribute(model, x, targets, self.act())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "beta_smooth": self.beta, "method": self.inner.name(), "method_params": self.inner.params(),
        })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.inner.check(model)
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn passes_per_image(&self) -> usize {
        self.inner.passes_per_image()
    }

    fn attribute_anchored(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        anchor: &Tensor,
        targets: &[u32],
        _act: Activation,
    ) -> Result<Tensor> {
        self.inner.attribute_anchored(model, x, anchor, targets, self.act())
    }

    // The default: the map alone. The wrapped pass's logits are the softplus network's, and a
    // caller must never take them for the model's (the label check, the prediction).

    fn has_map_vjp(&self) -> bool {
        self.inner.has_map_vjp()
    }

    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        anchor: &Tensor,
        targets: &[u32],
        _act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.inner.map_then_vjp(model, x, anchor, targets, self.act(), loss_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Gradient, Occlusion};

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        assert_eq!(name_of("gradient", 3.0), "gradient_beta_smooth3");
        assert_eq!(name_of("gradient", 0.5), "gradient_beta_smooth0.5");
        assert_eq!(split("gradient_beta_smooth3"), Some(Ok(("gradient", 3.0))));
        assert_eq!(
            split("lrp_epsilon_alpha2_beta1_beta_smooth10"),
            Some(Ok(("lrp_epsilon_alpha2_beta1", 10.0)))
        );
        assert_eq!(split("lrp_epsilon_alpha2_beta1"), None);
        for bad in
            ["gradient_beta_smooth", "gradient_beta_smooth0", "gradient_beta_smooth-1", "_beta_smooth3"]
        {
            assert!(matches!(split(bad), Some(Err(_))), "{bad}");
        }
        assert!(BetaSmooth::new(3.0, Arc::new(Occlusion::default())).is_err());
        assert!(BetaSmooth::new(f64::INFINITY, Arc::new(Gradient)).is_err());
        let s = BetaSmooth::new(3.0, Arc::new(Gradient)).unwrap();
        assert_eq!(s.name(), "gradient_beta_smooth3");
        assert_eq!(s.params()["beta_smooth"], 3.0);
    }
}
