//! A bounded parser for LVM's configuration-text format, the format of VG metadata.
//!
//! Grammar (LVM2 `lib/config/config.c`, `lib/format_text/import_vsn1.c`):
//! ```text
//! file    := item*
//! item    := name '=' value | name '{' item* '}'
//! value   := string | number | '[' (scalar (',' scalar)*)? ']'
//! string  := '"' (char | '\"' | '\\')* '"'
//! number  := '-'? digits ('.' digits)?
//! ```
//! `#` starts a comment to the end of the line. Names use `[A-Za-z0-9_.+-]` (VG, LV and PV names).
//! Depth, node count and text size are capped (house style S12); recursion is bounded by
//! [`MAX_DEPTH`].

use crate::{Error, Result};

/// Deepest nesting accepted. VG metadata nests four levels (`vg { logical_volumes { lv {
/// segment1 { … } } } }`); eight leaves room for future sections.
pub const MAX_DEPTH: usize = 8;
/// Most values and sections in one document. A VG with 1,000 LVs of a few segments each has
/// about 50,000; this bounds memory for a hostile text.
pub const MAX_NODES: usize = 500_000;

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A number with a fraction, kept as written (LVM metadata does not use them for layout).
    Float(String),
    /// A string, unescaped.
    Str(String),
    /// An array of scalars.
    Array(Vec<Value>),
}

/// What a name is bound to.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `name = value`.
    Value(Value),
    /// `name { … }`.
    Section(Section),
}

/// A section: its items in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// `(name, node)` pairs, in order.
    pub items: Vec<(String, Node)>,
}

