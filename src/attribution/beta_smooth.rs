//! β-smoothing (Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
//! NeurIPS 2019, Section 5): a backpropagation method's map computed on the network with every
//! ReLU replaced by softplus_β(z) = ln(1 + e^{βz})/β, forward and backward, while the
//! prediction stays the real network's.
//!
//! Why: the geometry of a ReLU network's decision surface (its large curvature) is what lets a
//! small perturbation move a gradient map anywhere; the softplus network's maps change slowly,
//! and Dombrowski et al. relate its gradient map to SmoothGrad's (for a network of one layer,
//! a SmoothGrad under a particular noise distribution).
//! Smaller β is smoother (and further from the real network); β → ∞ is the real map.
//!
//! A smoothed method is named `<method>_beta_smooth<β>` (`gradient_beta_smooth3`,
//! `lrp_epsilon_plus_flat_beta_smooth10`), in `fragility explain --methods` (or with
//! `--beta-smooth β`, which smooths every listed method) and in a study's `[methods] names`,
//! so that one study can set several β beside the unsmoothed map and no output ever labels a
//! smoothed map with the plain method's name. Every method whose map is differentiable in the
//! input ([`Attribution::differentiable`], the methods attacks steer) can be smoothed:
//! gradient, gradient × input, integrated gradients, the noise tunnels over them, guided
//! backprop, DeepLIFT, LRP, Grad-CAM and the differentiable CAMs, guided Grad-CAM. Refused:
//! deconvnet (its map depends on the input only through the max-pool switches, smoothed or
//! not) and the forward-only methods (occlusion, LIME, KernelSHAP, Score-CAM, Ablation-CAM,
//! EigenCAM).
//!
//! "Every ReLU" means every nonlinearity with kinks, each through its softplus construction
//! ([`crate::model::Activation::Softplus`]: ReLU6, leaky ReLU, HardSigmoid and HardSwish
//! included); smooth ones (SiLU, GELU, sigmoid, tanh) are unchanged. The target class and
//! everything an attack checks (the label, the logits, the metrics' maps) come from the real
//! network: the wrapper passes the smoothed activation to the wrapped method and never hands
//! on the logits its pass computed. Its maps are differentiable functions of the input with
//! their exact derivatives (the softplus network is smooth), so attacks steer them directly.
//!
//! zennit 0.5.1's `BetaSmooth` composite differs, and is the second form,
//! `<method>_beta_smooth_backward<β>`: the real network's forward pass (its activations, its
//! logits), with only each ReLU's derivative replaced by sigmoid(βz) in the backward pass (its
//! `ReLUBetaSmooth` hook; [`crate::model::Activation::SmoothDerivative`], each kinked function
//! through its softplus form's derivative). It changes only maps that read those derivatives
//! ([`Attribution::reads_derivatives`]): gradient, gradient × input, integrated gradients,
//! the noise tunnels over them, guided backprop, the Grad-CAM family and guided Grad-CAM; LRP
//! and DeepLIFT would be unchanged or undefined and are refused, as deconvnet is in both forms. Its maps are
//! continuous but the forward pass keeps its kinks, so attacks steer them through a surrogate
//! direction (the derivative with the forward kinks softened by the same β), not an exact one.
//!
//! The tests check the first form against PyTorch autograd through the softplus network and
//! against zennit's LRP on it, the second against zennit's `BetaSmooth`
//! (scripts/beta_smooth_fixtures.py).
//!
//! Shapes: as the wrapped method (x [B,C,H,W] → [B,C,H,W], a CAM [B,1,H,W]).

use super::Attribution;
use crate::error::{Error, Result};
use crate::model::{Activation, Classifier};
use candle_core::Tensor;
use std::sync::Arc;

/// The name suffix before β of the paper's form (the softplus network).
pub const SUFFIX: &str = "_beta_smooth";

/// The name suffix before β of zennit's form (the derivative only).
pub const BACKWARD_SUFFIX: &str = "_beta_smooth_backward";

/// Which part of the network β-smoothing replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The softplus(β) network, forward and backward (Dombrowski et al.; `_beta_smooth<β>`).
    Network,
    /// The real forward pass, each ReLU's derivative sigmoid(βz) (zennit's `BetaSmooth`;
    /// `_beta_smooth_backward<β>`).
    Backward,
}

impl Form {
    /// The name suffix before β.
    pub fn suffix(self) -> &'static str {
        match self {
            Form::Network => SUFFIX,
            Form::Backward => BACKWARD_SUFFIX,
        }
    }
}

/// What an "unknown method" message adds after the list of names.
pub const HINT: &str =
    "; and each backpropagation method on the softplus(β) network: `<method>_beta_smooth<β>`";

/// A method by name, as `make` builds a plain one, or `<method>_beta_smooth<β>` around the
/// method `make` builds; the error says why a name builds nothing.
pub fn resolve(
    name: &str,
    make: &dyn Fn(&str) -> Option<Arc<dyn Attribution>>,
) -> std::result::Result<Arc<dyn Attribution>, String> {
    if let Some(m) = make(name) {
        return Ok(m);
    }
    let Some(split) = split(name) else {
        let known: Vec<&str> =
            super::METHOD_NAMES.iter().chain(&super::ATTENTION_METHOD_NAMES).copied().collect();
        return Err(format!("unknown method `{name}` (known: {}{HINT})", known.join(", ")));
    };
    let (inner, beta, form) = split?;
    let inner = resolve(inner, make)?;
    BetaSmooth::new(beta, form, inner).map(|m| Arc::new(m) as _).map_err(|e| format!("`{name}`: {e}"))
}

