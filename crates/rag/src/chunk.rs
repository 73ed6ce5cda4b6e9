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

/// Elements whose content is not part of the page's text: scripts,
/// styles, fallbacks, templates and the document's `<title>` (the only
/// text-bearing element of `<head>` besides scripts and styles).
const HTML_SKIPPED: &[&[u8]] =
    &[b"script", b"style", b"noscript", b"template", b"title", b"iframe", b"noembed", b"noframes"];

/// Elements that start and end a paragraph.
const HTML_BLOCKS: &[&[u8]] = &[
    b"address",
    b"article",
    b"aside",
    b"blockquote",
    b"body",
    b"caption",
    b"center",
    b"dd",
    b"details",
    b"dialog",
    b"div",
    b"dl",
    b"dt",
    b"fieldset",
    b"figcaption",
    b"figure",
    b"footer",
    b"form",
    b"header",
    b"hgroup",
    b"hr",
    b"html",
    b"li",
    b"main",
    b"nav",
    b"ol",
    b"p",
    b"section",
    b"summary",
    b"table",
    b"tbody",
    b"tfoot",
    b"thead",
    b"tr",
    b"ul",
];

/// The text of an HTML document as Markdown-like text, so it chunks as
/// [`Format::Markdown`]: `h1`–`h6` become `#` headings (section
/// boundaries), block elements paragraphs, `<pre>` a fenced code block
/// (whitespace kept, never split), `<br>` and table cells line breaks.
/// Other whitespace collapses as a browser would; scripts, styles,
/// templates, the `<title>` and comments are dropped; character references
/// (named, decimal, hex) are decoded and unknown ones left as written. A
/// paragraph line that would read as a heading or a fence is escaped with
/// `\`.
///
/// Tokenizing follows the WHATWG HTML standard (the `html5gum` crate), so
/// any input, however malformed, yields some text. Chunk offsets of an HTML
/// document are character offsets into this text (the text the chunker
/// got), not into the HTML source.
pub fn html_to_text(html: &str) -> String {
    let mut emitter = html5gum::DefaultEmitter::default();
    // Switch to raw text after <script>, <style>, <title> …, as a browser's
    // tree builder would, so their content is one string (`<p>` in a script
    // is not a paragraph).
    emitter.naively_switch_states(true);
    let mut writer = HtmlText::default();
    for token in html5gum::Tokenizer::new_with_emitter(html, emitter) {
        let Ok(token) = token;
        match token {
            html5gum::Token::StartTag(tag) => writer.start(&tag.name),
            html5gum::Token::EndTag(tag) => writer.end(&tag.name),
            html5gum::Token::String(text) => writer.text(&String::from_utf8_lossy(&text.value)),
            html5gum::Token::Comment(_) | html5gum::Token::Doctype(_) | html5gum::Token::Error(_) => {}
        }
    }
    writer.finish()
}

/// Builds [`html_to_text`]'s output from the token stream.
#[derive(Default)]
struct HtmlText {
    /// Finished blocks, separated by blank lines.
    out: String,
    /// The block being written: inline text, `\n` for line breaks.
    block: String,
    /// Whitespace was seen since the last character written.
    space: bool,
    /// The level of the open heading.
    heading: Option<usize>,
    /// Open `<pre>` elements (whitespace is kept inside).
    pre: usize,
    /// The next newline is the one HTML drops right after `<pre>`.
    pre_start: bool,
    /// Open skipped elements (their text is dropped).
    skip: usize,
}

impl HtmlText {
    /// A start tag. A browser ignores `/>` on elements that are not void
    /// (`<script/>` still opens a script), and so does this.
    fn start(&mut self, name: &[u8]) {
        if HTML_SKIPPED.contains(&name) {
            self.skip += 1;
            return;
        }
        if self.skip > 0 {
            return;
        }
        if let Some(level) = heading_level(name) {
            if self.pre == 0 {
                self.close_heading();
                self.end_block();
                self.heading = Some(level);
            }
        } else if name == b"pre" || name == b"listing" {
            if self.pre == 0 {
                self.close_heading();
                self.end_block();
                self.pre_start = true;
            }
            self.pre += 1;
        } else if name == b"br" {
            self.line_break(true);
        } else if name == b"td" || name == b"th" {
            self.line_break(false);
        } else if HTML_BLOCKS.contains(&name) {
            self.block_boundary();
        }
    }

