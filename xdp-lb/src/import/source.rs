//! Reading keepalived's configuration files line by line as keepalived reads them:
//! `include PATTERN` lines pull other files in where they stand (glob patterns with
//! `{a,b}` braces, relative to the including file's directory, nested), `@ID` lines
//! apply only on the host whose config id is `ID`, and `$NAME=` definitions are not
//! expanded (each line that needs one is reported instead). Every line keeps its file
//! and line number for the notes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::parse::{Loc, Node, SyntaxError, Token, TreeBuilder, Word, tokens};
use super::{NoteKind, RawNote};

/// keepalived follows includes without a depth limit; this only stops a cycle that
/// the path check cannot see (e.g. through symlinked directories).
const MAX_DEPTH: usize = 32;

/// A file read for the import: its name as shown in notes, and its lines.
#[derive(Debug, Clone)]
pub(super) struct SourceFile {
    pub(super) name: String,
    pub(super) lines: Vec<String>,
}

/// A line that is not a statement of the tree but is a setting of the source
/// (`include`, a conditional line, a definition), for the coverage count.
#[derive(Debug, Clone)]
pub(super) struct Directive {
    pub(super) at: Loc,
    pub(super) keyword: String,
}

/// Everything read: the statement tree, the files, and what the reading noted.
pub(super) struct Read {
    pub(super) nodes: Vec<Node>,
    pub(super) files: Vec<SourceFile>,
    pub(super) notes: Vec<RawNote>,
    pub(super) directives: Vec<Directive>,
}

struct Reader<'a> {
    config_id: Option<&'a str>,
    tree: TreeBuilder,
    files: Vec<SourceFile>,
    notes: Vec<RawNote>,
    directives: Vec<Directive>,
    /// `$NAME` definitions seen, whose uses are reported.
    definitions: Vec<String>,
    /// The files being read, outermost first (include cycles).
    open: Vec<PathBuf>,
    /// Open braces of a block being skipped (it started on a line using `$NAME`).
    skipping: usize,
}

/// Reads `text` (the file named `name`) and everything it includes.
pub(super) fn read(text: &str, name: &str, config_id: Option<&str>) -> Result<Read, SyntaxError> {
    let mut reader = Reader {
        config_id,
        tree: TreeBuilder::new(),
        files: Vec::new(),
        notes: Vec::new(),
        directives: Vec::new(),
        definitions: Vec::new(),
        open: Vec::new(),
        skipping: 0,
    };
    reader.file(text, name)?;
    let nodes = reader.tree.finish().map_err(|(at, message)| SyntaxError {
        file: reader.files[at.file].name.clone(),
        line: at.line,
        message,
    })?;
    Ok(Read {
        nodes,
        files: reader.files,
        notes: reader.notes,
        directives: reader.directives,
    })
}

