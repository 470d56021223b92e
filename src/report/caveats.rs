//! The headline's first lines: how many images the numbers rest on, and what to distrust.
//!
//! A study's means and intervals are only as good as its sample. Three things mislead a reader
//! who sees only the table: a study that asked for 20 images but, with `correct_only`, found 2
//! correctly classified ones (the numbers then rest on n = 2, and the usual cause — a label
//! order that differs from the class folders' — is nowhere in sight); a sample too small for
//! bootstrap intervals to mean anything; and a model that predicts one class for nearly every
//! image, whose maps say little about anything. [`caveats`] reads `run.json`'s `images` block
//! (written by `run`, with the prediction record of `run::qualify`) and says each in a
//! sentence; the terminal and the page show them before the table. Records of older versions
//! lack some fields: what cannot be said is left out.
//!
//! A study of several models records each model's predictions under `images.models` (label,
//! how many images it alone qualified, its prediction record): its images are those every
//! model qualified, so the sample line says "classified correctly by every model" with each
//! model's accuracy, a shortfall is explained for each model that alone qualified too few (or
//! as the models' disagreement), and the one-class warning names the model.

use super::labels::percent;

/// Fewer images than this make the bootstrap intervals unreliable (a percentile interval of
/// the mean needs a sample whose resamples differ meaningfully).
pub const MIN_RELIABLE_N: u64 = 10;

/// The words of the caveat that the intervals are unreliable (the headline then makes no
/// claim about them).
pub const UNRELIABLE: &str = "the bootstrap intervals are not reliable";

/// Share of the images above which one predicted class counts as "nearly every image"
/// (as `run::qualify` records it).
const DOMINANT_SHARE: f64 = 0.9;

/// The caveat sentences of a study from its `run.json`, most important first; empty when the
/// record says nothing worth a caveat (or is missing). A study of several models records each
/// model's predictions (`images.models`): its images are those every model qualified, and
/// each model's accuracy and one-class warning are given by its label.
pub fn caveats(run: Option<&serde_json::Value>) -> Vec<String> {
    let Some(images) = run.and_then(|r| r.get("images")) else { return Vec::new() };
    let Some(studied) = images["studied"].as_u64() else { return Vec::new() };
    let requested = images["requested"].as_u64();
    let in_file = images["in_file"].as_u64();
    let eligible = images["eligible"].as_u64();
    let models = judges(images);
    let merged = run.is_some_and(|r| r["shard"]["merged"].is_u64());
    let correct_only = correct_only(run, (eligible, in_file), &models);
    let counts = (requested, eligible, in_file);
    let mut out = vec![sample_line(studied, counts, correct_only, &models, merged)];
    if matches!((requested, eligible), (Some(r), Some(e)) if e < r) {
        out.extend(shortfall(&models, requested, correct_only));
    }
    if studied < MIN_RELIABLE_N {
        out.push(format!(
            "With n = {studied}, {UNRELIABLE}: study more images (`data.count`) before reading \
             anything into the differences below."
        ));
    }
    out.extend(models.iter().filter_map(one_class_warning));
    out
}

/// Whether only correctly classified images were eligible: the settings say so (labels given,
/// `correct_only` on), or, in an older record without them, the eligible images are exactly
/// those the model classified correctly (for several models: no more than any one did).
fn correct_only(
    run: Option<&serde_json::Value>,
    (eligible, in_file): (Option<u64>, Option<u64>),
    models: &[Judge],
) -> bool {
    let set = run.is_some_and(|r| {
        r["settings"]["data"]["correct_only"] == true && !r["settings"]["data"]["labels"].is_null()
    });
    let correct = |j: &Judge| j.predictions["correct"].as_u64();
    let several = models.len() > 1;
    set || (eligible.is_some()
        && eligible != in_file
        && !models.is_empty()
        && models.iter().all(|j| if several { correct(j) >= eligible } else { correct(j) == eligible }))
}

/// One model's record of its predictions: its label (empty for a study of one model), how
/// many images it alone qualified (several models only) and the record `run::qualify` wrote.
struct Judge<'a> {
    label: &'a str,
    eligible: Option<u64>,
    predictions: &'a serde_json::Value,
}

impl Judge<'_> {
    /// How a sentence names the model: "the model", or "model `label`".
    fn name(&self) -> String {
        if self.label.is_empty() {
            "the model".into()
        } else {
            format!("model {}", self.label)
        }
    }
}

/// The models whose predictions qualified the images: `images.models` in a study of several
/// models, else the one model of `images.predictions`.
fn judges(images: &serde_json::Value) -> Vec<Judge<'_>> {
    match images["models"].as_array() {
        Some(models) => models
            .iter()
            .map(|m| Judge {
                label: m["label"].as_str().unwrap_or("?"),
                eligible: m["eligible"].as_u64(),
                predictions: &m["predictions"],
            })
            .collect(),
        None => vec![Judge { label: "", eligible: None, predictions: &images["predictions"] }],
    }
}

