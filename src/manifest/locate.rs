//! Finds where each value of a RON document sits, by dotted path
//! (`roles[1].backoff.initial`): what ron cannot tell. ron says where it
//! stopped, not which field that is, how far the value there reaches, or
//! which bracket is still open. It reads any text, valid or not, and never
//! fails.

use crate::error::Position;

/// Brackets nested deeper than this are not followed. Valid manifests are far
/// shallower (ron itself stops at 128); the cap keeps hostile input from
/// exhausting the stack.
const MAX_DEPTH: usize = 256;

/// One value found in the text. Offsets are byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `""` for the top-level value, else like `roles[0].command[1]`.
    pub path: String,
    /// Where the field's name starts, for struct fields.
    pub key: Option<usize>,
    /// Where the value starts.
    pub start: usize,
    /// Just past the value's end.
    pub end: usize,
}

/// The values of one document and the text they index.
pub(crate) struct Located<'a> {
    text: &'a str,
    entries: Vec<Entry>,
}

impl<'a> Located<'a> {
    pub fn new(text: &'a str) -> Located<'a> {
        let mut scanner = Scanner {
            text,
            i: 0,
            depth: 0,
            out: Vec::new(),
        };
        scanner.value(String::new(), None);
        Located {
            text,
            entries: scanner.out,
        }
    }

    /// The length of the text in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// The first value written at `path`.
    pub fn find(&self, path: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.path == path)
            .min_by_key(|e| e.start)
    }

    /// Where the value at `path` starts; for a path that is not in the text
    /// (a field left to its default), where its closest written ancestor
    /// starts, and failing all else the start of the text.
    pub fn position_of(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(e) = self.find(p) {
                return self.position(e.start);
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.position(0),
            }
        }
    }

    /// The innermost value (or field name) that covers `offset`.
    pub fn innermost(&self, offset: usize) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                let from = e.key.unwrap_or(e.start);
                from <= offset && offset < e.end.max(e.start + 1)
            })
            .min_by_key(|e| {
                (
                    e.end - e.key.unwrap_or(e.start),
                    std::cmp::Reverse(e.path.len()),
                )
            })
    }

    /// The brackets opened before `offset` and not yet closed there,
    /// outermost first, with where each was opened.
    pub fn open_brackets(&self, offset: usize) -> Vec<(usize, char)> {
        let mut scanner = Scanner {
            text: self.text,
            i: 0,
            depth: 0,
            out: Vec::new(),
        };
        let mut open = Vec::new();
        loop {
            scanner.skip_ws();
            if scanner.i >= offset || scanner.eof() {
                break;
            }
            if scanner.literal() {
                continue;
            }
            let at = scanner.i;
            match scanner.peek() {
                Some(c @ ('(' | '[' | '{')) => open.push((at, c)),
                Some(c @ (')' | ']' | '}'))
                    if open.last().is_some_and(|&(_, o)| closer(o) == c) =>
                {
                    open.pop();
                }
                _ => {}
            }
            scanner.bump();
        }
        open
    }

    /// Whether any value is written inside the value at `path`.
    pub fn has_children(&self, path: &str) -> bool {
        self.entries.iter().any(|e| {
            e.path.len() > path.len()
                && e.path.starts_with(path)
                && (path.is_empty() || matches!(e.path.as_bytes()[path.len()], b'.' | b'['))
        })
    }

    /// The innermost value that ends just before `offset`.
    pub fn ending_at(&self, offset: usize) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.end == offset && e.end > e.start)
            .max_by_key(|e| e.start)
    }

    /// Where the character before `offset` starts (0 at the start).
    pub fn char_before(&self, offset: usize) -> usize {
        let at = floor_char_boundary(self.text, offset);
        self.text[..at]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    /// The character at `offset`, if any.
    pub fn char_at(&self, offset: usize) -> Option<char> {
        self.text.get(offset..)?.chars().next()
    }

    /// The source text of a value.
    pub fn source(&self, e: &Entry) -> &'a str {
        &self.text[e.start..e.end]
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = 1 + before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        Position {
            line,
            column: 1 + before[line_start..].chars().count(),
        }
    }

    /// The byte offset of a 1-based line and column (in characters), clamped
    /// to the text.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let mut start = 0;
        for _ in 1..line {
            match self.text[start..].find('\n') {
                Some(n) => start += n + 1,
                None => return self.text.len(),
            }
        }
        let rest = &self.text[start..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        rest[..line_len]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(start + line_len, |(n, _)| start + n)
    }

    /// The first offset at or after `offset` that is not blank or inside a
    /// comment; `None` when only blanks and comments follow.
    pub fn next_token(&self, offset: usize) -> Option<usize> {
        let mut scanner = Scanner {
            text: self.text,
            i: floor_char_boundary(self.text, offset),
            depth: 0,
            out: Vec::new(),
        };
        scanner.skip_ws();
        (!scanner.eof()).then_some(scanner.i)
    }
}

