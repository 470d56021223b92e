//! Which images (and models) two runs have in common, for `compare`.
//!
//! Two runs of one study rarely measure the same images: with `correct_only` (the default)
//! each model version keeps the images *it* classifies correctly, and a folder may have gained
//! or lost files. Means over different images differ for that reason alone, so `compare`
//! matches images first: an image is **common** when both runs studied its id and, where both
//! tables record it, the content hash of its pixels as studied is the same (an id whose hashes
//! differ names two different inputs and is not common). Tables of older versions have no
//! hashes: their images are paired by id alone, and the comparison says so.
//!
//! The statistics are then recomputed on the common images only, with the functions of
//! [`super::summary`], so that on identical image sets they equal the runs' own summaries.
//!
//! **Too few common images are refused** (exit 2, with the counts): fewer than
//! [`MIN_COMMON`] (one image gives a zero-width bootstrap interval, so every change past the
//! threshold would count as certain), or fewer than half of the smaller run's images (then
//! the two runs mostly measured different images, and whatever the common ones show says
//! little about either run's numbers).
//!
//! Two studies of several models pair their models by label ([`pair_models`]): the rows of the
//! models both have are compared, and a model only one side has is named in the output (its
//! rows are not compared), never dropped silently. A study of one model is not compared with a
//! study of several (refused, exit 2, naming both tables): its unlabelled model could be any
//! of theirs, and guessing by name would compare different networks without a word.

use super::images::ImageTraces;
use super::table::{first_duplicate, SampleTable};
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// The fewest common images a comparison accepts (see the module docs).
pub const MIN_COMMON: usize = 2;

/// The images two runs have in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    /// How many images the baseline studied.
    pub baseline_n: usize,
    /// How many images the current run studied.
    pub current_n: usize,
    /// The common image ids, ascending.
    pub common: BTreeSet<u32>,
    /// Ids both runs studied whose image hashes differ (different inputs under one id).
    pub differing_hashes: usize,
    /// Why images were paired by id alone (a table without hashes); `None` when hashes were
    /// compared.
    pub by_id_only: Option<&'static str>,
}

/// The image ids of `table`: those with a trace, or, in an older table without traces, those
/// its rows name.
fn image_ids(table: &SampleTable) -> BTreeSet<u32> {
    if table.images.is_empty() {
        table.rows.iter().map(|r| r.image_id).collect()
    } else {
        table.images.keys().copied().collect()
    }
}

/// Pairs the images of `baseline` and `current` (see the module docs).
pub fn pair(baseline: &SampleTable, current: &SampleTable) -> Pairing {
    let (b, c) = (image_ids(baseline), image_ids(current));
    let by_id_only = match (baseline.images.is_empty(), current.images.is_empty()) {
        (false, false) => None,
        (true, true) => Some("neither run recorded image hashes (older versions)"),
        (true, false) => Some("the baseline recorded no image hashes (an older version)"),
        (false, true) => Some("the current run recorded no image hashes (an older version)"),
    };
    let same = |id: &u32| by_id_only.is_some() || hash(&baseline.images, id) == hash(&current.images, id);
    let both: Vec<u32> = b.intersection(&c).copied().collect();
    let common: BTreeSet<u32> = both.iter().copied().filter(same).collect();
    Pairing {
        baseline_n: b.len(),
        current_n: c.len(),
        differing_hashes: both.len() - common.len(),
        common,
        by_id_only,
    }
}

fn hash<'a>(images: &'a ImageTraces, id: &u32) -> Option<&'a str> {
    images.get(id).map(|t| t.hash.as_str())
}

impl Pairing {
    /// Whether every image of both runs is common.
    pub fn complete(&self) -> bool {
        self.common.len() == self.baseline_n && self.common.len() == self.current_n
    }

    /// The counts in words: "baseline 20 images, current 2, common 2 (...)".
    fn counts(&self) -> String {
        let differing = match self.differing_hashes {
            0 => String::new(),
            d => format!("; {d} ids of both runs are different images (their hashes differ)"),
        };
        format!(
            "baseline {} images, current {}, common {}{differing}",
            self.baseline_n,
            self.current_n,
            self.common.len()
        )
    }