impl Section {
    /// The first item called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// The value called `name`, if it is a value.
    #[must_use]
    pub fn value(&self, name: &str) -> Option<&Value> {
        match self.get(name) {
            Some(Node::Value(v)) => Some(v),
            _ => None,
        }
    }
    /// The section called `name`, if it is a section.
    #[must_use]
    pub fn section(&self, name: &str) -> Option<&Section> {
        match self.get(name) {
            Some(Node::Section(s)) => Some(s),
            _ => None,
        }
    }
    /// The sub-sections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(n, v)| match v {
            Node::Section(s) => Some((n.as_str(), s)),
            Node::Value(_) => None,
        })
    }
    /// The integer called `name`.
    #[must_use]
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.value(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// The string called `name`.
    #[must_use]
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.value(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// The strings of the array called `name` (other elements skipped).
    #[must_use]
    pub fn str_array(&self, name: &str) -> Vec<String> {
        match self.value(name) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    nodes: usize,
    /// Offset of the text in its device, for error messages.
    base: u64,
}

impl Parser<'_> {
    fn err(&self, detail: impl std::fmt::Display) -> Error {
        let line = self
            .b
            .get(..self.pos)
            .unwrap_or(self.b)
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            .saturating_add(1);
        Error::corrupt(
            "lvm metadata",
            self.base
                .saturating_add(u64::try_from(self.pos).unwrap_or(u64::MAX)),
            format!("line {line}: {detail}"),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_ascii_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn count_node(&mut self) -> Result<()> {
        self.nodes = self.nodes.saturating_add(1);
        if self.nodes > MAX_NODES {
            return Err(self.err(format!("more than {MAX_NODES} values")));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"_.+-".contains(&c) {
                self.bump();
            } else {
                break;
            }
        }
        if self.pos == start {
            let found = self.peek().map_or_else(
                || "end of text".to_owned(),
                |c| format!("{:?}", char::from(c)),
            );
            return Err(self.err(format!("expected a name, found {found}")));
        }
        let s = self.b.get(start..self.pos).unwrap_or_default();
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn items(&mut self, depth: usize, closing: bool) -> Result<Section> {
        let mut sec = Section::default();
        loop {
            self.skip_ws();
            match self.peek() {
                None if closing => return Err(self.err("unterminated section")),
                None => return Ok(sec),
                Some(b'}') if closing => {
                    self.bump();
                    return Ok(sec);
                }
                Some(_) => {}
            }
            let name = self.name()?;
            self.skip_ws();
            self.count_node()?;
            match self.peek() {
                Some(b'=') => {
                    self.bump();
                    self.skip_ws();
                    let v = self.value(true)?;
                    sec.items.push((name, Node::Value(v)));
                }
                Some(b'{') => {
                    if depth >= MAX_DEPTH {
                        return Err(self.err(format!("sections nested deeper than {MAX_DEPTH}")));
                    }
                    self.bump();
                    let inner = self.items(depth.saturating_add(1), true)?;
                    sec.items.push((name, Node::Section(inner)));
                }
                _ => return Err(self.err(format!("expected '=' or '{{' after {name:?}"))),
            }
        }
    }

    fn value(&mut self, allow_array: bool) -> Result<Value> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') if allow_array => {
                self.bump();
                let mut v = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.bump();
                        return Ok(Value::Array(v));
                    }
                    if !v.is_empty() {
                        if self.peek() != Some(b',') {
                            return Err(self.err("expected ',' or ']' in array"));
                        }
                        self.bump();
                        self.skip_ws();
                    }
                    self.count_node()?;
                    v.push(self.value(false)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn string(&mut self) -> Result<Value> {
        self.bump(); // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.bump();
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    self.bump();
                    let Some(c) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    out.push(c);
                    self.bump();
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
            self.bump();
        }
        let s =
            String::from_utf8_lossy(self.b.get(start..self.pos).unwrap_or_default()).into_owned();
        if s.contains('.') {
            if s.matches('.').count() > 1 || s.ends_with('.') || s.starts_with("-.") {
                return Err(self.err(format!("bad number {s:?}")));
            }
            return Ok(Value::Float(s));
        }
        s.parse::<i64>()
            .map(Value::Int)
            .map_err(|_| self.err(format!("bad integer {s:?}")))
    }
}

/// Parses a metadata document found at byte `base` of its device.
///
/// # Errors
/// [`Error::Corrupt`] naming the line and byte offset of the first syntax error, or a limit
/// ([`MAX_DEPTH`], [`MAX_NODES`]) that was passed.
pub fn parse(text: &[u8], base: u64) -> Result<Section> {
    let mut p = Parser {
        b: text,
        pos: 0,
        nodes: 0,
        base,
    };
    p.items(0, false)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use super::*;

    #[test]
    fn parses_lvm_metadata_shapes() {
        let t = br#"# Generated by LVM2
vg-1 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ"]	# trailing comment
flags = []
extent_size = 8192
physical_volumes {
pv0 {
pe_start = 2048
}
}
stripes = [
"pv0", 0,
"pv1", -15
]
}
contents = "Text \"Format\" \\ VG"
version = 1.5
"#;
        let s = parse(t, 0).unwrap();
        let vg = s.section("vg-1").unwrap();
        assert_eq!(vg.str("id"), Some("abc"));
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.str_array("status"), ["RESIZEABLE", "READ"]);
        assert_eq!(vg.value("flags"), Some(&Value::Array(vec![])));
        assert_eq!(
            vg.section("physical_volumes")
                .unwrap()
                .section("pv0")
                .unwrap()
                .int("pe_start"),
            Some(2048)
        );
        assert_eq!(
            vg.value("stripes"),
            Some(&Value::Array(vec![
                Value::Str("pv0".into()),
                Value::Int(0),
                Value::Str("pv1".into()),
                Value::Int(-15)
            ]))
        );
        assert_eq!(s.str("contents"), Some("Text \"Format\" \\ VG"));
        assert_eq!(s.value("version"), Some(&Value::Float("1.5".into())));
        assert_eq!(s.sections().count(), 1);
    }

    fn err(t: &str) -> String {
        let e = parse(t.as_bytes(), 0x1000).unwrap_err();
        let c = e.as_corrupt().unwrap();
        assert_eq!(c.structure(), "lvm metadata");
        format!("{:#x} {}", c.offset(), c.detail())
    }

    #[test]
    fn syntax_errors_name_line_and_offset() {
        assert_eq!(err("a {\nb = 1\n"), "0x100a line 3: unterminated section");
        assert_eq!(err("a = \"xy"), "0x1007 line 1: unterminated string");
        assert_eq!(err("a = \"x\\"), "0x1007 line 1: unterminated string");
        assert_eq!(err("a 1"), "0x1002 line 1: expected '=' or '{' after \"a\"");
        assert_eq!(err("= 1"), "0x1000 line 1: expected a name, found '='");
        assert_eq!(err("a = }"), "0x1004 line 1: expected a value");
        assert_eq!(
            err("a = [1 2]"),
            "0x1007 line 1: expected ',' or ']' in array"
        );
        assert_eq!(err("a = [[1]]"), "0x1005 line 1: expected a value");
        assert_eq!(
            err("a = 99999999999999999999"),
            "0x1018 line 1: bad integer \"99999999999999999999\""
        );
        assert_eq!(err("a = 1.2.3"), "0x1009 line 1: bad number \"1.2.3\"");
        assert_eq!(err("}"), "0x1000 line 1: expected a name, found '}'");
    }

    #[test]
    fn limits_are_enforced() {
        let deep = "a {".repeat(MAX_DEPTH + 1) + &"}".repeat(MAX_DEPTH + 1);
        assert_eq!(
            err(&deep),
            format!(
                "{:#x} line 1: sections nested deeper than 8",
                0x1000 + 3 * 8 + 2
            )
        );
        let ok = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        parse(ok.as_bytes(), 0).unwrap();
        let many = format!("a = [{}]", vec!["1"; MAX_NODES].join(","));
        let e = err(&many);
        assert!(e.ends_with("line 1: more than 500000 values"), "{e}");
    }
}
