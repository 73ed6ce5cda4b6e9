//! Structure-aware chunking: a document becomes retrieval units of about
//! a target size in tokens that follow its structure — Markdown sections
//! and paragraphs (fenced code kept whole), paragraphs of plain text,
//! top-level items of source code — and remember where they came from
//! (character offsets into the document text, the heading path) for
//! citations.
//!
//! Blocks (paragraphs, fences, items) are packed into a chunk until the
//! next would pass the target; a chunk never spans two sections. A block
//! larger than the target is cut at sentence ends, then lines, then words.
//! Consecutive chunks of one section overlap by about `overlap_tokens`.

use std::ops::Range;
use std::path::Path;

/// How a document is structured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown: `#` headings, blank-line paragraphs, fenced code.
    Markdown,
    /// Plain text: blank-line paragraphs.
    Text,
    /// Source code: top-level items separated by blank lines.
    Code,
}

impl Format {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::Text => "text",
            Self::Code => "code",
        }
    }

    /// The format [`Format::as_str`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Markdown, Self::Text, Self::Code].into_iter().find(|f| f.as_str() == name)
    }

    /// The format for a file name, or `None` for a file that is not text
    /// Engram chunks (HTML is converted to text first, see [`html_to_text`]).
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "md" | "markdown" | "mdx" => Self::Markdown,
            "txt" | "text" | "rst" | "adoc" | "org" | "csv" | "tsv" | "log" => Self::Text,
            "rs" | "py" | "js" | "ts" | "tsx" | "jsx" | "go" | "c" | "h" | "cc" | "cpp" | "hpp" | "java" | "kt"
            | "swift" | "rb" | "php" | "cs" | "scala" | "sh" | "bash" | "zsh" | "toml" | "yaml" | "yml" | "json"
            | "sql" | "lua" | "hs" | "ml" | "ex" | "exs" | "zig" | "wit" => Self::Code,
            _ => return None,
        })
    }
}

/// Counts tokens the way the embedder will.
pub trait TokenCount {
    /// Tokens in `text`.
    fn count(&self, text: &str) -> usize;
}

impl<F: Fn(&str) -> usize> TokenCount for F {
    fn count(&self, text: &str) -> usize {
        self(text)
    }
}

/// Chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Aim for chunks of about this many tokens (never more, except for a
    /// single word longer than that).
    pub target_tokens: usize,
    /// Tokens the next chunk of the same section repeats from this one.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self { target_tokens: 256, overlap_tokens: 32 }
    }
}

/// One retrieval unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub ordinal: usize,
    /// The text (a slice of the document).
    pub text: String,
    /// Character (Unicode scalar) offsets into the document text.
    pub chars: Range<usize>,
    /// Headings above it, outermost first.
    pub headings: Vec<String>,
    /// Its size by the counter.
    pub tokens: usize,
}

/// A run of the document that belongs together.
struct Block {
    bytes: Range<usize>,
    section: usize,
}