    /// The line that must open the output when the comparison is not over every image of
    /// both runs by hash (`None` when it is).
    pub fn first_line(&self) -> Option<String> {
        let scope = if self.complete() {
            String::new()
        } else {
            format!(
                "Compared on the {} images the two runs have in common, not on all ({}): every mean and interval is over those only.",
                self.common.len(),
                self.counts()
            )
        };
        match (self.by_id_only, scope.is_empty()) {
            (None, true) => None,
            (None, false) => Some(scope),
            (Some(why), true) => Some(format!(
                "Images paired by id only ({why}): the same ids may be different images; {}.",
                self.counts()
            )),
            (Some(why), false) => Some(format!("{scope} Images paired by id only ({why}).")),
        }
    }

    /// Refuses a pairing with too few common images (see the module docs), naming both runs
    /// and the counts.
    pub fn check(&self, baseline: &Path, current: &Path) -> Result<()> {
        let k = self.common.len();
        let smaller = self.baseline_n.min(self.current_n);
        if k >= MIN_COMMON && 2 * k >= smaller {
            return Ok(());
        }
        let rule = if k < MIN_COMMON {
            format!("at least {MIN_COMMON} are needed")
        } else {
            format!("at least half of the smaller run's {smaller} are needed")
        };
        Err(Error::Invalid(format!(
            "{} and {} studied too few of the same images to compare ({}; {rule}): the runs measured different \
             images, so their numbers would differ for that reason alone (with `correct_only`, each model keeps \
             the images it classifies correctly)",
            baseline.display(),
            current.display(),
            self.counts()
        )))
    }
}

/// The models of two studies of several models: those both have, and those only one has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPairing {
    /// The labels both studies have, in the baseline's order; empty for two studies of one
    /// model.
    pub common: Vec<String>,
    /// The labels only the baseline has.
    pub baseline_only: Vec<String>,
    /// The labels only the current study has.
    pub current_only: Vec<String>,
}

impl ModelPairing {
    /// Whether the rows of `model` are compared: every row of a study of one model, the rows of
    /// a common model otherwise.
    pub fn keeps(&self, model: &str) -> bool {
        model.is_empty() || self.common.iter().any(|m| m == model)
    }

    /// The line that names the models only one side has (`None` when there is none).
    pub fn note(&self) -> Option<String> {
        let list = |side: &str, labels: &[String]| match labels {
            [] => None,
            [one] => Some(format!("model {one} is only in the {side}")),
            many => Some(format!("models {} are only in the {side}", many.join(", "))),
        };
        let parts: Vec<String> =
            [list("baseline", &self.baseline_only), list("current run", &self.current_only)]
                .into_iter()
                .flatten()
                .collect();
        (!parts.is_empty())
            .then(|| format!("Not compared: {} (models are paired by label).", parts.join("; ")))
    }
}

/// Pairs the models of the tables `b` (at `baseline`) and `c` (at `current`) by label (see
/// the module docs); refuses a study of one model against one of several, and two studies of
/// several models without a model in common, naming both tables.
pub fn pair_models(
    baseline: &Path,
    current: &Path,
    b: &SampleTable,
    c: &SampleTable,
) -> Result<ModelPairing> {
    let (bm, cm) = (b.models(), c.models());
    let shape = |m: &[&str]| {
        if m.is_empty() {
            "a study of one model".to_string()
        } else {
            format!("a study of several models ({})", m.join(", "))
        }
    };
    if bm.is_empty() != cm.is_empty() {
        return Err(Error::Invalid(format!(
            "{} is {} and {} is {}: a study of one model is not compared with a study of several \
             models; compare two studies of one model, or two of several models (paired by label)",
            baseline.display(),
            shape(&bm),
            current.display(),
            shape(&cm)
        )));
    }
    let only = |a: &[&str], b: &[&str]| -> Vec<String> {
        a.iter().filter(|m| !b.contains(m)).map(|m| m.to_string()).collect()
    };
    let models = ModelPairing {
        common: bm.iter().filter(|m| cm.contains(m)).map(|m| m.to_string()).collect(),
        baseline_only: only(&bm, &cm),
        current_only: only(&cm, &bm),
    };
    if !bm.is_empty() && models.common.is_empty() {
        return Err(Error::Invalid(format!(
            "{} and {} have no model in common (baseline {}; current {}): studies of several models \
             are compared model by model, paired by label",
            baseline.display(),
            current.display(),
            bm.join(", "),
            cm.join(", ")
        )));
    }
    Ok(models)
}