    fn end(&mut self, name: &[u8]) {
        if HTML_SKIPPED.contains(&name) {
            self.skip = self.skip.saturating_sub(1);
            return;
        }
        if self.skip > 0 {
            return;
        }
        if heading_level(name).is_some() {
            if self.pre == 0 {
                self.close_heading();
            }
        } else if name == b"pre" || name == b"listing" {
            if self.pre > 0 {
                self.pre -= 1;
                if self.pre == 0 {
                    self.close_pre();
                }
            }
        } else if name == b"br" {
            // `</br>` is a `<br>` to a browser.
            self.line_break(true);
        } else if HTML_BLOCKS.contains(&name) {
            self.block_boundary();
        }
    }

    fn text(&mut self, text: &str) {
        if self.skip > 0 {
            return;
        }
        if self.pre > 0 {
            let text = if std::mem::take(&mut self.pre_start) { text.strip_prefix('\n').unwrap_or(text) } else { text };
            self.block.push_str(text);
            return;
        }
        for c in text.chars() {
            if c.is_whitespace() {
                self.space = true;
                continue;
            }
            if std::mem::take(&mut self.space) && !self.block.is_empty() && !self.block.ends_with('\n') {
                self.block.push(' ');
            }
            self.block.push(c);
        }
    }

    /// `<br>` (`always`: also on an empty line) or a table cell.
    fn line_break(&mut self, always: bool) {
        self.space = false;
        if self.pre > 0 {
            self.pre_start = false;
            if always || !(self.block.is_empty() || self.block.ends_with('\n')) {
                self.block.push('\n');
            }
        } else if self.heading.is_some() {
            self.space = true;
        } else if !self.block.is_empty() && !self.block.ends_with('\n') {
            self.block.push('\n');
        }
    }

    /// The start or end of a block element.
    fn block_boundary(&mut self) {
        if self.pre > 0 {
            self.line_break(false);
        } else if self.heading.is_some() {
            // A block inside a heading stays part of its one line.
            self.space = true;
        } else {
            self.end_block();
        }
    }

    /// Ends the paragraph being written.
    fn end_block(&mut self) {
        self.space = false;
        let block = std::mem::take(&mut self.block);
        let mut lines = block.lines().map(str::trim).filter(|line| !line.is_empty()).peekable();
        if lines.peek().is_none() {
            return;
        }
        self.separate();
        for (i, line) in lines.enumerate() {
            if i > 0 {
                self.out.push('\n');
            }
            // Text that would read as Markdown structure is escaped.
            let hashes = line.bytes().take_while(|b| *b == b'#').count();
            let heading = (1..=6).contains(&hashes) && line.as_bytes().get(hashes).is_none_or(|b| *b == b' ');
            if heading || line.starts_with("```") || line.starts_with("~~~") {
                self.out.push('\\');
            }
            self.out.push_str(line);
        }
    }

    fn close_heading(&mut self) {
        let Some(level) = self.heading.take() else { return };
        self.space = false;
        let title = std::mem::take(&mut self.block);
        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
        if title.is_empty() {
            return;
        }
        self.separate();
        self.out.push_str(&"#".repeat(level));
        self.out.push(' ');
        self.out.push_str(&title);
    }

    fn close_pre(&mut self) {
        self.pre_start = false;
        self.space = false;
        let code = std::mem::take(&mut self.block);
        let code = code.trim_end();
        // Drop leading blank lines, keep the first line's indentation.
        let start = code.len() - code.trim_start().len();
        let code = &code[code[..start].rfind('\n').map_or(0, |at| at + 1)..];
        if code.trim().is_empty() {
            return;
        }
        let opens = |marker: &str| code.lines().any(|line| line.trim_start().starts_with(marker));
        self.separate();
        match ["```", "~~~"].into_iter().find(|marker| !opens(marker)) {
            Some(fence) => {
                self.out.push_str(fence);
                self.out.push('\n');
                self.out.push_str(code);
                self.out.push('\n');
                self.out.push_str(fence);
            }
            // Both fences occur in the code: keep its lines, unfenced.
            None => self.out.push_str(code),
        }
    }

    /// A blank line before the next block, unless it is the first.
    fn separate(&mut self) {
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
    }

    fn finish(mut self) -> String {
        self.close_heading();
        if self.pre > 0 {
            self.pre = 0;
            self.close_pre();
        }
        self.end_block();
        self.out
    }
}