/// Chunks `text` as `format`.
pub fn chunk(text: &str, format: Format, options: ChunkOptions, counter: &impl TokenCount) -> Vec<Chunk> {
    let target = options.target_tokens.max(1);
    let overlap = options.overlap_tokens.min(target / 2);
    let (blocks, sections) = blocks(text, format);
    // Pieces: blocks, with oversized ones cut; each carries its section.
    let mut pieces: Vec<Block> = Vec::new();
    for block in blocks {
        if counter.count(&text[block.bytes.clone()]) <= target {
            pieces.push(block);
        } else {
            // Leave room for the overlap the next chunk starts with.
            for range in split_oversized(text, block.bytes.clone(), target - overlap, counter) {
                pieces.push(Block { bytes: range, section: block.section });
            }
        }
    }
    let mut chunks: Vec<(Range<usize>, usize)> = Vec::new();
    let mut current: Option<(Range<usize>, usize, usize)> = None; // bytes, section, tokens
    for piece in pieces {
        let tokens = counter.count(&text[piece.bytes.clone()]);
        current = match current {
            Some((range, section, used)) if section == piece.section && used + tokens <= target => {
                Some((range.start..piece.bytes.end, section, used + tokens))
            }
            Some((range, section, _)) => {
                chunks.push((range.clone(), section));
                // Overlap: start the next chunk a little inside this one,
                // when both are in the same section.
                let room = target.saturating_sub(tokens).min(overlap);
                let start = if section == piece.section && room > 0 {
                    tail_start(text, range.clone(), room, counter).min(piece.bytes.start)
                } else {
                    piece.bytes.start
                };
                let tokens = counter.count(&text[start..piece.bytes.end]);
                Some((start..piece.bytes.end, piece.section, tokens))
            }
            None => Some((piece.bytes, piece.section, tokens)),
        };
    }
    if let Some((range, section, _)) = current {
        chunks.push((range, section));
    }
    let mut chars = CharIndex::new(text);
    chunks
        .into_iter()
        .enumerate()
        .map(|(ordinal, (bytes, section))| {
            let slice = &text[bytes.clone()];
            Chunk {
                ordinal,
                text: slice.to_owned(),
                chars: chars.at(bytes.start)..chars.at(bytes.end),
                headings: sections[section].clone(),
                tokens: counter.count(slice),
            }
        })
        .collect()
}

/// Byte offset → character offset, for increasing offsets.
struct CharIndex<'a> {
    text: &'a str,
    byte: usize,
    char: usize,
}

impl<'a> CharIndex<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, byte: 0, char: 0 }
    }

    fn at(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            *self = Self::new(self.text);
        }
        self.char += self.text[self.byte..byte].chars().count();
        self.byte = byte;
        self.char
    }
}

/// The document's blocks and its sections' heading paths (section 0 is
/// the part before the first heading).
fn blocks(text: &str, format: Format) -> (Vec<Block>, Vec<Vec<String>>) {
    let mut sections: Vec<Vec<String>> = vec![Vec::new()];
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    let mut open: Option<usize> = None; // start of the block being read
    let mut fence: Option<&str> = None;
    let mut blank: Option<usize> = None; // code: where a run of blank lines began
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let trimmed = line.trim();
        let section = sections.len() - 1;
        if format == Format::Markdown {
            if let Some(marker) = fence {
                if trimmed.starts_with(marker) {
                    fence = None;
                }
                continue;
            }
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                fence = Some(&trimmed[..3]);
                open.get_or_insert(start);
                continue;
            }
            let level = trimmed.bytes().take_while(|b| *b == b'#').count();
            if (1..=6).contains(&level) && trimmed.as_bytes().get(level).is_none_or(|b| *b == b' ') {
                if let Some(begin) = open.take() {
                    out.push(Block { bytes: begin..start, section });
                }
                let title = trimmed[level..].trim().trim_end_matches('#').trim().to_owned();
                stack.retain(|(l, _)| *l < level);
                stack.push((level, title));
                sections.push(stack.iter().map(|(_, t)| t.clone()).collect());
                // The heading line opens its section's first block.
                open = Some(start);
                continue;
            }
        }
        if trimmed.is_empty() {
            // Code: a blank line ends an item only if the next line starts
            // a new top-level one (decided there).
            if format == Format::Code {
                blank.get_or_insert(start);
            } else if let Some(begin) = open.take() {
                out.push(Block { bytes: begin..start, section });
            }
            continue;
        }
        if let Some(gap) = blank.take()
            && !line.starts_with([' ', '\t', '}', ')', ']'])
            && let Some(begin) = open.take()
        {
            out.push(Block { bytes: begin..gap, section });
        }
        open.get_or_insert(start);
    }
    if let Some(begin) = open {
        out.push(Block { bytes: begin..text.len(), section: sections.len() - 1 });
    }
    (out.into_iter().filter(|b| !text[b.bytes.clone()].trim().is_empty()).collect(), sections)
}

