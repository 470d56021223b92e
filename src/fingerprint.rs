//! A study's identity: its settings plus the content of every input file it reads.
//!
//! A finished or interrupted run continues, and shards merge, only when they are the same
//! study. File names are not enough: a model retrained under the same name, or a labels file
//! fixed in place, must not mix its rows with the old ones. So the [`Fingerprint`] holds a hash
//! of the resolved settings and a content hash of each input (weights, images, labels, class
//! names, masks, target maps); `run.json` and `.partial/study.json` record it, and a mismatch
//! names what changed.
//!
//! The content hash ([`ContentHash`]) is a fast non-cryptographic 64-bit hash over the bytes,
//! read as little-endian words through the SplitMix64 finaliser of [`crate::seed::mix`]: the
//! same value on every platform and in every version (it is part of the files we write, so it
//! must never change). It guards against accidents, not against an adversary. A folder of
//! images hashes each visible file's path (relative to the folder) and content, in sorted
//! order, as the loader reads it.

use crate::error::{Error, Result};
use crate::seed::mix;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A streaming 64-bit content hash (see the module docs).
#[derive(Debug, Clone)]
pub struct ContentHash {
    state: u64,
    /// Bytes of an incomplete 8-byte word carried to the next update.
    tail: [u8; 8],
    tail_len: usize,
    /// Total bytes seen, mixed in at the end so that trailing zeros change the hash.
    len: u64,
}

impl Default for ContentHash {
    fn default() -> Self {
        Self { state: 0xCBF2_9CE4_8422_2325, tail: [0; 8], tail_len: 0, len: 0 }
    }
}

impl ContentHash {
    /// Feeds `bytes`.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.tail_len > 0 {
            let take = (8 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 8 {
                return;
            }
            self.state = mix(self.state, u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.state = mix(self.state, u64::from_le_bytes(a));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        let h = if self.tail_len > 0 { mix(self.state, u64::from_le_bytes(last)) } else { self.state };
        mix(h, self.len)
    }
}

/// The content hash of a regular file, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = ContentHash::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// The content hash of an input: a regular file's bytes, or a folder's visible files (names
/// relative to the folder, and contents) in sorted order. Anything else (a device, a pipe)
/// is refused: it may never end.
pub fn hash_input(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return hash_file(path);
    }
    if !meta.is_dir() {
        return Err(Error::data(path, "not a regular file or a folder"));
    }
    let mut files = Vec::new();
    visible_files(path, &mut files)?;
    files.sort();
    let mut h = ContentHash::default();
    for f in &files {
        let rel = f.strip_prefix(path).unwrap_or(f).to_string_lossy().replace('\\', "/");
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(&hash_file(f)?.to_le_bytes());
    }
    Ok(h.finish())
}

/// The regular files under `dir`, recursively, skipping hidden entries (names starting `.`),
/// as the image folder loader does.
fn visible_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        let meta = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
        if meta.is_dir() {
            visible_files(&p, out)?;
        } else if meta.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// One input file of a study and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The config field that names it, e.g. `model.weights`.
    pub field: String,
    /// The file (or folder) as resolved from the config.
    pub path: PathBuf,
    /// Its content hash, 16 hex digits.
    pub hash: String,
}

/// The identity of a study (see the module docs).
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// Hash of the resolved settings, 16 hex digits.
    pub settings: String,
    /// Every input file read, in a fixed order.
    pub inputs: Vec<Input>,
    /// The settings themselves where known (not part of the identity): they let a mismatch
    /// name the settings that differ instead of saying only that some do.
    pub values: Option<serde_json::Value>,
}

/// Two fingerprints are the same study when their hashes agree: the settings' and each input
/// field's content hash. Neither the settings kept for messages nor the inputs' paths take
/// part (a path as resolved depends on the working folder; the settings record it as the
/// config wrote it).
impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.field == b.field && a.hash == b.hash)
    }
}

impl Eq for Fingerprint {}

/// The most differing settings a message names before it says how many more there are.
const MAX_NAMED_SETTINGS: usize = 4;

