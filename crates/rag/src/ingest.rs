//! Finding and reading what to ingest: files and folders become sources of
//! a known format; everything else is skipped with a reason (never an
//! abort), and each source's content hash decides whether re-ingesting it
//! is needed.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chunk::{Format, html_to_text};

/// Default cap on one file's size.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Folders never descended into (besides hidden ones).
const IGNORED_DIRS: &[&str] = &["node_modules", "target", "__pycache__", "venv"];

/// A file to ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its path, as found under the given roots.
    pub path: PathBuf,
    /// How its text is structured.
    pub format: Format,
    /// Whether it is HTML (converted to text before chunking).
    pub html: bool,
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file (or folder).
    pub path: PathBuf,
    /// Why, for the summary.
    pub reason: String,
}

/// What [`discover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Files to ingest, sorted by path.
    pub sources: Vec<Source>,
    /// Files and folders left out, with reasons.
    pub skipped: Vec<Skipped>,
}

/// A source's content, ready to chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The text to chunk (HTML already converted).
    pub text: String,
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Walks `roots` for files of a known format up to `max_bytes`.
///
/// A root that is a file is considered as it is (even if an ignore rule or
/// its name would leave it out). Folders are walked with ripgrep's `ignore`
/// crate, in file-name order:
/// - hidden entries (names starting with `.`) and build folders
///   (`node_modules`, `target`, `__pycache__`, `venv`) are not descended
///   into or read;
/// - paths matched by `.gitignore`, `.ignore` or `.git/info/exclude` rules
///   (in the folder, below it, or in its parent folders; also outside a Git
///   repository; the user's global Git excludes are not read) are left out;
/// - symlinks to files are read, symlinked folders are not followed (a
///   document is known by one path, and a walk never leaves its root), so a
///   symlink loop cannot trap the walk.
///
/// Those three are left out silently; every other file or folder left out
/// (unsupported type, too large, a symlinked folder, unreadable, a dangling
/// or looping symlink) is in [`Discovery::skipped`] with a reason, and so is
/// an ignore file with a rule that could not be applied (its other rules
/// still are).
pub fn discover(roots: &[PathBuf], max_bytes: u64) -> Discovery {
    let mut found = Discovery::default();
    for root in roots {
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => walk(root, max_bytes, &mut found),
            Ok(meta) => consider(root, meta.len(), max_bytes, &mut found),
            Err(err) => found.skipped.push(Skipped { path: root.clone(), reason: format!("cannot read: {err}") }),
        }
    }
    found.sources.sort_by(|a, b| a.path.cmp(&b.path));
    found.sources.dedup_by(|a, b| a.path == b.path);
    found
}

fn walk(dir: &Path, max_bytes: u64, found: &mut Discovery) {
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(true)
        // Ignore files apply in any folder, not only inside a Git repository.
        .require_git(false)
        // Per-user settings would make a walk differ between machines.
        .git_global(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| {
            let build_dir = entry.file_type().is_some_and(|kind| kind.is_dir())
                && entry.file_name().to_str().is_some_and(|name| IGNORED_DIRS.contains(&name));
            entry.depth() == 0 || !build_dir
        })
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                let rules = err.is_partial();
                found.skipped.push(walk_error(&err, dir, rules));
                continue;
            }
        };
        // A folder whose ignore files could not all be read is still walked.
        if let Some(err) = entry.error() {
            found.skipped.push(walk_error(err, entry.path(), true));
        }
        if entry.depth() == 0 || entry.file_type().is_some_and(|kind| kind.is_dir()) {
            continue;
        }
        let path = entry.into_path();
        // Symlinks are resolved here: a file is read, a folder is not followed.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => consider(&path, meta.len(), max_bytes, found),
            Ok(meta) if meta.is_dir() => {
                found.skipped.push(Skipped { path, reason: "symlinked folder (not followed)".to_owned() });
            }
            Ok(_) => found.skipped.push(Skipped { path, reason: "not a regular file".to_owned() }),
            Err(err) => found.skipped.push(Skipped { path, reason: format!("cannot read: {err}") }),
        }
    }
}

/// What an error of the walk left out: the path it names (else `near`) and
/// why (`rules`: an ignore file could not be read or parsed in full).
fn walk_error(err: &ignore::Error, near: &Path, rules: bool) -> Skipped {
    let path = error_path(err).unwrap_or(near).to_path_buf();
    let cause = error_cause(err);
    let reason =
        if rules { format!("ignore rules only partly applied: {cause}") } else { format!("cannot read: {cause}") };
    Skipped { path, reason }
}