impl Reader<'_> {
    fn note(&mut self, at: Loc, setting: impl Into<String>, why: impl Into<String>) {
        self.notes.push(RawNote {
            at,
            setting: setting.into(),
            why: why.into(),
            kind: NoteKind::NotTranslated,
        });
    }

    fn file(&mut self, text: &str, name: &str) -> Result<(), SyntaxError> {
        let file = self.files.len();
        self.files.push(SourceFile {
            name: name.to_owned(),
            lines: text.lines().map(str::to_owned).collect(),
        });
        self.open
            .push(std::fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name)));
        for (index, line) in text.lines().enumerate() {
            let at = Loc {
                file,
                line: index + 1,
            };
            let error = |message| SyntaxError {
                file: name.to_owned(),
                line: at.line,
                message,
            };
            let Some(line) = self.conditional(line.trim_start(), at) else {
                continue;
            };
            if let Some(pattern) = include_pattern(line) {
                self.directives.push(Directive {
                    at,
                    keyword: "include".into(),
                });
                self.include(&pattern, name, at)?;
                continue;
            }
            let words = tokens(line).map_err(error)?;
            if self.skipping > 0 {
                self.skipping = (self.skipping + opened(&words)).saturating_sub(closed(&words));
                continue;
            }
            if self.definition(line, &words, at) {
                continue;
            }
            self.tree.line(words, at).map_err(error)?;
        }
        self.open.pop();
        Ok(())
    }

    /// keepalived's `@ID line` / `@^ID line`: the line applies only where the config id
    /// (`keepalived -i ID`) is (or, with `^`, is not) `ID`. Returns the line to read.
    fn conditional<'l>(&mut self, line: &'l str, at: Loc) -> Option<&'l str> {
        let Some(rest) = line.strip_prefix('@') else {
            return Some(line);
        };
        let (negated, rest) = match rest.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        // keepalived drops an `@ID` with nothing after it.
        let (id, body) = rest.split_once([' ', '\t'])?;
        let body = body.trim_start();
        let keyword = body.split_whitespace().next().unwrap_or("").to_owned();
        self.directives.push(Directive {
            at,
            keyword: format!("@{}{id}", if negated { "^" } else { "" }),
        });
        match self.config_id {
            Some(ours) if (ours == id) != negated => Some(body),
            // keepalived skips it on this host too.
            Some(_) => None,
            None => {
                let condition = if negated {
                    format!("is not `{id}`")
                } else {
                    format!("is `{id}`")
                };
                self.note(
                    at,
                    format!("@{}{id} {body}", if negated { "^" } else { "" }),
                    format!(
                        "keepalived applies this line only where its config id (`keepalived -i`, \
                         else the host name) {condition}; give `--config-id` to import it for one \
                         host (`{keyword}` is left out)"
                    ),
                );
                None
            }
        }
    }

    /// `$NAME=value` definitions and `~SEQ` lines are not expanded: the definition and
    /// every line using one are reported and left out (never read with `$NAME` as text).
    fn definition(&mut self, line: &str, words: &[Token], at: Loc) -> bool {
        let why_seq = "keepalived's ~SEQ line generator is not expanded by the import: \
                       write the lines it generates";
        if line.starts_with("~SEQ") {
            self.directives.push(Directive {
                at,
                keyword: "~SEQ".into(),
            });
            self.note(at, line.trim_end(), why_seq);
            return true;
        }
        if let Some(rest) = line.strip_prefix('$')
            && let Some((name, _)) = rest.split_once('=')
            && !name.trim().is_empty()
            && name
                .trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let name = name.trim().to_owned();
            self.directives.push(Directive {
                at,
                keyword: format!("${name}"),
            });
            self.note(
                at,
                line.trim_end(),
                "keepalived's $NAME definitions are not expanded by the import: every line \
                 using it is left out and reported; replace $NAME by its value and import again",
            );
            self.definitions.push(name);
            return true;
        }
        let used = self.definitions.iter().find(|name| {
            words.iter().any(|t| match t {
                Token::Word(Word { text, .. }) => {
                    text.contains(&format!("${name}")) || text.contains(&format!("${{{name}}}"))
                }
                _ => false,
            })
        });
        if let Some(name) = used {
            let why = format!(
                "uses ${name}, which the import does not expand (see its definition){}",
                if opened(words) > closed(words) {
                    "; its block is left out with it"
                } else {
                    ""
                }
            );
            // A block opened on this line goes with it, or the rest would be misread.
            self.skipping = opened(words).saturating_sub(closed(words));
            self.note(at, line.trim_end(), why);
            return true;
        }
        false
    }

    /// Reads every file `pattern` matches, as keepalived does: relative to the including
    /// file's directory, in sorted order, directories skipped; a pattern that matches
    /// nothing is only logged by keepalived, so it is a note here, not an error.
    fn include(&mut self, pattern: &str, from: &str, at: Loc) -> Result<(), SyntaxError> {
        let setting = format!("include {pattern}");
        let base = Path::new(from).parent().unwrap_or(Path::new(""));
        let mut matched = 0;
        for alternative in expand_braces(pattern) {
            let full = if Path::new(&alternative).is_absolute() {
                PathBuf::from(&alternative)
            } else {
                base.join(&alternative)
            };
            for path in glob(&full) {
                if path.is_dir() {
                    continue;
                }
                matched += 1;
                let shown = path.display().to_string();
                if self.open.len() >= MAX_DEPTH
                    || self
                        .open
                        .contains(&std::fs::canonicalize(&path).unwrap_or(path.clone()))
                {
                    self.note(
                        at,
                        &setting,
                        format!(
                            "{shown} is already being read (an include cycle): keepalived would \
                             include it again and again; it is not read again"
                        ),
                    );
                    continue;
                }
                let skipped = std::fs::metadata(&path).map(|m| {
                    use std::os::unix::fs::PermissionsExt as _;
                    !m.is_file() || m.permissions().mode() & 0o111 != 0
                });
                // Only a regular file is read (a FIFO or /dev/zero would never end), and
                // at most as much as a configuration may be.
                let read = match &skipped {
                    Ok(false) => crate::config::read_bounded(&path),
                    Ok(true) => Err(String::new()),
                    Err(e) => Err(e.to_string()),
                };
                match (skipped, read) {
                    (Ok(true), _) => self.note(
                        at,
                        &setting,
                        format!(
                            "keepalived skips {shown} (\"not a regular non-executable file\"), \
                             and so does the import"
                        ),
                    ),
                    (_, Err(e)) => self.note(
                        at,
                        &setting,
                        format!(
                            "{shown} cannot be read ({e}): keepalived skips it too; \
                             import it once readable"
                        ),
                    ),
                    (_, Ok(text)) => self.file(&text, &shown)?,
                }
            }
        }
        if matched == 0 {
            self.note(
                at,
                setting,
                "no file matches: keepalived logs \"No config files matched\" and goes on \
                 without it, and so does the import",
            );
        }
        Ok(())
    }
}

