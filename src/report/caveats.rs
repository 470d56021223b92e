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
/// record says nothing worth a caveat (or is missing).
pub fn caveats(run: Option<&serde_json::Value>) -> Vec<String> {
    let Some(images) = run.and_then(|r| r.get("images")) else { return Vec::new() };
    let Some(studied) = images["studied"].as_u64() else { return Vec::new() };
    let requested = images["requested"].as_u64();
    let in_file = images["in_file"].as_u64();
    let eligible = images["eligible"].as_u64();
    let p = &images["predictions"];
    let merged = run.is_some_and(|r| r["shard"]["merged"].is_u64());
    // Only correctly classified images were eligible (labels given, `correct_only` on).
    let correct_only = run.is_some_and(|r| {
        r["settings"]["data"]["correct_only"] == true && !r["settings"]["data"]["labels"].is_null()
    }) || matches!((eligible, p["correct"].as_u64()), (Some(e), Some(c)) if e == c && eligible != in_file);
    let mut out = vec![sample_line(studied, (requested, eligible, in_file), correct_only, p, merged)];
    let short = matches!((requested, eligible), (Some(r), Some(e)) if e < r);
    if short {
        out.extend(shortfall_causes(p));
    }
    if studied < MIN_RELIABLE_N {
        out.push(format!(
            "With n = {studied}, {UNRELIABLE}: study more images (`data.count`) before reading \
             anything into the differences below."
        ));
    }
    if let (Some(share), Some(class)) = (p["dominant_share"].as_f64(), p["dominant_class"].as_u64()) {
        if share >= DOMINANT_SHARE {
            let of = p["predicted"].as_u64().map_or(String::new(), |n| format!(" of the {n} images"));
            out.push(format!(
                "Warning: the model predicts class {class} for {}{of}: its predictions hardly vary \
                 (random or untrained weights, or an input pipeline that does not match the \
                 model's: normalisation, channels, size), so its maps say little.",
                percent(share)
            ));
        }
    }
    out
}

/// "n = 200 images: the first 200 of the 912 correctly classified among the 1,000 in the
/// file", or "Only 2 of the 20 requested images were studied: ...".
fn sample_line(
    studied: u64,
    (requested, eligible, in_file): (Option<u64>, Option<u64>, Option<u64>),
    correct_only: bool,
    p: &serde_json::Value,
    merged: bool,
) -> String {
    let pool = match (eligible, in_file) {
        (Some(e), Some(f)) if correct_only => format!("the {e} correctly classified among all {f} images"),
        (_, Some(f)) => format!("all {f} images"),
        _ => "the images".to_string(),
    };
    match (requested, eligible) {
        (Some(r), Some(e)) if e < r => {
            let why = match (correct_only, p["accuracy"].as_f64().map(percent)) {
                (true, Some(a)) => format!(" (classified correctly: accuracy {a})"),
                (true, None) => " (classified correctly)".to_string(),
                (false, _) => String::new(),
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