/// The path an error of the walk is about.
fn error_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::Loop { child, .. } => Some(child),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => error_path(err),
        ignore::Error::Partial(errs) => errs.iter().find_map(error_path),
        _ => None,
    }
}

/// An error of the walk without the path (the summary prints that).
fn error_cause(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. } | ignore::Error::WithDepth { err, .. } => error_cause(err),
        other => other.to_string(),
    }
}

fn consider(path: &Path, bytes: u64, max_bytes: u64, found: &mut Discovery) {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let html = matches!(ext.as_deref(), Some("html" | "htm" | "xhtml"));
    let format = if html { Some(Format::Markdown) } else { Format::of(path) };
    let Some(format) = format else {
        let what = ext.map_or_else(|| "no extension".to_owned(), |e| format!(".{e}"));
        found.skipped.push(Skipped { path: path.to_path_buf(), reason: format!("unsupported file type ({what})") });
        return;
    };
    if bytes > max_bytes {
        found.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason: format!("too large ({bytes} bytes; the limit is {max_bytes})"),
        });
        return;
    }
    found.sources.push(Source { path: path.to_path_buf(), format, html });
}

/// Reads a source: its text and content hash, or why it cannot be ingested
/// (unreadable, binary, not UTF-8, grown past `max_bytes`).
pub fn load(source: &Source, max_bytes: u64) -> Result<Loaded, String> {
    let bytes = std::fs::read(&source.path).map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("too large ({} bytes; the limit is {max_bytes})", bytes.len()));
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary content (NUL bytes)".to_owned());
    }
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let text = String::from_utf8(bytes)
        .map_err(|err| format!("not UTF-8 text (at byte {})", err.utf8_error().valid_up_to()))?;
    let text = if source.html { html_to_text(&text) } else { text };
    Ok(Loaded { text, hash, bytes: size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_and_everything_left_out_has_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/deep")).unwrap();
        std::fs::create_dir_all(root.join("docs/.git")).unwrap();
        std::fs::create_dir_all(root.join("docs/node_modules/x")).unwrap();
        std::fs::write(root.join("docs/a.md"), "# A\n\ntext").unwrap();
        std::fs::write(root.join("docs/deep/b.rs"), "fn main() {}").unwrap();
        std::fs::write(root.join("docs/page.html"), "<h1>T</h1><p>x &amp; y</p>").unwrap();
        std::fs::write(root.join("docs/photo.png"), [0u8, 1, 2]).unwrap();
        std::fs::write(root.join("docs/huge.txt"), "x".repeat(2000)).unwrap();
        std::fs::write(root.join("docs/.hidden.md"), "secret").unwrap();
        std::fs::write(root.join("docs/.git/config.txt"), "x").unwrap();
        std::fs::write(root.join("docs/node_modules/x/readme.md"), "x").unwrap();
        std::fs::write(root.join("notes.txt"), "loose file").unwrap();

        let found = discover(&[root.join("docs"), root.join("notes.txt"), root.join("missing")], 1000);
        let names: Vec<String> =
            found.sources.iter().map(|s| s.path.strip_prefix(root).unwrap().display().to_string()).collect();
        assert_eq!(names, ["docs/a.md", "docs/deep/b.rs", "docs/page.html", "notes.txt"]);
        assert!(found.sources[2].html);
        let reasons: Vec<(String, &str)> = found
            .skipped
            .iter()
            .map(|s| (s.path.file_name().unwrap().to_string_lossy().into_owned(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|(n, r)| n == "huge.txt" && r.contains("too large")), "{reasons:?}");
        assert!(reasons.iter().any(|(n, r)| n == "photo.png" && r.contains("unsupported file type (.png)")));
        assert!(reasons.iter().any(|(n, r)| n == "missing" && r.contains("cannot read")));
    }

    fn relative(root: &Path, paths: impl IntoIterator<Item = PathBuf>) -> Vec<String> {
        paths.into_iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect()
    }

    #[test]
    fn gitignore_and_ignore_rules_leave_files_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs/generated")).unwrap();
        std::fs::create_dir_all(root.join("docs/sub")).unwrap();
        // Not a Git repository: the rules apply all the same.
        std::fs::write(root.join("docs/.gitignore"), "generated/\n*.log\n!keep.log\n").unwrap();
        std::fs::write(root.join("docs/sub/.ignore"), "draft.md\n").unwrap();
        std::fs::write(root.join("docs/generated/api.md"), "# API").unwrap();
        std::fs::write(root.join("docs/debug.log"), "noise").unwrap();
        std::fs::write(root.join("docs/keep.log"), "kept by a negated rule").unwrap();
        std::fs::write(root.join("docs/readme.md"), "# Readme").unwrap();
        std::fs::write(root.join("docs/sub/draft.md"), "draft").unwrap();
        std::fs::write(root.join("docs/sub/final.md"), "final").unwrap();

        let found = discover(&[root.join("docs")], 1000);
        let names = relative(root, found.sources.iter().map(|s| s.path.clone()));
        assert_eq!(names, ["docs/keep.log", "docs/readme.md", "docs/sub/final.md"]);
        // Ignored paths are left out silently, like hidden ones.
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);

        // A rule that is not a valid glob is reported; the others still apply.
        std::fs::write(root.join("docs/sub/.ignore"), "draft.md\nbad[z-a]\n").unwrap();
        let found = discover(&[root.join("docs")], 1000);
        let names = relative(root, found.sources.iter().map(|s| s.path.clone()));
        assert_eq!(names, ["docs/keep.log", "docs/readme.md", "docs/sub/final.md"]);
        let skipped: Vec<(String, &str)> =
            found.skipped.iter().map(|s| (relative(root, [s.path.clone()]).remove(0), s.reason.as_str())).collect();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].0, "docs/sub/.ignore");
        assert!(skipped[0].1.starts_with("ignore rules only partly applied"), "{skipped:?}");

        // A file named as a root is taken even if a rule matches it.
        let found = discover(&[root.join("docs/debug.log")], 1000);
        assert_eq!(relative(root, found.sources.iter().map(|s| s.path.clone())), ["docs/debug.log"]);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_end_and_symlinked_folders_are_reported() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/a.md"), "# A").unwrap();
        std::fs::write(root.join("outside.md"), "# Outside").unwrap();
        symlink(root.join("docs"), root.join("docs/loop")).unwrap(); // a folder containing itself
        symlink("self.md", root.join("docs/self.md")).unwrap(); // a link to itself
        symlink(root.join("nowhere.md"), root.join("docs/dangling.md")).unwrap();
        symlink(root.join("outside.md"), root.join("docs/link.md")).unwrap();

        let found = discover(&[root.join("docs")], 1000);
        let names = relative(root, found.sources.iter().map(|s| s.path.clone()));
        assert_eq!(names, ["docs/a.md", "docs/link.md"]);
        let skipped: Vec<(String, &str)> = found
            .skipped
            .iter()
            .map(|s| (s.path.strip_prefix(root).unwrap().display().to_string(), s.reason.as_str()))
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(skipped[0].0, "docs/dangling.md");
        assert!(skipped[0].1.starts_with("cannot read"), "{skipped:?}");
        assert_eq!(skipped[1], ("docs/loop".to_owned(), "symlinked folder (not followed)"));
        assert_eq!(skipped[2].0, "docs/self.md");
        assert!(skipped[2].1.starts_with("cannot read"), "{skipped:?}");

        // A symlinked folder given as a root is walked, once.
        let found = discover(&[root.join("docs/loop")], 1000);
        let names = relative(root, found.sources.iter().map(|s| s.path.clone()));
        assert_eq!(names, ["docs/loop/a.md", "docs/loop/link.md"]);
    }

    #[test]
    fn loading_hashes_converts_html_and_refuses_binary_or_invalid_text() {
        let dir = tempfile::tempdir().unwrap();
        let source = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let html = name.ends_with(".html");
            Source { path, format: if html { Format::Markdown } else { Format::Text }, html }
        };
        let plain = load(&source("a.txt", b"hello"), 100).unwrap();
        assert_eq!(plain.hash, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!((plain.text.as_str(), plain.bytes), ("hello", 5));
        assert_eq!(load(&source("p.html", b"<p>a &lt; b</p>"), 100).unwrap().text, "a < b");
        assert!(load(&source("bin.txt", b"ab\0cd"), 100).unwrap_err().contains("binary"));
        assert!(load(&source("latin1.txt", b"caf\xe9"), 100).unwrap_err().contains("not UTF-8"));
        assert!(load(&source("big.txt", &[b'x'; 200]), 100).unwrap_err().contains("too large"));
    }
}
