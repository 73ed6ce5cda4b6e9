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

/// Walks `roots` (files or folders; hidden entries and build folders are
/// not descended into, symlinked folders are not followed) for files of a
/// known format up to `max_bytes`.
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
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            found.skipped.push(Skipped { path: dir.to_path_buf(), reason: format!("cannot list: {err}") });
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !name.starts_with('.') && !IGNORED_DIRS.contains(&name.as_ref()) {
                walk(&path, max_bytes, found);
            }
        } else if !name.starts_with('.') {
            // Symlinks to files are read; symlinks to folders are not followed.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => consider(&path, meta.len(), max_bytes, found),
                Ok(_) => {}
                Err(err) => found.skipped.push(Skipped { path, reason: format!("cannot read: {err}") }),
            }
        }
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
