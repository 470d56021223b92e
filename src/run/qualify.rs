//! What the model's predictions over the whole image file say about the images a study could
//! use, recorded in `run.json` (`images.predictions`) for the headline's first lines.
//!
//! With `correct_only` (the default) only correctly classified images are studied, so a model
//! that is untrained, fed the wrong normalisation, or whose label order differs from the
//! image folders' class order silently shrinks a study of 20 images to 2. Three numbers tell
//! those causes apart, and each is cheap because every image is predicted anyway:
//! - the **accuracy** over the labelled file (low: a weak model, or a label mismatch);
//! - the **dominant class**, the one predicted most often, with its share (≥ 90%: the
//!   predictions hardly vary, the usual sign of random weights or a broken input pipeline);
//! - the **best relabelled accuracy**: the accuracy under the one-to-one relabelling of
//!   classes that agrees best with the predictions (greedy on the confusion counts). Far above
//!   the plain accuracy, it says that the model's label order is not the data's (a class
//!   folder order that differs from the model's, the most common mistake with folders).

/// The `images.predictions` record: `preds[i]` is the predicted class of image i of the file,
/// `labels` its label where known; `classes` is the model's number of outputs.
pub fn record(preds: &[u32], labels: Option<&[i64]>, classes: usize) -> serde_json::Value {
    let n = preds.len();
    let mut counts = vec![0usize; classes.max(1)];
    for &p in preds {
        if let Some(c) = counts.get_mut(p as usize) {
            *c += 1;
        }
    }
    let (dominant, top) = counts
        .iter()
        .enumerate()
        .max_by_key(|(k, c)| (**c, std::cmp::Reverse(*k)))
        .map_or((0, 0), |(k, c)| (k, *c));
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let mut v = serde_json::json!({
        "predicted": n,
        "dominant_class": dominant,
        "dominant_share": share(top),
    });
    if let Some(labels) = labels {
        let correct = preds.iter().zip(labels).filter(|(p, l)| **p as i64 == **l).count();
        v["correct"] = serde_json::json!(correct);
        v["accuracy"] = serde_json::json!(share(correct));
        v["relabelled_accuracy"] = serde_json::json!(share(best_relabelling(preds, labels, classes)));
    }
    v
}

/// How many images a one-to-one relabelling of the classes gets right at best (greedy: the
/// largest confusion count first, each label and each prediction used once). Greedy is not
/// always the optimum, but it is never above it, so a large gap to the plain count is real.
fn best_relabelling(preds: &[u32], labels: &[i64], classes: usize) -> usize {
    let mut pairs: std::collections::HashMap<(i64, u32), usize> = std::collections::HashMap::new();
    for (&p, &l) in preds.iter().zip(labels) {
        *pairs.entry((l, p)).or_default() += 1;
    }
    let mut cells: Vec<((i64, u32), usize)> = pairs.into_iter().collect();
    // Largest count first; ties by label then prediction, so the result never depends on the
    // hash map's order.
    cells.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let (mut used_l, mut used_p) = (Vec::new(), vec![false; classes.max(1)]);
    let mut total = 0;
    for ((l, p), c) in cells {
        if used_l.contains(&l) || used_p.get(p as usize).copied().unwrap_or(true) {
            continue;
        }
        used_l.push(l);
        used_p[p as usize] = true;
        total += c;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swapped_label_order_shows_as_a_high_relabelled_accuracy() {
        // Labels 0,1,2 each predicted as the next class: no image is right, every one would be
        // under the relabelling 0→1, 1→2, 2→0.
        let labels = [0i64, 0, 1, 1, 2, 2];
        let preds = [1u32, 1, 2, 2, 0, 0];
        let r = record(&preds, Some(&labels), 3);
        assert_eq!(r["correct"], 0);
        assert_eq!(r["accuracy"], 0.0);
        assert_eq!(r["relabelled_accuracy"], 1.0);
        assert_eq!(r["dominant_share"].as_f64().unwrap(), 2.0 / 6.0);
    }

    #[test]
    fn one_class_for_nearly_every_image_is_the_dominant_one() {
        let preds = [4u32, 4, 4, 4, 4, 4, 4, 4, 4, 1];
        let r = record(&preds, None, 10);
        assert_eq!(r["dominant_class"], 4);
        assert_eq!(r["dominant_share"], 0.9);
        assert!(r.get("accuracy").is_none());
    }

    #[test]
    fn a_right_model_relabels_to_itself() {
        let labels = [0i64, 1, 2, 0, 1, 2];
        let preds = [0u32, 1, 2, 0, 1, 1];
        let r = record(&preds, Some(&labels), 3);
        assert_eq!(r["correct"], 5);
        assert_eq!(r["relabelled_accuracy"].as_f64().unwrap(), 5.0 / 6.0);
    }
}