/// A method β-smoothed: computed on the softplus(β) network, or with its ReLUs' derivatives
/// smoothed.
pub struct BetaSmooth {
    /// softplus's β (> 0): smaller is smoother.
    pub beta: f64,
    /// What is smoothed.
    pub form: Form,
    /// The wrapped method.
    pub inner: Arc<dyn Attribution>,
    /// `<inner>_beta_smooth<β>` or `<inner>_beta_smooth_backward<β>`.
    name: String,
}

impl BetaSmooth {
    /// `inner` smoothed with `beta` in `form`; refused for a β that is not finite and
    /// positive, for a method whose map is not differentiable in the input, and, in the
    /// backward form, for one that does not read the derivatives.
    pub fn new(beta: f64, form: Form, inner: Arc<dyn Attribution>) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::Invalid(format!("β-smoothing: β must be finite and > 0, not {beta}")));
        }
        if !inner.differentiable() {
            return Err(Error::Invalid(format!(
                "β-smoothing applies to the methods whose maps are differentiable in the input (those \
                 attacks steer: every backpropagation method but deconvnet); `{}` is not one",
                inner.name()
            )));
        }
        if form == Form::Backward && !inner.reads_derivatives() {
            return Err(Error::Invalid(format!(
                "`{}` does not read the ReLUs' derivatives, so smoothing them alone (`{BACKWARD_SUFFIX}`) \
                 would not change it; `{SUFFIX}` smooths the whole network",
                inner.name()
            )));
        }
        let name = name_of(inner.name(), beta, form);
        Ok(Self { beta, form, inner, name })
    }

    fn act(&self) -> Activation {
        match self.form {
            Form::Network => Activation::Softplus { beta: self.beta },
            Form::Backward => Activation::SmoothDerivative { beta: self.beta },
        }
    }
}

/// The name of `method` smoothed with `beta` in `form`: `gradient_beta_smooth3`,
/// `gradient_beta_smooth_backward0.5`.
pub fn name_of(method: &str, beta: f64, form: Form) -> String {
    format!("{method}{}{beta}", form.suffix())
}

/// Splits `gradient_beta_smooth3` into the method, β and the form; `None` where the name has
/// no suffix. A suffix whose β does not parse is an error that says so.
pub fn split(name: &str) -> Option<std::result::Result<(&str, f64, Form), String>> {
    let (form, (method, beta)) = [Form::Backward, Form::Network]
        .into_iter()
        .find_map(|f| name.rsplit_once(f.suffix()).map(|parts| (f, parts)))?;
    Some(match beta.parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 && !method.is_empty() => Ok((method, b, form)),
        _ => Err(format!(
            "`{name}`: β-smoothing needs a β > 0 after `{}` (e.g. `{method}{}3`)",
            form.suffix(),
            form.suffix()
        )),
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
        let mut p = serde_json::json!({
            "beta_smooth": self.beta, "method": self.inner.name(), "method_params": self.inner.params(),
        });
        // The network form, the paper's, is the one without a `form` (as its name has no
        // `_backward`); a study recorded before the backward form existed stays the same study.
        if self.form == Form::Backward {
            p["form"] = "backward".into();
        }
        p
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.inner.check(model)
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn reads_derivatives(&self) -> bool {
        self.inner.reads_derivatives()
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
        use crate::attribution::{DeepLift, Lrp};
        use crate::model::lrp::CompositeKind;
        assert_eq!(name_of("gradient", 3.0, Form::Network), "gradient_beta_smooth3");
        assert_eq!(name_of("gradient", 0.5, Form::Backward), "gradient_beta_smooth_backward0.5");
        assert_eq!(split("gradient_beta_smooth3"), Some(Ok(("gradient", 3.0, Form::Network))));
        assert_eq!(split("gradient_beta_smooth_backward3"), Some(Ok(("gradient", 3.0, Form::Backward))));
        assert_eq!(
            split("lrp_epsilon_alpha2_beta1_beta_smooth10"),
            Some(Ok(("lrp_epsilon_alpha2_beta1", 10.0, Form::Network)))
        );
        assert_eq!(split("lrp_epsilon_alpha2_beta1"), None);
        for bad in
            ["gradient_beta_smooth", "gradient_beta_smooth0", "gradient_beta_smooth-1", "_beta_smooth3"]
        {
            assert!(matches!(split(bad), Some(Err(_))), "{bad}");
        }
        assert!(BetaSmooth::new(3.0, Form::Network, Arc::new(Occlusion::default())).is_err());
        assert!(BetaSmooth::new(f64::INFINITY, Form::Network, Arc::new(Gradient)).is_err());
        let lrp = Arc::new(Lrp::of(CompositeKind::EpsilonPlusFlat));
        assert!(BetaSmooth::new(3.0, Form::Network, lrp.clone()).is_ok());
        assert!(BetaSmooth::new(3.0, Form::Backward, lrp).is_err());
        assert!(BetaSmooth::new(3.0, Form::Backward, Arc::new(DeepLift)).is_err());
        let s = BetaSmooth::new(3.0, Form::Network, Arc::new(Gradient)).unwrap();
        assert_eq!(s.name(), "gradient_beta_smooth3");
        assert_eq!(s.params()["beta_smooth"], 3.0);
        assert_eq!(s.act(), Activation::Softplus { beta: 3.0 });
        let s = BetaSmooth::new(3.0, Form::Backward, Arc::new(Gradient)).unwrap();
        assert_eq!(s.act(), Activation::SmoothDerivative { beta: 3.0 });
    }
}
