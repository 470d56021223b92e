//! Which images a table's rows were measured on: each image id's source file and the content
//! hash of its pixels as studied, and which study wrote a table.
//!
//! Why: an id alone is a position in a file or a folder listing, which can mean another image
//! in another run (a folder that gained a file, another `correct_only` selection). The source
//! (see [`crate::data::ImageSet::sources`]) lets a reader find the file; the hash
//! ([`crate::data::ImageSet::image_hash`]) lets `compare` pair only rows that saw the same
//! input. The study's fingerprint id, kept in each table's Parquet metadata and in `run.json`,
//! lets `report`, `merge` and `compare` refuse a table and a record that come from different
//! studies (a file copied over from elsewhere).

use crate::data::ImageSet;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Where one studied image comes from, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTrace {
    /// Its file: the path relative to the images folder, or `name[i]` in an npy/idx file.
    pub source: String,
    /// The content hash of its pixels as studied, 16 hex digits.
    pub hash: String,
}

/// The traces of a table's images, by image id.
pub type ImageTraces = BTreeMap<u32, ImageTrace>;

/// The traces of images `ids` of `set`.
pub fn traces_of(set: &ImageSet, ids: &[usize]) -> ImageTraces {
    ids.iter().map(|&i| (i as u32, ImageTrace { source: set.source(i), hash: set.image_hash(i) })).collect()
}

/// The traces of images `ids` as several models studied them, each from its own image set
/// (`sets`, one per model, in model order; models may resize differently): the source, and a
/// hash over every model's pixels, so that an image counts as the same in two studies only if
/// every model saw the same pixels. With one set, [`traces_of`] exactly.
pub fn traces_of_models(sets: &[&ImageSet], ids: &[usize]) -> ImageTraces {
    match sets {
        [] => ImageTraces::new(),
        [one] => traces_of(one, ids),
        several => ids
            .iter()
            .map(|&i| {
                let mut h = crate::fingerprint::ContentHash::default();
                for s in several {
                    h.update(s.image_hash(i).as_bytes());
                }
                (i as u32, ImageTrace { source: several[0].source(i), hash: format!("{:016x}", h.finish()) })
            })
            .collect(),
    }
}

/// The studied images as `run.json` lists them: `[{ "id", "source", "hash" }, ...]` in id order.
pub fn traces_json(traces: &ImageTraces) -> serde_json::Value {
    traces.iter().map(|(id, t)| serde_json::json!({ "id": id, "source": t.source, "hash": t.hash })).collect()
}

/// Builds the traces from a table's `image_id`, `source` and `image_hash` columns; an image id
/// given two sources or two hashes is a damaged table (an error naming `path`).
pub fn traces_from_columns(
    path: &Path,
    ids: &[u32],
    sources: &[&str],
    hashes: &[&str],
) -> Result<ImageTraces> {
    let mut traces = ImageTraces::new();
    for ((&id, &source), &hash) in ids.iter().zip(sources).zip(hashes) {
        let t = traces.entry(id).or_insert_with(|| ImageTrace { source: source.into(), hash: hash.into() });
        if t.source != source || t.hash != hash {
            return Err(Error::data(
                path,
                format!("image {id} has two sources or hashes ({} {} and {source} {hash})", t.source, t.hash),
            ));
        }
    }
    Ok(traces)
}

/// The most bytes a `run.json` or `.partial/study.json` may have (one lists every studied
/// image).
const MAX_RECORD_BYTES: u64 = 256 << 20;

/// A study record (`run.json`, `.partial/study.json`), read through the bounded reader and
/// parsed; an error naming the file if it is not JSON.
pub fn read_record(path: &Path) -> Result<serde_json::Value> {
    let bytes = crate::data::read_capped(path, MAX_RECORD_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not JSON: {e}")))
}

/// The study fingerprint that `run.json` (parsed as `meta`) records, if any.
pub fn recorded_study(meta: &serde_json::Value) -> Option<&str> {
    meta.get("fingerprint").and_then(|f| f.as_str())
}

/// Checks that the table at `table` (whose metadata records study `study`) and the record at
/// `run_json` (parsed as `meta`) belong to the same study; files written before the study was
/// recorded (either side) are trusted.
pub fn check_same_study(
    table: &Path,
    study: Option<&str>,
    run_json: &Path,
    meta: &serde_json::Value,
) -> Result<()> {
    match (study, recorded_study(meta)) {
        (Some(t), Some(r)) if t != r => Err(Error::data(
            table,
            format!(
                "was written by study {t}, but {} records study {r}: the two files come from different \
                 studies (one was copied or replaced); rerun the study, or restore the matching file",
                run_json.display()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_give_one_trace_per_image_and_refuse_conflicts() {
        let p = Path::new("s.parquet");
        let t =
            traces_from_columns(p, &[3, 1, 3], &["a.png", "b.png", "a.png"], &["h3", "h1", "h3"]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[&1], ImageTrace { source: "b.png".into(), hash: "h1".into() });
        assert_eq!(traces_json(&t)[0]["id"], 1);
        let err = traces_from_columns(p, &[3, 3], &["a.png", "a.png"], &["h3", "h4"]).unwrap_err();
        assert!(err.to_string().contains("image 3 has two sources or hashes"), "{err}");
    }

    #[test]
    fn a_table_and_a_record_of_different_studies_are_refused_naming_both() {
        let meta = serde_json::json!({ "fingerprint": "aaaa" });
        let (t, r) = (Path::new("x/samples.parquet"), Path::new("y/run.json"));
        assert!(check_same_study(t, Some("aaaa"), r, &meta).is_ok());
        let err = check_same_study(t, Some("bbbb"), r, &meta).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("x/samples.parquet") && msg.contains("y/run.json"), "{msg}");
        // Older files on either side are trusted.
        assert!(check_same_study(t, None, r, &meta).is_ok());
        assert!(check_same_study(t, Some("bbbb"), r, &serde_json::json!({})).is_ok());
    }
}