/// `table` restricted to the rows (and traces) of the images `ids`, rows in their order.
pub fn restrict(table: &SampleTable, ids: &BTreeSet<u32>) -> SampleTable {
    SampleTable {
        rows: table.rows.iter().filter(|r| ids.contains(&r.image_id)).cloned().collect(),
        images: table
            .images
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(i, t)| (*i, t.clone()))
            .collect(),
        ..table.clone()
    }
}

/// Refuses a table in which a row repeats another's image × method × attack × ε (it would
/// count twice in every mean), naming the file and the row.
pub fn check_no_duplicates(path: &Path, table: &SampleTable) -> Result<()> {
    match first_duplicate(&table.rows) {
        Some((_, row)) => {
            Err(Error::data(path, format!("holds two rows for {row}: the table is damaged or was edited")))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::images::ImageTrace;
    use crate::report::table::tests::example_table;

    /// The example table with images `ids` (hash `h<id>`, or `x<id>` for the ids in `other`).
    fn table(ids: &[u32], other: &[u32]) -> SampleTable {
        let mut t = example_table();
        let template = t.rows[0].clone();
        t.rows = ids.iter().map(|&i| crate::report::SampleRow { image_id: i, ..template.clone() }).collect();
        t.images = ids
            .iter()
            .map(|&i| {
                let hash = if other.contains(&i) { format!("x{i}") } else { format!("h{i}") };
                (i, ImageTrace { source: format!("f[{i}]"), hash })
            })
            .collect();
        t
    }

    #[test]
    fn identical_image_sets_pair_completely_without_a_note() {
        let p = pair(&table(&[1, 2, 3], &[]), &table(&[1, 2, 3], &[]));
        assert!(p.complete());
        assert_eq!(p.first_line(), None);
        assert!(p.check(Path::new("b"), Path::new("c")).is_ok());
    }

    #[test]
    fn a_common_subset_is_said_in_the_first_line_with_counts() {
        // The case: ids [6, 7] against [6, 7, 11].
        let p = pair(&table(&[6, 7], &[]), &table(&[6, 7, 11], &[]));
        assert_eq!(p.common, BTreeSet::from([6, 7]));
        assert!(p.check(Path::new("b"), Path::new("c")).is_ok());
        let line = p.first_line().unwrap();
        assert!(line.starts_with("Compared on the 2 images the two runs have in common"), "{line}");
        assert!(line.contains("baseline 2 images, current 3, common 2"), "{line}");
        // Restricted, the current table keeps only the common images' rows and traces.
        let r = restrict(&table(&[6, 7, 11], &[]), &p.common);
        assert_eq!(r.rows.iter().map(|r| r.image_id).collect::<Vec<_>>(), [6, 7]);
        assert_eq!(r.images.keys().copied().collect::<Vec<_>>(), [6, 7]);
    }

    #[test]
    fn ids_whose_hashes_differ_are_not_common() {
        let p = pair(&table(&[1, 2, 3, 4], &[]), &table(&[1, 2, 3, 4], &[4]));
        assert_eq!(p.common, BTreeSet::from([1, 2, 3]));
        assert_eq!(p.differing_hashes, 1);
        let line = p.first_line().unwrap();
        assert!(line.contains("common 3; 1 ids of both runs are different images"), "{line}");
        // Every hash differs: nothing in common, refused with the counts.
        let p = pair(&table(&[1, 2], &[]), &table(&[1, 2], &[1, 2]));
        let err = p.check(Path::new("base"), Path::new("cur")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("baseline 2 images, current 2, common 0"), "{err}");
    }

    #[test]
    fn no_overlap_or_too_little_is_refused_with_the_counts() {
        let p = pair(&table(&[1, 2], &[]), &table(&[3, 4], &[]));
        assert!(p.common.is_empty());
        let msg = p.check(Path::new("base"), Path::new("cur")).unwrap_err().to_string();
        assert!(
            msg.contains("base and cur") && msg.contains("common 0") && msg.contains("at least 2"),
            "{msg}"
        );
        // 20 against 2 with 1 in common: below the minimum.
        let twenty: Vec<u32> = (0..20).collect();
        let msg = pair(&table(&twenty, &[]), &table(&[5, 40], &[])).check(Path::new("b"), Path::new("c"));
        assert!(msg.unwrap_err().to_string().contains("baseline 20 images, current 2, common 1"));
        // 20 against 2, both common: accepted (all of the smaller run).
        assert!(pair(&table(&twenty, &[]), &table(&[5, 6], &[]))
            .check(Path::new("b"), Path::new("c"))
            .is_ok());
        // 3 of 8 against 8: fewer than half of the smaller run.
        let eight: Vec<u32> = (0..8).collect();
        let msg = pair(&table(&eight, &[]), &table(&[0, 1, 2, 10, 11, 12, 13, 14], &[]))
            .check(Path::new("b"), Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("common 3") && msg.contains("half of the smaller run's 8"), "{msg}");
    }

    #[test]
    fn tables_without_hashes_pair_by_id_and_say_so() {
        let old = SampleTable { images: ImageTraces::new(), ..table(&[1, 2, 3], &[]) };
        let p = pair(&old, &table(&[1, 2, 3], &[2]));
        // The differing hash of image 2 cannot be seen: paired by id.
        assert_eq!(p.common, BTreeSet::from([1, 2, 3]));
        assert_eq!(p.by_id_only, Some("the baseline recorded no image hashes (an older version)"));
        let line = p.first_line().unwrap();
        assert!(
            line.starts_with("Images paired by id only (the baseline recorded no image hashes"),
            "{line}"
        );
        let p = pair(&old, &SampleTable { images: ImageTraces::new(), ..table(&[1, 2], &[]) });
        let line = p.first_line().unwrap();
        assert!(
            line.starts_with("Compared on the 2 images") && line.contains("paired by id only (neither"),
            "{line}"
        );
    }

    #[test]
    fn models_pair_by_label_and_one_model_is_not_paired_with_several() {
        let two = crate::report::table::tests::two_model_table();
        let (b, c) = (Path::new("base/samples.parquet"), Path::new("cur/samples.parquet"));
        let same = pair_models(b, c, &two, &two).unwrap();
        assert_eq!((same.common.as_slice(), same.note()), (&["a".to_string(), "b".to_string()][..], None));
        // Model b only in the baseline, c only in the current study: named, not dropped.
        let mut other = two.clone();
        other.model_metrics[1].0 = "c".into();
        other.rows.iter_mut().filter(|r| r.model == "b").for_each(|r| r.model = "c".into());
        let p = pair_models(b, c, &two, &other).unwrap();
        assert_eq!(p.common, ["a"]);
        assert!(p.keeps("a") && !p.keeps("b") && !p.keeps("c"));
        assert_eq!(
            p.note().unwrap(),
            "Not compared: model b is only in the baseline; model c is only in the current run (models are \
             paired by label)."
        );
        // One model against several: refused, naming both tables.
        let one = example_table();
        let err = pair_models(b, c, &one, &two).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("base/samples.parquet is a study of one model"), "{msg}");
        assert!(msg.contains("cur/samples.parquet is a study of several models (a, b)"), "{msg}");
        // Two studies of one model: nothing to pair, every row kept.
        assert_eq!(pair_models(b, c, &one, &one).unwrap(), ModelPairing::default());
        assert!(ModelPairing::default().keeps(""));
    }

    #[test]
    fn a_repeated_row_is_refused_naming_the_file() {
        let mut t = table(&[1, 2], &[]);
        t.rows.push(t.rows[0].clone());
        let err = check_no_duplicates(Path::new("x/samples.parquet"), &t).unwrap_err();
        assert!(
            err.to_string().contains("x/samples.parquet") && err.to_string().contains("two rows for image 1")
        );
        assert!(check_no_duplicates(Path::new("x"), &table(&[1, 2], &[])).is_ok());
    }
}
