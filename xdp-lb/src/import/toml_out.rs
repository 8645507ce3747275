//! The generated TOML: tables of `key = value` lines, each remembering the keepalived
//! line it came from, and the notes as comments beside what they concern. Strings are
//! escaped here, so the text is always valid TOML.

use super::parse::Loc;
use super::source::SourceFile;

/// A TOML value, rendered inline.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    Str(String),
    Int(i64),
    Bool(bool),
    Arr(Vec<V>),
    /// An inline table, keys in this order.
    Table(Vec<(String, V)>),
}

impl V {
    pub(super) fn str(s: impl Into<String>) -> V {
        V::Str(s.into())
    }

    pub(super) fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> V {
        V::Arr(items.into_iter().map(|s| V::Str(s.into())).collect())
    }

    fn render(&self, out: &mut String) {
        match self {
            V::Str(s) => out.push_str(&quote(s)),
            V::Int(n) => out.push_str(&n.to_string()),
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.render(out);
                }
                out.push(']');
            }
            V::Table(entries) => {
                if entries.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push_str("{ ");
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&key(k));
                    out.push_str(" = ");
                    v.render(out);
                }
                out.push_str(" }");
            }
        }
    }
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: bare when TOML allows it, quoted otherwise.
pub(super) fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_owned() } else { quote(k) }
}

/// One `[header]` or `[[header]]` and its keys.
#[derive(Debug, Clone)]
pub(super) struct Section {
    /// The header as written, e.g. `[vrrp.VI_1]`.
    pub(super) header: String,
    /// keepalived statement the table comes from ([`Loc::NONE`]: none).
    pub(super) line: Loc,
    /// Indented (a real server under its virtual server).
    pub(super) nested: bool,
    /// Key, value, keepalived statement.
    pub(super) entries: Vec<(String, V, Loc)>,
}

impl Section {
    pub(super) fn new(header: String, line: Loc) -> Section {
        Section {
            header,
            line,
            nested: false,
            entries: Vec::new(),
        }
    }

    /// Sets `key` (replacing an earlier value, as keepalived's last one wins).
    pub(super) fn set(&mut self, key: &str, value: V, line: Loc) {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _, _)| k == key) {
            *slot = (key.to_owned(), value, line);
        } else {
            self.entries.push((key.to_owned(), value, line));
        }
    }

    /// Puts the keys in `order` first, in that order (the others after, as they were).
    pub(super) fn order(&mut self, order: &[&str]) {
        self.entries
            .sort_by_key(|(k, _, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
    }

    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| k == key)
    }
}

/// A note to write as a comment: the places it may go, best first (the statement it
/// names, then the blocks around it), and its text.
pub(super) struct PlacedNote {
    pub(super) anchors: Vec<Loc>,
    pub(super) text: String,
}

/// Where a note's comment goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Above entry `.1` of section `.0`.
    Entry(usize, usize),
    /// Right under section `.0`'s header.
    Header(usize),
    /// Nothing of it is in the output: in the list after the preamble.
    Top,
}

fn place(sections: &[Section], anchors: &[Loc]) -> Place {
    for &at in anchors.iter().filter(|at| at.is_some()) {
        for (s, section) in sections.iter().enumerate() {
            if let Some(e) = section.entries.iter().position(|(_, _, l)| *l == at) {
                return Place::Entry(s, e);
            }
            if section.line == at {
                return Place::Header(s);
            }
        }
    }
    Place::Top
}

/// A comment line: no control characters (a TOML comment ends at the line's end).
fn comment(indent: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    format!("{indent}# {clean}")
}

/// The document's text, and for each of its lines the keepalived statement it came from.
pub(super) fn render(
    sections: &[Section],
    preamble: &[String],
    notes: &[PlacedNote],
    files: &[SourceFile],
) -> (String, Vec<Loc>) {
    let mut text = String::new();
    let mut origin = Vec::new();
    let mut push = |line: String, from: Loc| {
        text.push_str(&line);
        text.push('\n');
        origin.push(from);
    };
    let placed: Vec<(Place, &PlacedNote)> = notes
        .iter()
        .map(|n| (place(sections, &n.anchors), n))
        .collect();
    let at = |p: Place| placed.iter().filter(move |(q, _)| *q == p).map(|(_, n)| n);
    for line in preamble {
        push(format!("# {line}"), Loc::NONE);
    }
    if at(Place::Top).next().is_some() {
        push("#".into(), Loc::NONE);
        push(
            "# keepalived settings with nothing in the tables below:".into(),
            Loc::NONE,
        );
        for note in at(Place::Top) {
            push(comment("", &note.text), note.anchors[0]);
        }
    }
    for (s, section) in sections.iter().enumerate() {
        let indent = if section.nested { "  " } else { "" };
        push(String::new(), Loc::NONE);
        let from = section.line;
        let origin_comment = if from.is_some() {
            format!("  # {}:{}", files[from.file].name, from.line)
        } else {
            String::new()
        };
        push(format!("{indent}{}{origin_comment}", section.header), from);
        for note in at(Place::Header(s)) {
            push(comment(indent, &note.text), note.anchors[0]);
        }
        for (e, (k, v, line)) in section.entries.iter().enumerate() {
            for note in at(Place::Entry(s, e)) {
                push(comment(indent, &note.text), note.anchors[0]);
            }
            let mut value = String::new();
            v.render(&mut value);
            push(format!("{indent}{} = {value}", key(k)), *line);
        }
    }
    (text, origin)
}
