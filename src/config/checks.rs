//! `[sanity]` and `[faithfulness]`: the checks a study runs beside its attacks, on the same
//! clean images and maps (or alone, with no `[attacks]` section).
//!
//! ```toml
//! [sanity]
//! tests = ["cascading", "independent", "random_logit", "input_invariance"]   # default: all
//! similarities = ["spearman", "spearman_abs", "ssim", "hog_pearson"]         # default: all
//! input_shift = -1.0                                                          # default
//! granularity = "block"   # default; "layer": randomise one parameter layer per step
//!
//! [faithfulness]
//! measures = ["deletion", "insertion", "pixel_flipping", "region_perturbation"]  # default: all
//! [faithfulness.deletion]       # a measure's settings (see docs/configuration.md)
//! step = 28
//! ```
//!
//! Parsed into [`SanityPlan`] and [`FaithfulnessPlan`]; every error names the field and line.

use super::Ctx;
use crate::error::Result;
use crate::faithfulness::{with_settings, Measure, MEASURE_NAMES};
use crate::sanity::{Granularity, Similarity, GRANULARITIES, SIMILARITY_NAMES};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use toml::Spanned;

/// A sanity test of `[sanity] tests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanityTest {
    /// Adebayo et al.'s cascading model-parameter randomisation, from the logits down.
    Cascading,
    /// One layer (or block, `[sanity] granularity`) at a time, the rest trained.
    Independent,
    /// Sixt et al.'s map of a random other class.
    RandomLogit,
    /// Kindermans et al.'s constant input shift, compensated in the model.
    InputInvariance,
}

/// The tests' names in configs and tables, in [`SanityTest`] order.
pub const SANITY_TESTS: [&str; 4] = ["cascading", "independent", "random_logit", "input_invariance"];

impl SanityTest {
    const ALL: [SanityTest; 4] = [
        SanityTest::Cascading,
        SanityTest::Independent,
        SanityTest::RandomLogit,
        SanityTest::InputInvariance,
    ];

    /// Its name in configs and in `sanity.parquet`'s `test` column.
    pub fn name(self) -> &'static str {
        SANITY_TESTS[self as usize]
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the test re-initialises the model's layers (and so needs its `state_dict`).
    pub fn randomizes(self) -> bool {
        matches!(self, SanityTest::Cascading | SanityTest::Independent)
    }
}

/// Kindermans et al.'s shift: images in \[0,1\] become \[−1,0\].
pub const DEFAULT_INPUT_SHIFT: f32 = -1.0;

/// The validated `[sanity]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SanityPlan {
    /// The tests, in the config's order.
    pub tests: Vec<SanityTest>,
    /// The similarities each map pair is scored with, in the config's order.
    pub similarities: Vec<Similarity>,
    /// The constant added to every pixel for input invariance.
    pub input_shift: f32,
    /// What each randomisation step re-initialises: a block of layers (default) or one layer.
    pub granularity: Granularity,
}

impl SanityPlan {
    /// As run.json records it.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tests": self.tests.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "similarities": self.similarities.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "input_shift": self.input_shift,
            "granularity": self.granularity.name(),
        })
    }
}

/// The validated `[faithfulness]` section: each measure with its settings, in config order.
#[derive(Clone)]
pub struct FaithfulnessPlan {
    /// The measures.
    pub measures: Vec<Arc<dyn Measure>>,
}

impl FaithfulnessPlan {
    /// As run.json records it: name → settings.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.measures.iter().map(|m| (m.name().to_string(), m.params())).collect())
    }
}

/// `[sanity]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSanity {
    tests: Option<Spanned<Vec<Spanned<String>>>>,
    similarities: Option<Spanned<Vec<Spanned<String>>>>,
    input_shift: Option<Spanned<f32>>,
    granularity: Option<Spanned<String>>,
}