/// Each model's accuracy by label ("a 91%, b 85%"); `None` unless every model recorded one.
fn accuracies(models: &[Judge]) -> Option<String> {
    let each: Option<Vec<String>> = models
        .iter()
        .map(|j| j.predictions["accuracy"].as_f64().map(|a| format!("{} {}", j.label, percent(a))))
        .collect();
    each.map(|e| e.join(", "))
}

/// "n = 200 images: the first 200 of the 912 correctly classified among the 1,000 in the
/// file", or "Only 2 of the 20 requested images were studied: ...".
fn sample_line(
    studied: u64,
    (requested, eligible, in_file): (Option<u64>, Option<u64>, Option<u64>),
    correct_only: bool,
    models: &[Judge],
    merged: bool,
) -> String {
    let several = models.len() > 1;
    let pool = match (eligible, in_file) {
        (Some(e), Some(f)) if correct_only && several => format!(
            "the {e} classified correctly by every model among all {f} images{}",
            accuracies(models).map_or(String::new(), |a| format!(" (accuracy {a})"))
        ),
        (Some(e), Some(f)) if correct_only => format!("the {e} correctly classified among all {f} images"),
        (_, Some(f)) => format!("all {f} images"),
        _ => "the images".to_string(),
    };
    match (requested, eligible) {
        (Some(r), Some(e)) if e < r => {
            let why = match (correct_only, several) {
                (false, _) => String::new(),
                (true, true) => format!(
                    " (classified correctly by every model{})",
                    accuracies(models).map_or(String::new(), |a| format!(": accuracy {a}"))
                ),
                (true, false) => match models.first().and_then(|j| j.predictions["accuracy"].as_f64()) {
                    Some(a) => format!(" (classified correctly: accuracy {})", percent(a)),
                    None => " (classified correctly)".to_string(),
                },
            };
            format!(
                "Only {studied} of the {r} requested images were studied: just {e} of all {} \
                 images qualified{why}. Every number below rests on n = {studied}.",
                in_file.map_or("?".into(), |f| f.to_string()),
            )
        }
        _ if merged => format!("n = {studied} images, from {pool}, over all shards."),
        _ => format!("n = {studied} images: the first {studied} of {pool}."),
    }
}

/// Why fewer images qualified than `requested`: for one model what its predictions tell; for
/// several, that of each model that alone qualified too few, or that the models disagree.
fn shortfall(models: &[Judge], requested: Option<u64>, correct_only: bool) -> Vec<String> {
    let [one] = models else {
        if !correct_only {
            return Vec::new();
        }
        let short: Vec<&Judge> = models
            .iter()
            .filter(|j| matches!((j.eligible, requested), (Some(e), Some(r)) if e < r))
            .collect();
        if short.is_empty() {
            return vec!["Each model alone classifies enough images correctly, but too few are classified \
                         correctly by every model: the models get different images right."
                .to_string()];
        }
        return short
            .iter()
            .flat_map(|j| {
                shortfall_causes(j.predictions)
                    .into_iter()
                    .map(|c| format!("Model {}: {}", j.label, lower_first(&c)))
            })
            .collect();
    };
    shortfall_causes(one.predictions)
}

/// `text` with its first letter in lower case (a sentence that follows a colon).
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or(String::new(), |c| c.to_lowercase().chain(chars).collect())
}

/// The warning that a model predicts one class for nearly every image, if it does.
fn one_class_warning(j: &Judge) -> Option<String> {
    let p = j.predictions;
    let (share, class) = (p["dominant_share"].as_f64()?, p["dominant_class"].as_u64()?);
    if share < DOMINANT_SHARE {
        return None;
    }
    let of = p["predicted"].as_u64().map_or(String::new(), |n| format!(" of the {n} images"));
    Some(format!(
        "Warning: {} predicts class {class} for {}{of}: its predictions hardly vary \
         (random or untrained weights, or an input pipeline that does not match the \
         model's: normalisation, channels, size), so its maps say little.",
        j.name(),
        percent(share)
    ))
}

