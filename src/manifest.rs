//! What in an output folder fragility wrote: the folder's manifest, and the checks that keep
//! every command away from files it did not write.
//!
//! Why: a folder used to count as a study when it held a `run.json`, a `.lock` or a `shards/`
//! folder, and a fresh run then removed `plots/` and `examples/` and overwrote the page and
//! tables, whoever had written them; `explain --out` wrote into any folder. Names prove
//! nothing. So every command that writes into a folder (`run`, `merge`, `report`, `explain`)
//! records each file and folder it creates in `<folder>/.fragility-manifest.json` (written
//! atomically, *before* the file itself, so a kill never leaves a file of ours unrecorded), and
//! removes or overwrites only what the manifest lists. Any file it would write that exists and
//! is not listed makes it refuse (exit 2, naming the file) before the model and the images are
//! loaded. Folders it created are removed only when empty, file by file, so a user's file in
//! `plots/` survives; the two private folders (`.partial/`, a run's chunks, and `.staging/`,
//! explain's next files) are the tool's alone and go whole.
//!
//! Folders made before manifests existed: a study folder counts as ours when its `run.json`
//! (or an interrupted run's `.partial/study.json`) is a fragility record (a JSON object with
//! the study `fingerprint`); its standard outputs are then adopted (`run.json`, the tables,
//! `index.html`, `plots/*.png|svg`, `examples/*.png`, `.partial/`). A bare `.lock` or
//! `shards/` never makes a folder a study. An `explain` folder without a manifest must be
//! empty.
//!
//! [`check_out_dir`] is the one check of an output path's shape (a file, a dangling symbolic
//! link, a file among its parents), done before anything is loaded.

use crate::atomic::temp_target;
use crate::error::{Error, Result};
use crate::lock::{OutLock, LOCK_FILE};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// The manifest's file name inside the output folder.
pub const MANIFEST_FILE: &str = ".fragility-manifest.json";

/// The tables and the page of a study, at the top of its folder.
pub const STUDY_FILES: [&str; 4] = ["samples.parquet", "summary.parquet", "run.json", "index.html"];

/// A study's folders of figures, with the extensions of the files it writes there.
const FIGURE_FOLDERS: [(&str, &[&str]); 2] = [("plots", &["png", "svg"]), ("examples", &["png"])];

/// Folders that only the tool writes into: ours whole once listed.
const PRIVATE_FOLDERS: [&str; 2] = [".partial", ".staging"];

/// The largest manifest read (one line per file written).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Which command's folder it is: a study's (`run`, `merge`, `report`) or `explain`'s. One
/// folder never serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A study: tables, page, plots, panels, shards.
    Study,
    /// `explain`'s maps.
    Explain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Study => "study",
            Kind::Explain => "explain",
        }
    }
}

/// The files and folders fragility wrote in one output folder (paths relative to it, with `/`).
#[derive(Debug)]
pub struct Manifest {
    dir: PathBuf,
    kind: Kind,
    /// How the user names the folder, for messages: "`out`", "--out", "DIR".
    flag: &'static str,
    files: BTreeSet<String>,
    folders: BTreeSet<String>,
}

/// The error for a path fragility will not write: exit 2, naming the file and the way out.
fn refuse(path: &Path, flag: &str, why: &str) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        message: format!(
            "{why}; fragility never overwrites or removes files it did not write: set another {flag} (a new or empty folder), or move the file away"
        ),
    }
}