/// Cuts an oversized block into ranges of at most `target` tokens: at
/// sentence ends, then line ends, then spaces.
fn split_oversized(text: &str, range: Range<usize>, target: usize, counter: &impl TokenCount) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let rest = &text[start..range.end];
        if counter.count(rest) <= target {
            out.push(start..range.end);
            break;
        }
        // The longest prefix within the target, ending at the best break.
        let mut best: Option<usize> = None;
        for breaks in [&[". ", "? ", "! ", ".\n", "?\n", "!\n"][..], &["\n"][..], &[" "][..]] {
            let mut candidates: Vec<usize> = breaks
                .iter()
                .flat_map(|b| rest.match_indices(b).map(move |(i, m)| i + m.len()))
                .filter(|end| *end < rest.len())
                .collect();
            candidates.sort_unstable();
            // Binary search the largest prefix that fits.
            let (mut lo, mut hi) = (0usize, candidates.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if counter.count(&rest[..candidates[mid]]) <= target {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo > 0 {
                best = Some(candidates[lo - 1]);
                break;
            }
        }
        // No break fits (one enormous word): cut at a character boundary.
        let end = best.unwrap_or_else(|| {
            let mut cut = rest.len().min(target * 4).max(1);
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            cut
        });
        out.push(start..start + end);
        start += end;
        // Skip the whitespace the cut left at the front.
        start += text[start..range.end].len() - text[start..range.end].trim_start().len();
    }
    out
}