/// Why fewer images qualified than asked, as far as the predictions tell.
fn shortfall_causes(p: &serde_json::Value) -> Vec<String> {
    let (Some(acc), Some(rel)) = (p["accuracy"].as_f64(), p["relabelled_accuracy"].as_f64()) else {
        return Vec::new();
    };
    if rel >= 0.5 && rel >= 2.0 * acc && rel - acc >= 0.2 {
        vec![format!(
            "The predictions match the labels far better under another class order ({} against \
             {}): the model's label order probably differs from the data's. Class sub-folders are \
             numbered in sorted name order; give the model's order with `data.classes`.",
            percent(rel),
            percent(acc)
        )]
    } else {
        vec![format!(
            "The model classifies {} of the labelled images correctly: check the weights, \
             `model.normalize`, the channels and the size, or set `data.correct_only = false` to \
             study misclassified images too.",
            percent(acc)
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        studied: u64,
        requested: Option<u64>,
        eligible: u64,
        in_file: u64,
        p: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({ "images": {
            "studied": studied, "requested": requested, "eligible": eligible, "in_file": in_file, "predictions": p,
        }})
    }

    #[test]
    fn a_full_sample_says_n_and_where_it_came_from() {
        let p = serde_json::json!({ "predicted": 1000, "correct": 912, "accuracy": 0.912,
            "relabelled_accuracy": 0.912, "dominant_class": 3, "dominant_share": 0.11 });
        let c = caveats(Some(&run(200, Some(200), 912, 1000, p)));
        assert_eq!(
            c,
            vec!["n = 200 images: the first 200 of the 912 correctly classified among all 1000 images."]
        );
    }

    #[test]
    fn a_shrunken_sample_says_so_first_with_the_likely_cause() {
        // 20 asked, 2 correct, and every image would be right under another class order.
        let p = serde_json::json!({ "predicted": 20, "correct": 2, "accuracy": 0.1,
            "relabelled_accuracy": 0.95, "dominant_class": 1, "dominant_share": 0.2 });
        let c = caveats(Some(&run(2, Some(20), 2, 20, p)));
        assert!(c[0].starts_with("Only 2 of the 20 requested images were studied"), "{}", c[0]);
        assert!(c[0].contains("n = 2"), "{}", c[0]);
        assert!(c[1].contains("label order"), "{}", c[1]);
        assert!(c[2].contains("not reliable"), "{}", c[2]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_model_with_one_answer_is_flagged() {
        let p = serde_json::json!({ "predicted": 20, "correct": 2, "accuracy": 0.1,
            "relabelled_accuracy": 0.1, "dominant_class": 7, "dominant_share": 0.95 });
        let c = caveats(Some(&run(2, Some(20), 2, 20, p)));
        assert!(c[1].contains("classifies 10% of the labelled images correctly"), "{c:?}");
        assert!(c.last().unwrap().contains("predicts class 7 for 95% of the 20 images"), "{c:?}");
    }

    /// A record of two models: `mobilenet` right on 18 of 20 images, `resnet20` on 2, nearly
    /// always answering class 7.
    fn two_models(studied: u64, eligible: u64) -> serde_json::Value {
        let p = |correct: u64, class: u64, share: f64| {
            let acc = correct as f64 / 20.0;
            serde_json::json!({ "predicted": 20, "correct": correct, "accuracy": acc,
                "relabelled_accuracy": acc, "dominant_class": class, "dominant_share": share })
        };
        serde_json::json!({
            "settings": { "data": { "labels": "l.gz", "correct_only": true } },
            "images": { "studied": studied, "requested": 18, "eligible": eligible, "in_file": 20, "models": [
                { "label": "mobilenet", "eligible": 18, "predictions": p(18, 1, 0.2) },
                { "label": "resnet20", "eligible": 2, "predictions": p(2, 7, 0.95) },
            ] },
        })
    }

    #[test]
    fn several_models_qualify_together_and_each_is_named() {
        let c = caveats(Some(&two_models(2, 2)));
        assert_eq!(
            c[0],
            "Only 2 of the 18 requested images were studied: just 2 of all 20 images qualified \
             (classified correctly by every model: accuracy mobilenet 90%, resnet20 10%). Every \
             number below rests on n = 2."
        );
        // Only resnet20 alone qualified too few (mobilenet qualified the 18 asked for).
        assert!(c[1].starts_with("Model resnet20: the model classifies 10% of the labelled"), "{}", c[1]);
        assert!(c[2].contains(UNRELIABLE), "{}", c[2]);
        assert!(
            c[3].starts_with("Warning: model resnet20 predicts class 7 for 95% of the 20 images"),
            "{}",
            c[3]
        );
        assert_eq!(c.len(), 4);
        // A full sample: where the images came from, with each model's accuracy.
        let mut run = two_models(12, 12);
        run["images"]["requested"] = 12.into();
        assert_eq!(
            caveats(Some(&run))[0],
            "n = 12 images: the first 12 of the 12 classified correctly by every model among all \
             20 images (accuracy mobilenet 90%, resnet20 10%)."
        );
        // Each model alone had enough: the models disagree.
        run["images"]["requested"] = 15.into();
        run["images"]["models"][1]["eligible"] = 16.into();
        assert!(caveats(Some(&run))[1].starts_with("Each model alone classifies enough images"));
    }

    #[test]
    fn an_old_record_without_predictions_still_gives_n() {
        let c = caveats(Some(&serde_json::json!({ "images": { "studied": 24, "requested": 24,
            "eligible": 900, "in_file": 1000 } })));
        assert_eq!(c, vec!["n = 24 images: the first 24 of all 1000 images."]);
        let c = caveats(Some(&serde_json::json!({ "images": { "studied": 24, "requested": 24,
            "eligible": 900, "in_file": 1000 }, "settings": { "data": { "labels": "l.gz", "correct_only": true } } })));
        assert_eq!(
            c,
            vec!["n = 24 images: the first 24 of the 900 correctly classified among all 1000 images."]
        );
        assert!(caveats(None).is_empty());
    }
}