/// Checks that `path` can be an output folder before anything is loaded: it is a folder (or
/// a symbolic link to one), or it does not exist yet and its nearest existing parent is a
/// folder. A file, a dangling symbolic link, or a file among the parents is refused (exit 2)
/// naming the path and `flag`.
pub fn check_out_dir(path: &Path, flag: &str) -> Result<()> {
    let mut p = path;
    loop {
        match std::fs::symlink_metadata(p) {
            Ok(meta) => {
                let bad = |why: String| Error::Output {
                    path: path.to_path_buf(),
                    message: format!("{flag} must be a folder, but {why}"),
                };
                return match std::fs::metadata(p) {
                    Ok(target) if target.is_dir() => Ok(()),
                    Ok(_) if p == path => Err(bad("it is a file".into())),
                    Ok(_) => Err(bad(format!("{} is a file", p.display()))),
                    Err(_) if meta.file_type().is_symlink() => {
                        let to = std::fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default();
                        Err(bad(format!(
                            "{} is a symbolic link to {to:?}, which does not exist",
                            p.display()
                        )))
                    }
                    Err(e) => Err(Error::io(p, e)),
                };
            }
            // (a file among the parents gives "not a folder": the parent loop names it)
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(Error::io(p, e)),
        }
    }
}

/// `rel` joined with `name` (`""` is the folder itself).
fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Whether the JSON file at `path` is a record fragility writes (`run.json`,
/// `.partial/study.json`): an object with the study's `fingerprint`.
fn is_record(path: &Path) -> bool {
    crate::data::read_capped(path, 256 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("fingerprint").and_then(|f| f.as_str()).is_some_and(|f| !f.is_empty()))
}

/// The names in folder `dir` (none if it is not a folder).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether `p` exists, as a file, folder or link (a dangling link exists too).
fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl Manifest {
    /// Takes `dir`'s lock and reads its manifest, refusing (before anything is loaded) a
    /// folder of the other kind or one whose files this command would write without owning
    /// them: for a study, `writes` (names among [`STUDY_FILES`]) and the figures in `plots/`
    /// and `examples/` (and `.partial/` when `writes` holds `run.json`); for `explain`,
    /// anything it did not write.
    pub fn take(dir: &Path, kind: Kind, flag: &'static str, writes: &[&str]) -> Result<(OutLock, Manifest)> {
        check_out_dir(dir, flag)?;
        let check = || {
            let m = Manifest::open(dir, kind, flag)?;
            match kind {
                Kind::Study => m.check_study(writes)?,
                Kind::Explain => m.check_explain()?,
            }
            Ok::<_, Error>(m)
        };
        // Once before the lock, so that a refused folder gets not even a lock file; once
        // more under it, as another process may have written in between.
        if dir.is_dir() {
            OutLock::check_free(dir)?;
            check()?;
        }
        let lock = OutLock::acquire(dir)?;
        Ok((lock, check()?))
    }

    /// The manifest of `dir`: read from its file, adopted from a study made before manifests
    /// existed, or empty.
    pub fn open(dir: &Path, kind: Kind, flag: &'static str) -> Result<Manifest> {
        let mut m =
            Manifest { dir: dir.to_path_buf(), kind, flag, files: BTreeSet::new(), folders: BTreeSet::new() };
        let path = dir.join(MANIFEST_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => m.read(&path)?,
            Ok(_) => return Err(refuse(&path, flag, "this is not a manifest fragility wrote")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if kind == Kind::Study && m.is_legacy_study() {
                    m.adopt_legacy();
                }
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        Ok(m)
    }

    /// Reads the manifest file at `path`, checking its kind and that every entry is a plain
    /// path inside the folder.
    fn read(&mut self, path: &Path) -> Result<()> {
        let bytes = crate::data::read_capped(path, MAX_MANIFEST_BYTES)?;
        let damaged = |why: &str| {
            Error::data(
                path,
                format!("{why}: not a manifest fragility wrote (move it away, or set another {})", self.flag),
            )
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| damaged("not JSON"))?;
        if v.get("written_by").and_then(|w| w.as_str()) != Some("fragility") {
            return Err(damaged("no `written_by: fragility`"));
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != self.kind.name() {
            return Err(Error::Output {
                path: self.dir.clone(),
                message: format!(
                    "this folder holds the output of `fragility {}`; {} writes into its own folder: set another {}",
                    if kind == "study" { "run" } else { kind },
                    if self.kind == Kind::Study { "a study" } else { "`explain`" },
                    self.flag
                ),
            });
        }
        for (key, set) in [("files", &mut self.files), ("folders", &mut self.folders)] {
            for e in v.get(key).and_then(|l| l.as_array()).ok_or_else(|| damaged(key))? {
                let rel = e.as_str().ok_or_else(|| damaged(key))?;
                if rel.is_empty() || !Path::new(rel).components().all(|c| matches!(c, Component::Normal(_))) {
                    return Err(damaged(&format!("entry {rel:?} is not a path inside the folder")));
                }
                set.insert(rel.to_string());
            }
        }
        Ok(())
    }

    /// A study folder written before manifests existed: its `run.json`, or its interrupted
    /// run's `.partial/study.json`, is a fragility record.
    fn is_legacy_study(&self) -> bool {
        is_record(&self.dir.join("run.json")) || is_record(&self.dir.join(".partial/study.json"))
    }

    /// Lists a legacy study's standard outputs as ours.
    fn adopt_legacy(&mut self) {
        for f in STUDY_FILES {
            if self.dir.join(f).is_file() {
                self.files.insert(f.to_string());
            }
        }
        for (folder, exts) in FIGURE_FOLDERS {
            if !self.dir.join(folder).is_dir() {
                continue;
            }
            self.folders.insert(folder.to_string());
            for name in entries(&self.dir.join(folder)) {
                if exts.iter().any(|x| name.ends_with(&format!(".{x}"))) {
                    self.files.insert(join(folder, &name));
                }
            }
        }
        if self.dir.join(".partial").is_dir() {
            self.folders.insert(".partial".into());
        }
    }
}

/// The first entry of folder `dir` that is not fragility's when `dir` holds no study of ours
/// (no manifest, no legacy record); `None` when it is ours, empty, new, or holds only a lock
/// and the `shards/` of sharded runs.
pub fn foreign_entry(dir: &Path) -> Option<String> {
    if exists(&dir.join(MANIFEST_FILE)) {
        return None;
    }
    let m = Manifest::open(dir, Kind::Study, "`out`").ok()?;
    if !m.files.is_empty() || !m.folders.is_empty() {
        return None;
    }
    entries(dir)
        .into_iter()
        .find(|n| n != LOCK_FILE && n != "shards" && temp_target(n) != Some(MANIFEST_FILE))
}

impl Manifest {
    /// Whether `rel` is ours: listed, inside a private folder of ours, or the temporary file
    /// of an atomic write of a file of ours (or of the manifest).
    pub fn owns(&self, rel: &str) -> bool {
        if self.files.contains(rel) || self.folders.contains(rel) {
            return true;
        }
        if PRIVATE_FOLDERS.iter().any(|p| self.folders.contains(*p) && rel.starts_with(&format!("{p}/"))) {
            return true;
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        // A kill during an atomic write may come before its target is recorded as a figure
        // of ours: in a figure folder of ours, the temporary file of any figure is ours.
        let figure = |t: &str| {
            self.folders.contains(parent)
                && FIGURE_FOLDERS
                    .iter()
                    .any(|(f, exts)| *f == parent && exts.iter().any(|x| t.ends_with(&format!(".{x}"))))
        };
        temp_target(name)
            .is_some_and(|t| t == MANIFEST_FILE || self.files.contains(&join(parent, t)) || figure(t))
    }

    /// Refuses the first of `rels` that exists and is not ours.
    fn check_rels(&self, rels: impl IntoIterator<Item = String>) -> Result<()> {
        for rel in rels {
            if exists(&self.dir.join(&rel)) && !self.owns(&rel) {
                let why = format!("{} was not written by fragility{}", rel, self.kind_note());
                return Err(refuse(&self.dir.join(&rel), self.flag, &why));
            }
        }
        Ok(())
    }

    fn kind_note(&self) -> &'static str {
        match self.kind {
            Kind::Study => "",
            Kind::Explain => " (explain writes into a new or empty folder, or one an earlier explain wrote)",
        }
    }

    /// A study's check (see [`Manifest::take`]).
    fn check_study(&self, writes: &[&str]) -> Result<()> {
        self.check_rels(writes.iter().map(|w| w.to_string()))?;
        let mut figures = Vec::new();
        for (folder, exts) in FIGURE_FOLDERS {
            figures.push(folder.to_string());
            for name in entries(&self.dir.join(folder)) {
                let target = temp_target(&name).unwrap_or(&name);
                if exts.iter().any(|x| target.ends_with(&format!(".{x}"))) {
                    figures.push(join(folder, &name));
                }
            }
        }
        self.check_rels(figures)?;
        if writes.contains(&"run.json") {
            self.check_rels([".partial".to_string()])?;
        }
        Ok(())
    }

    /// Explain's check: everything in the folder but its lock is ours.
    fn check_explain(&self) -> Result<()> {
        let names = entries(&self.dir).into_iter().filter(|n| n != LOCK_FILE && n != MANIFEST_FILE);
        self.check_rels(names)
    }

    /// Records `rels` (files, relative to the folder) and every folder that must be created
    /// for them as ours, and saves the manifest — before they are written. Refuses one that
    /// exists and is not ours.
    pub fn claim<S: AsRef<str>>(&mut self, rels: &[S]) -> Result<()> {
        self.check_rels(rels.iter().map(|r| r.as_ref().to_string()))?;
        for rel in rels {
            let rel = rel.as_ref();
            let mut parent = Path::new(rel).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                let p_rel = p.to_string_lossy().replace('\\', "/");
                if !exists(&self.dir.join(p)) {
                    self.folders.insert(p_rel);
                } else if !self.owns(&p_rel) && !self.dir.join(p).is_dir() {
                    return Err(refuse(&self.dir.join(p), self.flag, "a file stands where a folder belongs"));
                }
                parent = p.parent();
            }
            self.files.insert(rel.to_string());
        }
        self.save()
    }

    /// `path` (inside the folder) as a manifest entry.
    pub fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir).unwrap_or(path).to_string_lossy().replace('\\', "/")
    }

    /// Writes the manifest atomically.
    pub fn save(&self) -> Result<()> {
        let v = serde_json::json!({
            "written_by": "fragility",
            "version": env!("CARGO_PKG_VERSION"),
            "kind": self.kind.name(),
            "note": "the files and folders fragility wrote here; it removes or overwrites nothing else",
            "folders": self.folders,
            "files": self.files,
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::atomic::write_bytes(&self.dir.join(MANIFEST_FILE), text.as_bytes())
    }

    /// Removes what of ours is `rel` or under it: a private folder whole, else file by file,
    /// then the folders of ours that are left empty (a folder holding a file of someone else
    /// stays). Drops them from the manifest and saves it.
    pub fn remove(&mut self, rel: &str) -> Result<()> {
        let under = |e: &String| e == rel || e.starts_with(&format!("{rel}/"));
        if PRIVATE_FOLDERS.contains(&rel) && self.folders.contains(rel) {
            let p = self.dir.join(rel);
            match std::fs::remove_dir_all(&p) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
        }
        let files: Vec<String> = self.files.iter().filter(|e| under(e)).cloned().collect();
        for f in &files {
            let p = self.dir.join(f);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
            self.files.remove(f);
        }
        // Deepest first; a folder that is not empty (someone else's file) stays ours.
        let folders: Vec<String> = self.folders.iter().rev().filter(|e| under(e)).cloned().collect();
        for f in folders {
            let p = self.dir.join(&f);
            if std::fs::remove_dir(&p).is_ok() || !exists(&p) {
                self.folders.remove(&f);
            }
        }
        self.save()
    }

    /// Removes the temporary files a killed process left (`.NAME.tmpPID` of a file of ours)
    /// in the folder and in its folders of ours.
    pub fn remove_leftovers(&self) -> Result<()> {
        let folders = std::iter::once(String::new()).chain(self.folders.iter().cloned());
        for folder in folders {
            for name in entries(&self.dir.join(&folder)) {
                let rel = join(&folder, &name);
                let p = self.dir.join(&rel);
                if temp_target(&name).is_some() && self.owns(&rel) && p.is_file() {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        Ok(())
    }

    /// The files listed (relative paths).
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(String::as_str)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(dir: &Path) -> Manifest {
        Manifest::open(dir, Kind::Study, "`out`").unwrap()
    }

    #[test]
    fn claimed_files_are_ours_and_removal_spares_a_foreign_file_in_our_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let mut m = study(d);
        m.claim(&["plots/a.png", "run.json"]).unwrap();
        std::fs::create_dir_all(d.join("plots")).unwrap();
        std::fs::write(d.join("plots/a.png"), b"ours").unwrap();
        std::fs::write(d.join("plots/mine.png"), b"user").unwrap();
        // Read back from disk: the same entries.
        let mut m = study(d);
        assert!(m.owns("plots/a.png") && m.owns("plots") && !m.owns("plots/mine.png"));
        // The temporary file of a figure in a figure folder of ours is ours; other names not.
        assert!(
            m.owns("plots/.a.png.tmp12") && m.owns("plots/.b.svg.tmp12") && !m.owns("plots/.mine.txt.tmp12")
        );
        assert!(!m.owns(".notes.txt.tmp12") && m.owns(".run.json.tmp12"));
        let err = m.check_study(&["run.json"]).unwrap_err();
        assert!(err.to_string().contains("plots/mine.png was not written by fragility"), "{err}");
        assert_eq!(err.exit_code(), 2);
        m.remove("plots").unwrap();
        assert!(!d.join("plots/a.png").exists());
        assert_eq!(std::fs::read(d.join("plots/mine.png")).unwrap(), b"user");
        assert!(m.owns("plots"), "a folder that is not empty stays listed");
        std::fs::remove_file(d.join("plots/mine.png")).unwrap();
        m.remove("plots").unwrap();
        assert!(!d.join("plots").exists());
    }

    #[test]
    fn a_foreign_file_is_never_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("index.html"), b"user").unwrap();
        let mut m = study(tmp.path());
        assert!(m.claim(&["index.html"]).is_err());
        assert!(!tmp.path().join(MANIFEST_FILE).exists());
    }

    #[test]
    fn only_a_fragility_record_makes_a_legacy_study() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("shards")).unwrap();
        std::fs::write(d.join(".lock"), b"123").unwrap();
        std::fs::write(d.join("run.json"), br#"{"note": "mine"}"#).unwrap();
        std::fs::write(d.join("summary.parquet"), b"x").unwrap();
        assert!(!study(d).owns("run.json") && !study(d).owns("summary.parquet"));
        std::fs::write(d.join("run.json"), br#"{"fingerprint": "0123456789abcdef", "settings": {}}"#)
            .unwrap();
        let m = study(d);
        assert!(m.owns("run.json") && m.owns("summary.parquet") && !m.owns("shards"));
        // A manifest of the other kind, or damaged, is refused.
        let mut e = Manifest::open(&d.join("maps"), Kind::Explain, "--out").unwrap();
        e.claim(&["ids.npy"]).unwrap();
        assert!(Manifest::open(&d.join("maps"), Kind::Study, "`out`").is_err());
        std::fs::write(d.join("maps").join(MANIFEST_FILE), b"{}").unwrap();
        assert!(Manifest::open(&d.join("maps"), Kind::Explain, "--out").is_err());
    }

    #[test]
    fn an_output_path_must_be_a_folder_or_not_exist_below_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("file"), b"x").unwrap();
        assert!(check_out_dir(&d.join("new/deeper"), "`out`").is_ok());
        assert!(check_out_dir(d, "`out`").is_ok());
        let msg = |p: &Path| check_out_dir(p, "--out").unwrap_err().to_string();
        assert!(msg(&d.join("file")).contains("--out must be a folder, but it is a file"));
        assert!(msg(&d.join("file/sub")).contains("file is a file"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
            assert!(msg(&d.join("dangling")).contains("symbolic link"));
            assert!(msg(&d.join("dangling/sub")).contains("which does not exist"));
            std::os::unix::fs::symlink(d.join("file"), d.join("to_file")).unwrap();
            assert!(msg(&d.join("to_file")).contains("a file"));
        }
    }
}