/// `[faithfulness]` as written: the list and one settings table per measure.
#[derive(Debug, Deserialize)]
pub(super) struct RawFaithfulness {
    measures: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(flatten)]
    settings: BTreeMap<String, toml::Value>,
}

/// Names of `list` (each known to `known`, none twice) in order; all of `known` if unset.
fn names<'a>(
    cx: &Ctx,
    field: &str,
    list: Option<&'a Spanned<Vec<Spanned<String>>>>,
    known: &[&'a str],
) -> Result<Vec<&'a str>> {
    let Some(list) = list else { return Ok(known.to_vec()) };
    if list.get_ref().is_empty() {
        let all = known.join("\", \"");
        return Err(
            cx.err(list.span(), format!("field `{field}` is empty (leave it out for all: \"{all}\")"))
        );
    }
    let mut out: Vec<&str> = Vec::new();
    for n in list.get_ref() {
        let name = n.get_ref().as_str();
        if !known.contains(&name) {
            let all = known.join("`, `");
            return Err(cx.err(n.span(), format!("field `{field}`: unknown `{name}` (known: `{all}`)")));
        }
        if out.contains(&name) {
            return Err(cx.err(n.span(), format!("field `{field}`: `{name}` is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// Validates `[sanity]`.
pub(super) fn sanity(cx: &Ctx, raw: &Spanned<RawSanity>) -> Result<SanityPlan> {
    let r = raw.get_ref();
    let tests = names(cx, "sanity.tests", r.tests.as_ref(), &SANITY_TESTS)?
        .into_iter()
        .filter_map(SanityTest::from_name)
        .collect();
    let similarities = names(cx, "sanity.similarities", r.similarities.as_ref(), &SIMILARITY_NAMES)?
        .into_iter()
        .filter_map(Similarity::from_name)
        .collect();
    let input_shift = match &r.input_shift {
        Some(s) if !s.get_ref().is_finite() || *s.get_ref() == 0.0 => {
            let msg =
                format!("field `sanity.input_shift`: give a finite, non-zero shift, got {}", s.get_ref());
            return Err(cx.err(s.span(), msg));
        }
        Some(s) => *s.get_ref(),
        None => DEFAULT_INPUT_SHIFT,
    };
    let granularity = match &r.granularity {
        Some(g) => Granularity::from_name(g.get_ref()).ok_or_else(|| {
            let known = GRANULARITIES.join("`, `");
            cx.err(
                g.span(),
                format!("field `sanity.granularity`: unknown `{}` (known: `{known}`)", g.get_ref()),
            )
        })?,
        None => Granularity::Block,
    };
    Ok(SanityPlan { tests, similarities, input_shift, granularity })
}

/// Validates `[faithfulness]`: the measures and their settings tables (a table of a measure
/// that is not listed is an error, not silently ignored).
pub(super) fn faithfulness(cx: &Ctx, raw: &Spanned<RawFaithfulness>) -> Result<FaithfulnessPlan> {
    let r = raw.get_ref();
    let listed = names(cx, "faithfulness.measures", r.measures.as_ref(), &MEASURE_NAMES)?;
    for key in r.settings.keys() {
        if !listed.contains(&key.as_str()) {
            let why = if MEASURE_NAMES.contains(&key.as_str()) {
                format!("`{key}` is not in `faithfulness.measures`")
            } else {
                format!("unknown field or measure (measures: `{}`)", MEASURE_NAMES.join("`, `"))
            };
            return Err(cx.err(raw.span(), format!("section `faithfulness.{key}`: {why}")));
        }
    }
    let mut measures = Vec::new();
    for name in listed {
        let settings = r.settings.get(name).cloned();
        let measure = with_settings(name, settings)
            .unwrap_or_else(|| Err(format!("unknown measure `{name}`")))
            .map_err(|e| cx.err(raw.span(), format!("section `faithfulness.{name}`: {e}")))?;
        measures.push(Arc::from(measure));
    }
    Ok(FaithfulnessPlan { measures })
}
