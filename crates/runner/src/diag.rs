//! Diagnostics of specs and command lines: every problem found, each with its file, position,
//! key and message, shown as a compiler shows errors.

use std::fmt;

/// A position in a spec, with its line's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The whole line.
    pub text: String,
    /// How many characters to underline.
    pub width: usize,
}

impl fmt::Display for Location {
    /// The line and a caret under the offending text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.line.to_string();
        let pad = " ".repeat(n.len());
        write!(
            f,
            "{pad} |\n{n} | {}\n{pad} | {}{}",
            self.text,
            " ".repeat(self.column - 1),
            "^".repeat(self.width.min(self.text.chars().count().saturating_sub(self.column - 1).max(1)))
        )
    }
}

/// One problem: where (file, position, key path) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The spec file, or `command line`.
    pub file: String,
    /// The dotted key path (`run[2].style_layers[1]`), or a run (`run `seed=1``).
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
    /// Where in the file, when known.
    pub location: Option<Location>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{}:{}:{}: {}: {}\n{l}", self.file, l.line, l.column, self.path, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.path, self.message),
        }
    }
}

/// Every problem of a spec (up to [`Diagnostics::LIMIT`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diagnostics {
    /// The problems, in the order found.
    pub items: Vec<Diagnostic>,
    /// Problems found beyond the limit, not kept.
    pub more: usize,
}

impl Diagnostics {
    /// How many problems are kept and shown.
    pub const LIMIT: usize = 20;

    /// Adds a problem.
    pub fn push(&mut self, d: Diagnostic) {
        if self.items.len() < Self::LIMIT {
            if !self.items.contains(&d) {
                self.items.push(d);
            }
        } else {
            self.more += 1;
        }
    }

    /// Sorts the problems by their position in the file (those without one last), so they read
    /// top to bottom whatever order they were found in.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| d.location.as_ref().map_or((usize::MAX, 0), |l| (l.line, l.column)));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len() + self.more;
        if n > 1 {
            writeln!(f, "{n} problems:")?;
        }
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.more > 0 {
            write!(f, "\n… and {} more", self.more)?;
        }
        Ok(())
    }
}

/// `did you mean `x`? (valid: a, b, c)`, or only the list when nothing is close.
pub fn did_you_mean<'a>(word: &str, valid: impl Iterator<Item = &'a str> + Clone) -> String {
    let list = valid.clone().collect::<Vec<_>>().join(", ");
    match nearest(word, valid) {
        Some(n) => format!("did you mean `{n}`? (valid: {list})"),
        None => format!("valid: {list}"),
    }
}

/// The valid word closest to `word`, when it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, valid: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    valid
        .map(|v| (strsim::levenshtein(v, word), v))
        .filter(|(d, v)| *d <= 2.max(v.len().min(word.len()) / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}