/// Where a suffix of `range` with about `tokens` tokens begins (at a word
/// boundary).
fn tail_start(text: &str, range: Range<usize>, tokens: usize, counter: &impl TokenCount) -> usize {
    let slice = &text[range.clone()];
    let spaces: Vec<usize> = slice.match_indices(char::is_whitespace).map(|(i, s)| i + s.len()).collect();
    // The earliest word start whose suffix still fits in `tokens`.
    let (mut lo, mut hi) = (0usize, spaces.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if counter.count(&slice[spaces[mid]..]) <= tokens {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    spaces.get(lo).map_or(range.end, |at| range.start + at)
}

/// The text of an HTML document, with `h1`–`h6` turned into Markdown
/// headings and block elements into paragraphs, so it chunks as Markdown.
/// Scripts, styles and comments are dropped; entities are decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            break;
        };
        let tag = rest[1..gt].trim().to_ascii_lowercase();
        rest = &rest[gt + 1..];
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let closing = tag.starts_with('/');
        match name.as_str() {
            "script" | "style" | "noscript" | "template" if !closing => {
                let end = format!("</{name}");
                rest = rest.to_ascii_lowercase().find(&end).map_or("", |at| &rest[at..]);
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" if !closing => {
                let level = usize::from(name.as_bytes()[1] - b'0');
                out.push_str("\n\n");
                out.push_str(&"#".repeat(level));
                out.push(' ');
            }
            "p" | "div" | "section" | "article" | "li" | "ul" | "ol" | "table" | "tr" | "pre" | "blockquote" | "h1"
            | "h2" | "h3" | "h4" | "h5" | "h6" | "header" | "footer" | "main" | "nav" => out.push_str("\n\n"),
            "br" | "td" | "th" => out.push('\n'),
            _ => {}
        }
    }
    out.push_str(&decode_entities(rest));
    // Collapse runs of blank lines and trailing spaces.
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !text.is_empty() {
            text.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        text.push_str(&line);
    }
    text
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per whitespace-separated word.
    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn opts(target: usize, overlap: usize) -> ChunkOptions {
        ChunkOptions { target_tokens: target, overlap_tokens: overlap }
    }

    #[test]
    fn markdown_chunks_follow_sections_and_keep_headings_and_offsets() {
        let doc = "Intro line.\n\n# Setup\n\nInstall it.\n\n## Linux\n\nUse apt.\n\n```sh\napt install x\n\napt upgrade\n```\n\n# Use\n\nRun it — now.\n";
        let chunks = chunk(doc, Format::Markdown, opts(50, 0), &words);
        let headings: Vec<Vec<String>> = chunks.iter().map(|c| c.headings.clone()).collect();
        assert_eq!(
            headings,
            [vec![], vec!["Setup".to_owned()], vec!["Setup".to_owned(), "Linux".to_owned()], vec!["Use".to_owned()]]
        );
        // The fenced block (with its blank line) stays in one chunk.
        assert!(chunks[2].text.contains("apt install x\n\napt upgrade"), "{:?}", chunks[2].text);
        for c in &chunks {
            let by_chars: String = doc.chars().skip(c.chars.start).take(c.chars.len()).collect();
            assert_eq!(by_chars, c.text, "offsets are character offsets");
        }
        assert_eq!(chunks[3].text, "# Use\n\nRun it — now.\n");
    }

    #[test]
    fn long_sections_are_cut_at_sentences_within_the_target_with_overlap() {
        let sentence = "The quick brown fox jumps over the lazy dog. ";
        let doc = sentence.repeat(30); // 270 words, one paragraph
        let chunks = chunk(&doc, Format::Text, opts(40, 8), &words);
        assert!(chunks.len() >= 7, "{}", chunks.len());
        for c in &chunks {
            assert!(c.tokens <= 40, "{} tokens", c.tokens);
        }
        // Cuts land on sentence ends; later chunks start inside the previous one.
        assert!(chunks[0].text.trim_end().ends_with("dog."), "{:?}", chunks[0].text);
        for pair in chunks.windows(2) {
            assert!(pair[1].chars.start < pair[0].chars.end, "no overlap between {pair:?}");
            assert!(pair[1].chars.end > pair[0].chars.end);
        }
        let last = chunks.last().unwrap();
        assert_eq!(last.chars.end, doc.chars().count());
    }

    #[test]
    fn code_is_cut_between_top_level_items() {
        let doc = "use std::io;\n\nfn a() {\n    one();\n\n    two();\n}\n\nfn b() {\n    three();\n}\n";
        let chunks = chunk(doc, Format::Code, opts(6, 0), &words);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.trim_end()).collect();
        assert_eq!(texts, ["use std::io;", "fn a() {\n    one();\n\n    two();\n}", "fn b() {\n    three();\n}"]);
    }

    #[test]
    fn degenerate_inputs_do_not_break_it() {
        assert!(chunk("", Format::Markdown, ChunkOptions::default(), &words).is_empty());
        assert!(chunk("\n\n  \n", Format::Text, ChunkOptions::default(), &words).is_empty());
        let word = "x".repeat(5000);
        let chunks = chunk(&word, Format::Text, opts(8, 2), &|t: &str| t.len().div_ceil(4));
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), 5000);
        let unicode = "é".repeat(100);
        let chunks = chunk(&unicode, Format::Text, opts(8, 0), &|t: &str| t.chars().count().div_ceil(4));
        assert_eq!(chunks.last().unwrap().chars.end, 100);
    }

    #[test]
    fn html_becomes_markdown_like_text() {
        let html = "<html><head><style>p{}</style><script>var x = '<p>';</script></head><body>\
                    <h1>Title &amp; more</h1><p>First <b>bold</b> para.</p><!-- hidden --><h2>Sub</h2>\
                    <ul><li>one</li><li>two &#233;</li></ul></body></html>";
        let text = html_to_text(html);
        assert_eq!(text, "# Title & more\n\nFirst bold para.\n\n## Sub\n\none\n\ntwo é");
        let chunks = chunk(&text, Format::Markdown, opts(100, 0), &words);
        assert_eq!(chunks.last().unwrap().headings, ["Title & more", "Sub"]);
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::of(Path::new("a/README.md")), Some(Format::Markdown));
        assert_eq!(Format::of(Path::new("x.RS")), Some(Format::Code));
        assert_eq!(Format::of(Path::new("notes.txt")), Some(Format::Text));
        assert_eq!(Format::of(Path::new("image.png")), None);
        assert_eq!(Format::of(Path::new("Makefile")), None);
    }
}
