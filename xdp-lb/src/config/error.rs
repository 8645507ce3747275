//! Config errors and source locations: turns byte offsets (TOML spans) into the
//! `file:line:col` that every message starts with.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A position in a config file. `line` and `col` are 1-based; `col` counts characters
/// (a tab is one column, as in compiler messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.line, self.col)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, or is not a file of a sane size; `reason` says
    /// which (the OS error included).
    #[error("{}: cannot read config file: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// The text is not valid TOML, or it is TOML that does not describe a valid config.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
}

impl ConfigError {
    /// Where in the file the problem is (`None` for an I/O error).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { location, .. } => Some(location),
        }
    }

    /// The message without its location prefix (`None` for an I/O error).
    pub fn message(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { message, .. } => Some(message),
        }
    }
}

/// The text being parsed and its name, to build located errors from byte offsets.
pub(super) struct SourceText<'a> {
    pub(super) text: &'a str,
    pub(super) source: &'a str,
    /// Byte offset of each line's start, so locating an offset is a binary search
    /// (every real server is located: a scan from the top each time made big files
    /// quadratic to load).
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    pub(super) fn new(text: &'a str, source: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(newlines(text).map(|i| i + 1))
            .collect();
        Self {
            text,
            source,
            line_starts,
        }
    }

    /// The location of byte `offset`. Offsets past the end clamp to the end; an offset
    /// inside a multi-byte character counts as that character.
    pub(super) fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        // The last line start at or before `offset`.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        // Count characters, not bytes: the start of each UTF-8 sequence is one character.
        // A byte-order mark occupies no column.
        let skip = if line_start == 0 && self.text.starts_with('\u{feff}') {
            3
        } else {
            0
        };
        let col = 1 + before[(line_start + skip).min(offset)..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count();
        Location {
            source: self.source.to_owned(),
            line,
            col,
        }
    }

    /// An error at the start of `span`.
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.locate(span.start),
            message: message.into(),
        }
    }

    /// The 1-based line of byte `offset`, for messages that refer to another place.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.locate(offset).line
    }

    /// Converts a `toml` error (syntax, or a shape the serde types reject) into a located
    /// error, rewording serde's Rust-flavoured phrases into TOML terms and naming the key.
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        // Syntax errors come as several lines ("invalid array\nexpected `]`").
        let mut message = error
            .message()
            .trim()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ")
            .replace("unknown field", "unknown key")
            .replace("expected a sequence", "expected an array")
            .replace("invalid type: map", "invalid type: table")
            .replace("invalid type: sequence", "invalid type: array");
        if message.is_empty() {
            // toml gives some syntax errors no words (a control character in a comment).
            message = self.unexpected_at(span.start);
        }
        if let Some(hint) = unknown_key_hint(&message) {
            message.push_str(hint);
        }
        let names_key = message.starts_with("unknown key") || message.starts_with("duplicate key");
        if !names_key && let Some(key) = self.key_before(span.start) {
            message = format!("`{key}`: {message}");
        } else if message.starts_with("invalid type:")
            && let Some(header) = self.table_header_at(span.start)
        {
            message = format!("`[{header}]`: {message}");
            if message.ends_with("expected an array") {
                message.push_str(&format!(" of tables: write `[[{header}]]`"));
            }
        }
        self.error(span, message)
    }

    /// What is wrong at byte `offset`, said from the character found there.
    fn unexpected_at(&self, offset: usize) -> String {
        let at = self.text.floor_char_boundary(offset);
        match self.text[at..].chars().next() {
            Some(c) if c.is_control() => format!(
                "invalid TOML: control character U+{:04X} (none but tab is allowed, not \
                 even in a comment)",
                u32::from(c)
            ),
            Some(c) => format!("invalid TOML: unexpected `{c}`"),
            None => "invalid TOML: unexpected end of file".to_owned(),
        }
    }

    /// The key of a `key = value` pair whose value starts at `offset`, if the text
    /// there has that shape.
    fn key_before(&self, offset: usize) -> Option<&'a str> {
        let before = self.text.get(..offset)?.trim_end_matches([' ', '\t']);
        let before = before.strip_suffix('=')?.trim_end_matches([' ', '\t']);
        // After the last character that cannot be in a key (which may take several bytes).
        let start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let key = &before[start..];
        (!key.is_empty()).then_some(key)
    }

    /// The name of a `[table]` header that starts at `offset`, if there is one.
    fn table_header_at(&self, offset: usize) -> Option<&'a str> {
        let rest = self.text.get(offset..)?.strip_prefix('[')?;
        if rest.starts_with('[') {
            return None;
        }
        let end = rest.find(']')?;
        Some(rest[..end].trim())
    }
}

/// keepalived spells some of our keys differently; point its users at ours.
fn unknown_key_hint(message: &str) -> Option<&'static str> {
    if message.starts_with("unknown key `lb_algo`") {
        Some("; did you mean `scheduler`?")
    } else if message.starts_with("unknown key `lb_kind`") {
        Some("; did you mean `forwarding`?")
    } else {
        None
    }
}

/// Byte offsets of every `\n` in `text`.
fn newlines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
}