/// `roles[1].name` → `roles[1]` → `roles` → ``; `None` above the top.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// The bracket that closes `open`.
pub(crate) fn closer(open: char) -> char {
    match open {
        '[' => ']',
        '{' => '}',
        _ => ')',
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

struct Scanner<'a> {
    text: &'a str,
    i: usize,
    depth: usize,
    out: Vec<Entry>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.i..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.text[self.i..].chars().nth(n)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.i += c.len_utf8();
        }
    }

    fn eof(&self) -> bool {
        self.i >= self.text.len()
    }

    /// Skips blanks and comments; block comments nest, as in ron.
    fn skip_ws(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => self.bump(),
                (Some('/'), Some('/')) => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    let mut level = 1;
                    while level > 0 && !self.eof() {
                        match (self.peek(), self.peek_at(1)) {
                            (Some('/'), Some('*')) => {
                                level += 1;
                                self.bump();
                            }
                            (Some('*'), Some('/')) => {
                                level -= 1;
                                self.bump();
                            }
                            _ => {}
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    fn ident(&mut self) -> &str {
        let from = self.i;
        if self.peek() == Some('r') && self.peek_at(1) == Some('#') {
            self.bump();
            self.bump();
        }
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        &self.text[from..self.i]
    }

    /// Reads one value and records it (and everything inside it) at `path`.
    fn value(&mut self, path: String, key: Option<usize>) {
        self.skip_ws();
        let start = self.i;
        let Some(c) = self.peek() else { return };
        if self.literal() {
            self.out.push(Entry {
                path,
                key,
                start,
                end: self.i,
            });
            return;
        }
        match c {
            '(' | '[' | '{' => self.group(&path),
            c if is_ident_char(c) && !c.is_ascii_digit() => {
                self.ident();
                let after_name = self.i;
                self.skip_ws();
                if self.peek() == Some('(') {
                    self.group(&path);
                } else {
                    // Not a struct: leave the blanks for the caller.
                    self.i = after_name;
                }
            }
            // No value where one belongs (`window: ,`): record an empty one
            // so that the complaint can name the field.
            ')' | ']' | '}' | ',' | ':' => {}
            _ => {
                // Numbers and anything unexpected: up to the next delimiter.
                while self
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !"()[]{},:\"'/".contains(c))
                {
                    self.bump();
                }
                if self.i == start {
                    self.bump();
                }
            }
        }
        self.out.push(Entry {
            path,
            key,
            start,
            end: self.i,
        });
    }

    /// Skips a string, byte string or character literal, if one starts here.
    fn literal(&mut self) -> bool {
        match (self.peek(), self.peek_at(1), self.peek_at(2)) {
            (Some('"'), _, _) => self.string(),
            (Some('\''), _, _) => self.char_literal(),
            (Some('r'), Some('"' | '#'), _) if !self.raw_ident_ahead() => {
                self.bump();
                self.raw_string();
            }
            (Some('b'), Some('"'), _) => {
                self.bump();
                self.string();
            }
            (Some('b'), Some('\''), _) => {
                self.bump();
                self.char_literal();
            }
            (Some('b'), Some('r'), Some('"' | '#')) => {
                self.bump();
                self.bump();
                self.raw_string();
            }
            _ => return false,
        }
        true
    }

    /// `r#ident`, not `r#"raw string"#`.
    fn raw_ident_ahead(&self) -> bool {
        self.peek_at(1) == Some('#') && self.peek_at(2).is_some_and(is_ident_char)
    }

    fn string(&mut self) {
        self.bump();
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                '\\' => self.bump(),
                '"' => return,
                _ => {}
            }
        }
    }

    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.peek() == Some('#') {
            hashes += 1;
            self.bump();
        }
        if self.peek() != Some('"') {
            return;
        }
        self.bump();
        let close = format!("\"{}", "#".repeat(hashes));
        match self.text[self.i..].find(&close) {
            Some(n) => self.i += n + close.len(),
            None => self.i = self.text.len(),
        }
    }

    fn char_literal(&mut self) {
        self.bump();
        if self.peek() == Some('\\') {
            self.bump();
        }
        self.bump();
        while !matches!(self.peek(), None | Some('\'' | '\n')) {
            self.bump();
        }
        self.bump();
    }

    /// `( … )`, `[ … ]` or `{ … }`. Inside parentheses, `name: value` is a
    /// field; a bare value (as in `Some(3)`) stands for the whole group.
    fn group(&mut self, path: &str) {
        let open = self.peek().unwrap_or('(');
        let close = closer(open);
        self.bump();
        if self.depth >= MAX_DEPTH {
            self.i = self.text.len();
            return;
        }
        self.depth += 1;
        let mut index = 0;
        // Whether a value came since the opener or the last comma.
        let mut had_value = false;
        loop {
            self.skip_ws();
            let before = self.i;
            match self.peek() {
                None => break,
                Some(c) if c == close => {
                    self.bump();
                    break;
                }
                // Someone else's closer: leave it to the enclosing group.
                Some(')' | ']' | '}') => break,
                Some(',') => {
                    if open == '[' && !had_value {
                        // `[a, , b]`: record the missing item, for messages.
                        self.value(format!("{path}[{index}]"), None);
                        index += 1;
                    }
                    had_value = false;
                    self.bump();
                    continue;
                }
                _ => {}
            }
            match open {
                '[' => {
                    self.value(format!("{path}[{index}]"), None);
                    index += 1;
                }
                '{' => self.map_entry(path),
                _ => self.field_or_value(path),
            }
            had_value = true;
            if self.i == before {
                self.bump();
            }
        }
        self.depth -= 1;
    }

    fn field_or_value(&mut self, path: &str) {
        let key = self.i;
        if self
            .peek()
            .is_some_and(|c| is_ident_char(c) && !c.is_ascii_digit())
        {
            let name = self.ident().trim_start_matches("r#").to_string();
            self.skip_ws();
            if self.peek() == Some(':') {
                self.bump();
                let path = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                self.value(path, Some(key));
                return;
            }
            self.i = key;
        }
        // A stray delimiter is not a value; the caller steps over it.
        if !matches!(self.peek(), Some(':' | ',' | ')' | ']' | '}')) {
            self.value(path.to_string(), None);
        }
    }

    /// `key: value` in a map; the value is recorded at `path[key]`, with the
    /// key as written (`env["HOME"]`).
    fn map_entry(&mut self, path: &str) {
        let key_start = self.i;
        self.value(String::new(), None);
        // The key was recorded at the empty path; it is not a value of ours.
        self.out
            .pop_if(|e| e.start == key_start && e.path.is_empty());
        let key_text = self.text[key_start..self.i].to_string();
        self.skip_ws();
        if self.peek() == Some(':') {
            self.bump();
            self.value(format!("{path}[{key_text}]"), Some(key_start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"// a comment with "quotes" and (brackets
Team(
    name: "squad", /* block /* nested */ ) */
    roles: [
        Role(name: "a", command: ["sh", "-c", "echo ')'"]),
        Role(
            name: "b",
            replicas: Some(3),
            env: {"K": "v"},
            backoff: (initial: "1s"),
        ),
    ],
)
"#;

    fn at(doc: &Located, path: &str) -> (usize, usize, String) {
        let e = doc.find(path).unwrap_or_else(|| panic!("{path} not found"));
        let p = doc.position(e.start);
        (p.line, p.column, doc.source(e).to_string())
    }

    #[test]
    fn finds_values_by_path() {
        let doc = Located::new(DOC);
        assert_eq!(at(&doc, "name"), (3, 11, r#""squad""#.into()));
        assert_eq!(
            at(&doc, "roles[0].command[2]"),
            (5, 47, r#""echo ')'""#.into())
        );
        assert_eq!(at(&doc, "roles[1].name"), (7, 19, r#""b""#.into()));
        assert_eq!(at(&doc, "roles[1].replicas"), (8, 23, "Some(3)".into()));
        assert_eq!(at(&doc, r#"roles[1].env["K"]"#), (9, 24, r#""v""#.into()));
        assert_eq!(
            at(&doc, "roles[1].backoff.initial"),
            (10, 32, r#""1s""#.into())
        );
        assert_eq!(at(&doc, "roles[1]").0, 6);
        assert_eq!(at(&doc, "").0, 2);
    }

    #[test]
    fn a_missing_path_falls_back_to_its_closest_ancestor() {
        let doc = Located::new(DOC);
        let p = doc.position_of("roles[1].backoff.max");
        assert_eq!((p.line, p.column), (10, 22));
        let p = doc.position_of("workspace");
        assert_eq!((p.line, p.column), (2, 1));
    }

    #[test]
    fn innermost_covers_field_names_and_values() {
        let doc = Located::new(DOC);
        let off = doc.offset(8, 13);
        assert_eq!(doc.innermost(off).unwrap().path, "roles[1].replicas");
        let off = doc.offset(8, 28);
        assert_eq!(doc.innermost(off).unwrap().path, "roles[1].replicas");
        let off = doc.offset(11, 9);
        assert_eq!(doc.innermost(off).unwrap().path, "roles[1]");
        assert!(doc.innermost(DOC.len() + 5).is_none());
    }

    #[test]
    fn offsets_and_positions_agree() {
        let text = "ab\nçd(\n";
        let doc = Located::new(text);
        assert_eq!(doc.offset(2, 2), 5);
        let p = doc.position(5);
        assert_eq!((p.line, p.column), (2, 2));
        assert_eq!(doc.offset(9, 1), text.len());
        assert_eq!(doc.offset(1, 40), 2);
    }

    #[test]
    fn missing_values_are_recorded_empty() {
        let doc = Located::new(r#"(a: , b: [1, , 3], c: )"#);
        assert_eq!(at(&doc, "a"), (1, 5, String::new()));
        assert_eq!(at(&doc, "b[1]"), (1, 14, String::new()));
        assert_eq!(at(&doc, "b[2]"), (1, 16, "3".into()));
        assert_eq!(at(&doc, "c"), (1, 23, String::new()));
    }

    #[test]
    fn open_brackets_skip_strings_and_comments() {
        let text = "Team(a: [\"(\", /* [ */ Role(";
        let doc = Located::new(text);
        let open: Vec<char> = doc
            .open_brackets(text.len())
            .iter()
            .map(|&(_, c)| c)
            .collect();
        assert_eq!(open, ['(', '[', '(']);
        assert_eq!(doc.open_brackets(5).len(), 1);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("roles[1].name"), Some("roles[1]"));
        assert_eq!(parent("roles[1]"), Some("roles"));
        assert_eq!(parent("roles"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn survives_broken_and_deep_text() {
        for text in [
            "",
            "(",
            "Team(name: \"x",
            "[[[[",
            ")))",
            "r#\"",
            "'",
            "/* open",
            "{:::}",
            "é(ü: [ß",
        ] {
            Located::new(text);
        }
        Located::new(&"(".repeat(100_000));
    }
}