/// The dotted paths (`attacks[1].params.k`) at which `old` and `new` differ, with both
/// values, in document order.
pub fn setting_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(
        path: &str,
        old: Option<&serde_json::Value>,
        new: Option<&serde_json::Value>,
        out: &mut Vec<String>,
    ) {
        use serde_json::Value::{Array, Object};
        match (old, new) {
            (Some(Object(a)), Some(Object(b))) => {
                let mut keys: Vec<&String> = a.keys().collect();
                keys.extend(b.keys().filter(|k| !a.contains_key(*k)));
                for k in keys {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&p, a.get(k), b.get(k), out);
                }
            }
            (Some(Array(a)), Some(Array(b))) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{i}]"), Some(x), Some(y), out);
                }
            }
            (a, b) if a != b => {
                let show =
                    |v: Option<&serde_json::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
                out.push(format!("`{path}` {} → {}", show(a), show(b)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

/// The settings of a study as its fingerprint hashes them: everything but the config's own
/// path, the output folder and the title (none of which changes what is computed).
pub fn hashed_settings(resolved: &serde_json::Value) -> serde_json::Value {
    let mut v = resolved.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("config");
        o.remove("out");
        o.remove("title");
    }
    v
}

impl Fingerprint {
    /// Hashes `settings` (a JSON value) and every `(field, path)` input.
    pub fn compute(settings: &serde_json::Value, inputs: &[(String, PathBuf)]) -> Result<Fingerprint> {
        let inputs = inputs
            .iter()
            .map(|(field, path)| {
                Ok(Input {
                    field: field.clone(),
                    path: path.clone(),
                    hash: format!("{:016x}", hash_input(path)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let values = Some(settings.clone());
        let settings = format!("{:016x}", crate::seed::hash_str(&settings.to_string()));
        Ok(Fingerprint { settings, inputs, values })
    }

    /// One 16-hex-digit identity of settings and inputs together.
    pub fn id(&self) -> String {
        let mut h = ContentHash::default();
        h.update(self.settings.as_bytes());
        for i in &self.inputs {
            h.update(i.field.as_bytes());
            h.update(i.hash.as_bytes());
        }
        format!("{:016x}", h.finish())
    }

    /// The keys this fingerprint adds to `run.json` (and `.partial/study.json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "fingerprint": self.id(),
            "settings_fingerprint": self.settings,
            "inputs": self.inputs.iter().map(|i| serde_json::json!({
                "field": i.field,
                "path": i.path.display().to_string(),
                "hash": i.hash,
            })).collect::<Vec<_>>(),
        })
    }

    /// Reads the keys of [`Fingerprint::to_json`] back; `None` if they are missing (a file
    /// written by an older version, or not by us).
    pub fn from_json(v: &serde_json::Value) -> Option<Fingerprint> {
        let settings = v.get("settings_fingerprint")?.as_str()?.to_string();
        let inputs = v
            .get("inputs")?
            .as_array()?
            .iter()
            .map(|i| {
                Some(Input {
                    field: i.get("field")?.as_str()?.to_string(),
                    path: PathBuf::from(i.get("path")?.as_str()?),
                    hash: i.get("hash")?.as_str()?.to_string(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        // run.json keeps the resolved settings under `settings`, `.partial/study.json` too.
        let values = v.get("settings").map(hashed_settings);
        let fp = Fingerprint { settings, inputs, values };
        // A hand-edited record whose parts do not give its identity is not trusted either.
        (v.get("fingerprint").and_then(|f| f.as_str()) == Some(fp.id().as_str())).then_some(fp)
    }

    /// What differs between this study and a `recorded` one, in words; `None` if they are the
    /// same study. An unreadable record (`None`) always differs.
    pub fn difference(&self, recorded: Option<&Fingerprint>) -> Option<String> {
        let Some(old) = recorded else {
            return Some("its record has no input hashes (written by an older version, or damaged)".into());
        };
        let mut changes: Vec<String> = Vec::new();
        for i in &self.inputs {
            match old.inputs.iter().find(|o| o.field == i.field) {
                Some(o) if o.hash != i.hash => {
                    changes.push(format!("`{}` ({}) has changed since that run", i.field, i.path.display()))
                }
                None => changes.push(format!("`{}` ({}) was not an input", i.field, i.path.display())),
                _ => {}
            }
        }
        for o in &old.inputs {
            if !self.inputs.iter().any(|i| i.field == o.field) {
                changes.push(format!("`{}` ({}) is no longer an input", o.field, o.path.display()));
            }
        }
        if self.settings != old.settings {
            let named = match (&old.values, &self.values) {
                (Some(o), Some(n)) => setting_changes(o, n),
                _ => Vec::new(),
            };
            changes.push(match named.len() {
                0 => "the settings differ".into(),
                n if n <= MAX_NAMED_SETTINGS => format!("the settings differ: {}", named.join(", ")),
                n => format!(
                    "the settings differ: {} and {} more",
                    named[..MAX_NAMED_SETTINGS].join(", "),
                    n - MAX_NAMED_SETTINGS
                ),
            });
        }
        if changes.is_empty() && self.id() != old.id() {
            changes.push("the inputs differ".into());
        }
        (!changes.is_empty()).then(|| changes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(bytes: &[u8]) -> u64 {
        let mut h = ContentHash::default();
        h.update(bytes);
        h.finish()
    }

    #[test]
    fn content_hash_is_a_fixed_function_of_the_bytes() {
        // Pinned values: the hash is written into run.json, so it must never change.
        assert_eq!(hash(b""), mix(0xCBF2_9CE4_8422_2325, 0));
        let word = u64::from_le_bytes(*b"abcdefgh");
        assert_eq!(hash(b"abcdefgh"), mix(mix(0xCBF2_9CE4_8422_2325, word), 8));
        // Pieces of any size give the same hash as the whole.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = ContentHash::default();
        for piece in data.chunks(13) {
            h.update(piece);
        }
        assert_eq!(h.finish(), hash(&data));
        // Trailing zeros, one flipped bit: different hashes.
        assert_ne!(hash(b"abc"), hash(b"abc\0"));
        assert_ne!(hash(&data), hash(&[&data[..999], &[data[999] ^ 1]].concat()));
    }

    #[test]
    fn folder_hash_sees_contents_and_names_but_not_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cat")).unwrap();
        std::fs::write(dir.path().join("cat/a.png"), b"one").unwrap();
        let h0 = hash_input(dir.path()).unwrap();
        std::fs::write(dir.path().join(".DS_Store"), b"junk").unwrap();
        assert_eq!(hash_input(dir.path()).unwrap(), h0);
        std::fs::write(dir.path().join("cat/a.png"), b"two").unwrap();
        let h1 = hash_input(dir.path()).unwrap();
        assert_ne!(h1, h0);
        std::fs::rename(dir.path().join("cat/a.png"), dir.path().join("cat/b.png")).unwrap();
        assert_ne!(hash_input(dir.path()).unwrap(), h1);
    }

    #[test]
    fn setting_changes_name_each_differing_path_with_both_values() {
        let old = serde_json::json!({ "seed": 0, "attacks": [{ "name": "top_k", "params": { "k": 100 } }], "data": { "count": 20 } });
        let new = serde_json::json!({ "seed": 0, "attacks": [{ "name": "top_k", "params": { "k": 50 } }], "data": { "count": 20, "resize": 64 } });
        assert_eq!(
            setting_changes(&old, &new),
            vec!["`attacks[0].params.k` 100 → 50".to_string(), "`data.resize` (absent) → 64".to_string()]
        );
        assert!(setting_changes(&old, &old).is_empty());
    }

    #[test]
    fn difference_names_the_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        std::fs::write(&w, b"model one").unwrap();
        let inputs = vec![("model.weights".to_string(), w.clone())];
        let settings = serde_json::json!({ "seed": 1 });
        let before = Fingerprint::compute(&settings, &inputs).unwrap();
        let round = Fingerprint::from_json(&before.to_json()).unwrap();
        assert_eq!(round, before);
        assert_eq!(before.difference(Some(&round)), None);
        std::fs::write(&w, b"model two").unwrap();
        let after = Fingerprint::compute(&settings, &inputs).unwrap();
        let d = after.difference(Some(&before)).unwrap();
        assert!(d.contains("model.weights") && d.contains("w.safetensors"), "{d}");
        let other = Fingerprint::compute(&serde_json::json!({ "seed": 2 }), &inputs).unwrap();
        assert_eq!(other.difference(Some(&after)).unwrap(), "the settings differ: `seed` 1 → 2");
        // A record without the settings themselves (an older run.json) can only say that.
        let old_record = Fingerprint::from_json(&after.to_json()).unwrap();
        assert_eq!(other.difference(Some(&old_record)).unwrap(), "the settings differ");
        assert!(after.difference(None).is_some());
        // A tampered record is not read back.
        let mut j = before.to_json();
        j["inputs"][0]["hash"] = serde_json::json!("0000000000000000");
        assert_eq!(Fingerprint::from_json(&j), None);
    }
}