/// 1–6 for `h1`–`h6`.
fn heading_level(name: &[u8]) -> Option<usize> {
    match name {
        [b'h', level @ b'1'..=b'6'] => Some(usize::from(level - b'0')),
        _ => None,
    }
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
    fn html_entities_are_decoded_and_unknown_ones_kept() {
        // An entity-like run whose first 12 bytes end inside a multi-byte character.
        assert_eq!(html_to_text("&abcdefghijé"), "&abcdefghijé");
        assert_eq!(html_to_text("<p>&abcdefghijé😀&</p>"), "&abcdefghijé😀&");
        assert_eq!(
            html_to_text("&lt;a&gt; &amp; &quot;q&quot; &apos;s&apos; caf&eacute; &hellip;"),
            "<a> & \"q\" 's' café …"
        );
        assert_eq!(html_to_text("&#233; &#x00E9; &#X41; &#128512;"), "é é A 😀");
        assert_eq!(html_to_text("AT&T &nosuch; &#xZZ; & alone"), "AT&T &nosuch; &#xZZ; & alone");
        // A non-breaking space is whitespace like any other.
        assert_eq!(html_to_text("a&nbsp;&nbsp;b"), "a b");
    }

    #[test]
    fn nested_html_structure_becomes_sections() {
        let html = "<body><main><article><header><h1>Guide <small>v2</small></h1></header>\
                    <section><h2>Install</h2><div><p>Run\n   the\tinstaller.</p></div>\
                    <h3>On <em>Linux</em></h3><p>Use apt.<br>Or snap.</p></section>\
                    <section><h2>Use</h2><table><tr><th>Key</th><td>Value</td></tr></table></section>\
                    </article></main></body>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "# Guide v2\n\n## Install\n\nRun the installer.\n\n### On Linux\n\nUse apt.\nOr snap.\n\n## Use\n\nKey\nValue"
        );
        let chunks = chunk(&text, Format::Markdown, opts(10, 0), &words);
        let headings: Vec<Vec<&str>> = chunks.iter().map(|c| c.headings.iter().map(String::as_str).collect()).collect();
        assert_eq!(
            headings,
            [
                vec!["Guide v2"],
                vec!["Guide v2", "Install"],
                vec!["Guide v2", "Install", "On Linux"],
                vec!["Guide v2", "Use"],
            ]
        );
        // Offsets index the converted text (what the chunker was given).
        for c in &chunks {
            let by_chars: String = text.chars().skip(c.chars.start).take(c.chars.len()).collect();
            assert_eq!(by_chars, c.text);
        }
    }

    #[test]
    fn html_code_blocks_are_fenced_and_kept_whole() {
        let html = "<h1>Code</h1><pre>\n# a comment, not a heading\nfn main() {\n\n    run(&lt;T&gt;);\n}\n</pre>\
                    <p># not a heading either</p><p>```</p>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "# Code\n\n```\n# a comment, not a heading\nfn main() {\n\n    run(<T>);\n}\n```\n\n\\# not a heading either\n\n\\```"
        );
        let chunks = chunk(&text, Format::Markdown, opts(100, 0), &words);
        assert!(chunks.iter().all(|c| c.headings == ["Code"]), "{chunks:?}");
        // Code that contains one fence marker gets the other.
        assert_eq!(html_to_text("<pre>```\nx\n```</pre>"), "~~~\n```\nx\n```\n~~~");
    }

    #[test]
    fn html_scripts_styles_and_head_are_dropped() {
        let html = "<!DOCTYPE html><html><head><title>Tab title</title><meta charset=utf-8>\
                    <style>h1 { color: red } /* <h1>no</h1> */</style>\
                    <script>if (a < b && c > d) { document.write('<h1>no</h1>'); }</script></head>\
                    <body><noscript><p>enable js</p></noscript><template><h2>tpl</h2></template>\
                    <p>kept</p><script/>still script</script><p>after</p></body></html>";
        assert_eq!(html_to_text(html), "kept\n\nafter");
    }

    #[test]
    fn malformed_html_still_yields_text() {
        assert_eq!(html_to_text("<p>unclosed <b>bold <i>both</p><p>next"), "unclosed bold both\n\nnext");
        assert_eq!(html_to_text("<h2>open heading<p>then text"), "## open heading then text");
        assert_eq!(html_to_text("a < b and c <d"), "a < b and c");
        assert_eq!(html_to_text("</div></p>stray ends<"), "stray ends<");
        assert_eq!(html_to_text("<!-- never closed <h1>x</h1>"), "");
        assert_eq!(html_to_text("<script>never closed <p>x</p>"), "");
        assert_eq!(html_to_text("<pre>  indented\n  code"), "```\n  indented\n  code\n```");
        assert_eq!(html_to_text("<p attr=\"unterminated>text</p>"), "");
        assert_eq!(html_to_text(""), "");
        // Every prefix of a document with multi-byte text converts without a panic.
        let doc = "<h1>Título &eacute;</h1><p>déjà &#x1F600; &bogusé😀</p>";
        for (at, _) in doc.char_indices() {
            let _ = html_to_text(&doc[..at]);
        }
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