/// The pattern of an `include PATTERN` line, read as keepalived reads it: exactly two
/// words split at blanks only (so `{a,b}` braces are the pattern's, not a block), a
/// double-quoted word kept whole, comments removed.
fn include_pattern(line: &str) -> Option<String> {
    let rest = line.strip_prefix("include")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    let (pattern, after) = match rest.strip_prefix('"') {
        Some(quoted) => {
            let (pattern, after) = quoted.split_once('"')?;
            (pattern.to_owned(), after)
        }
        None => {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            (rest[..end].to_owned(), &rest[end..])
        }
    };
    let after = after.trim_start();
    let nothing_after = after.is_empty() || after.starts_with(['#', '!']);
    (!pattern.is_empty() && !pattern.starts_with(['#', '!']) && nothing_after).then_some(pattern)
}

fn opened(words: &[Token]) -> usize {
    words.iter().filter(|t| matches!(t, Token::Open)).count()
}

fn closed(words: &[Token]) -> usize {
    words.iter().filter(|t| matches!(t, Token::Close)).count()
}

/// `a{b,c}d` → `abd`, `acd` (glob's GLOB_BRACE, which keepalived asks for), nested.
fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let middle = &pattern[pair[0] + 1..pair[1]];
        out.extend(expand_braces(&format!("{head}{middle}{tail}")));
    }
    out
}

/// The existing paths matching `pattern` (`*`, `?`, `[...]` per path component, as
/// glob(3): a leading `.` must be matched explicitly), sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = vec![PathBuf::new()];
    for component in pattern.components() {
        let text = component.as_os_str().to_string_lossy();
        let wild = text.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for dir in &found {
            if !wild {
                next.push(dir.join(component));
                continue;
            }
            let listing = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = std::fs::read_dir(listing) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.') || text.starts_with('.'))
                .filter(|name| matches(text.as_bytes(), name.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        found = next;
    }
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty() && p.exists() && seen.insert(p.clone()))
        .collect()
}

/// fnmatch(3) for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|skip| matches(&pattern[1..], &name[skip..])),
        Some(b'?') => !name.is_empty() && matches(&pattern[1..], &name[1..]),
        Some(b'[') => {
            let Some((&c, rest)) = name.split_first() else {
                return false;
            };
            let mut i = 1;
            let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
            if negated {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            while i < pattern.len() && (first || pattern[i] != b']') {
                first = false;
                let lo = pattern[i];
                if pattern.get(i + 1) == Some(&b'-')
                    && pattern.get(i + 2).is_some_and(|&h| h != b']')
                {
                    hit |= lo <= c && c <= pattern[i + 2];
                    i += 3;
                } else {
                    hit |= lo == c;
                    i += 1;
                }
            }
            if i >= pattern.len() {
                // No closing `]`: a literal `[`.
                return c == b'[' && matches(&pattern[1..], rest);
            }
            hit != negated && matches(&pattern[i + 1..], rest)
        }
        Some(b'\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && matches(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && matches(&pattern[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lines_are_two_words_split_at_blanks() {
        assert_eq!(
            include_pattern("include a/*.conf").as_deref(),
            Some("a/*.conf")
        );
        assert_eq!(
            include_pattern("include {x,y}.conf # c").as_deref(),
            Some("{x,y}.conf")
        );
        assert_eq!(
            include_pattern("include \"a b.conf\"").as_deref(),
            Some("a b.conf")
        );
        assert_eq!(include_pattern("include a b"), None);
        assert_eq!(include_pattern("include"), None);
        assert_eq!(include_pattern("included x"), None);
    }

    #[test]
    fn braces_expand_in_order_and_nest() {
        assert_eq!(expand_braces("a{b,c}d"), ["abd", "acd"]);
        assert_eq!(
            expand_braces("{x,y{1,2}}.conf"),
            ["x.conf", "y1.conf", "y2.conf"]
        );
        assert_eq!(expand_braces("plain"), ["plain"]);
        assert_eq!(expand_braces("open{"), ["open{"]);
    }

    #[test]
    fn components_match_as_fnmatch_does() {
        assert!(matches(b"*.conf", b"a.conf"));
        assert!(!matches(b"*.conf", b"a.conf.bak"));
        assert!(matches(b"vs?.conf", b"vs1.conf"));
        assert!(matches(b"vs[0-9].conf", b"vs7.conf"));
        assert!(!matches(b"vs[!0-9].conf", b"vs7.conf"));
        assert!(matches(b"a\\*", b"a*"));
        assert!(!matches(b"a\\*", b"ab"));
    }

    #[test]
    fn glob_sorts_skips_hidden_files_and_keeps_literal_paths() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.conf", "a.conf", ".hidden.conf", "c.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = glob(&dir.path().join("*.conf"));
        assert_eq!(
            found,
            [dir.path().join("a.conf"), dir.path().join("b.conf")]
        );
        assert_eq!(glob(&dir.path().join("c.txt")), [dir.path().join("c.txt")]);
        assert!(glob(&dir.path().join("none*.conf")).is_empty());
    }
}
