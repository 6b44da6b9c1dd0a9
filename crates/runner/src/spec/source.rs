//! Where each key and value of a spec is in its text, so that errors can show the line, the
//! column and the offending text, as a compiler does.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{Item, Value};

use crate::diag::Location;

/// Spans of a spec's keys and values, by dotted path (`defaults.size`, `run[1].sweep.seed[0]`,
/// `defaults.style[0].weight`).
#[derive(Default, Debug)]
pub struct SourceMap {
    text: String,
    keys: HashMap<String, Range<usize>>,
    values: HashMap<String, Range<usize>>,
}

impl SourceMap {
    /// A map of `text` with no spans (for positions of syntax errors).
    pub fn from_text(text: &str) -> Self {
        SourceMap { text: text.to_string(), ..Default::default() }
    }

    /// The spans of a parsed document.
    pub fn new(text: &str, doc: &toml_edit::ImDocument<&str>) -> Self {
        let mut m = SourceMap { text: text.to_string(), ..Default::default() };
        m.table(
            String::new(),
            doc.as_table().iter().map(|(k, i)| (k, i, doc.as_table().key(k).and_then(|k| k.span()))),
        );
        m
    }

    fn join(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    }

    fn table<'a>(&mut self, prefix: String, entries: impl Iterator<Item = (&'a str, &'a Item, Option<Range<usize>>)>) {
        for (k, item, key_span) in entries {
            let path = Self::join(&prefix, k);
            if let Some(s) = key_span {
                self.keys.insert(path.clone(), s);
            }
            self.item(path, item);
        }
    }

    fn item(&mut self, path: String, item: &Item) {
        match item {
            Item::Value(v) => self.value(path, v),
            Item::Table(t) => {
                if let Some(s) = t.span() {
                    self.values.insert(path.clone(), s);
                }
                self.table(path, t.iter().map(|(k, i)| (k, i, t.key(k).and_then(|k| k.span()))));
            }
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(s) = t.span() {
                        self.values.insert(p.clone(), s);
                    }
                    self.table(p, t.iter().map(|(k, i)| (k, i, t.key(k).and_then(|k| k.span()))));
                }
            }
            Item::None => {}
        }
    }

    fn value(&mut self, path: String, v: &Value) {
        if let Some(s) = v.span() {
            self.values.insert(path.clone(), s);
        }
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.value(format!("{path}[{i}]"), x);
                }
            }
            Value::InlineTable(t) => {
                for (k, x) in t.iter() {
                    let p = Self::join(&path, k);
                    if let Some(s) = t.key(k).and_then(|k| k.span()) {
                        self.keys.insert(p.clone(), s);
                    }
                    self.value(p, x);
                }
            }
            _ => {}
        }
    }

    /// Where `path` is: its key's span when `key` (an unknown key), else its value's; for a path
    /// with no span of its own, the nearest enclosing one.
    pub fn locate(&self, path: &str, key: bool) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            let span = if key { self.keys.get(&p).or_else(|| self.values.get(&p)) } else { self.values.get(&p) };
            if let Some(s) = span {
                return Some(self.location(s.clone()));
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// The location of a byte span.
    pub fn location(&self, span: Range<usize>) -> Location {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let column = self.text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = self.text[start..end].chars().count().max(1);
        Location { line, column, text: self.text[line_start..line_end].trim_end().to_string(), width }
    }
}
