//! `xdp-lb import-keepalived`: translates a keepalived.conf (and the files it includes)
//! into an xdp-lb TOML configuration. Every keepalived setting that is not translated,
//! or translated with a difference, becomes a [`Note`] with its file and line, printed
//! and also written as a comment beside the place in the output it concerns; the TOML
//! text is validated with [`crate::config::parse`] before anyone uses it.
//!
//! - `source.rs`: reading the files as keepalived does (`include`, `@ID` lines),
//! - `parse.rs`: keepalived's syntax (words, quotes, comments, `{ }` blocks),
//! - `translate.rs`: statements → xdp-lb tables, and the notes,
//! - `checks.rs`: a real server's checker → its `check = { ... }`,
//! - `fwmark.rs`: firewall marks → the VIP:port pairs the rules setting them select,
//! - `toml_out.rs`: the TOML text, with each line's keepalived origin and the notes,
//! - `coverage.rs`: each setting of the source, carried over or noted.

mod checks;
mod coverage;
mod fwmark;
mod parse;
mod source;
mod toml_out;
mod translate;

use std::fmt;
use std::path::Path;

pub use coverage::{Outcome, Setting};
pub use parse::SyntaxError;

use crate::config::{self, Config};
use parse::{Loc, Node};
use source::{Directive, SourceFile};
use toml_out::{Section, V};

/// A keepalived setting that was not translated, or translated with a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The keepalived file it is in (the one given, or an included one).
    pub file: String,
    /// 1-based line in that file.
    pub line: usize,
    /// The setting as written (keyword and values; `{ ... }` for a block).
    pub setting: String,
    /// Why, and what to do instead.
    pub why: String,
    pub kind: NoteKind,
}

/// Whether a noted setting is in the output at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Left out (with its block, if it has one).
    NotTranslated,
    /// In the output, with what differs from keepalived (or what keepalived does to
    /// it, e.g. truncating) said in `why`.
    Translated,
}

impl Note {
    /// `FILE:LINE: setting: not translated (why)` or `...: translated (why)`.
    pub fn message(&self) -> String {
        let done = match self.kind {
            NoteKind::NotTranslated => "not translated",
            NoteKind::Translated => "translated",
        };
        format!(
            "{}:{}: {}: {done} ({})",
            self.file, self.line, self.setting, self.why
        )
    }
}

/// A note while translating: where, by file index.
#[derive(Debug, Clone)]
struct RawNote {
    at: Loc,
    setting: String,
    why: String,
    kind: NoteKind,
}

/// Why no configuration could be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// A keepalived file's syntax is broken (`source` is that file).
    Syntax { source: String, error: SyntaxError },
    /// No `--interface` and no VRRP instance to take one from.
    NoInterface { source: String },
    /// The file given cannot be read.
    Read { source: String, error: String },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Syntax { source, error } => {
                write!(
                    f,
                    "{source}:{}: syntax error: {}",
                    error.line, error.message
                )
            }
            ImportError::NoInterface { source } => write!(
                f,
                "{source}: no vrrp_instance names an interface for the XDP program: \
                 give `--interface IFACE` (the NIC the virtual servers' traffic arrives on)"
            ),
            ImportError::Read { source, error } => {
                write!(f, "{source}: cannot read keepalived configuration: {error}")
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// What the import is told besides the file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[dataplane] interfaces`; empty = the VRRP instances' interfaces.
    pub interfaces: Vec<String>,
    /// keepalived's config id (`keepalived -i ID`): which `@ID` lines apply. `None`:
    /// each conditional line is noted and left out.
    pub config_id: Option<String>,
    /// Firewall rules (`iptables-save` or `nft list ruleset` output) that set the marks
    /// of `fwmark` virtual servers and group entries.
    pub fwmark_rules: Vec<std::path::PathBuf>,
}

/// The translation: TOML text (not yet validated) and what was left out.
#[derive(Debug, Clone)]
pub struct Import {
    /// The keepalived file's name, as given.
    pub source: String,
    pub toml: String,
    /// Sorted by file (the given one first, then as included) and line.
    pub notes: Vec<Note>,
    /// `[dataplane] interfaces`, and whether they came from the VRRP instances.
    pub interfaces: Vec<String>,
    pub interfaces_from_vrrp: bool,
    /// For each line of `toml`, the keepalived line it came from.
    origin: Vec<Loc>,
    /// The keepalived files read, to quote in messages.
    files: Vec<SourceFile>,
    /// The statements read and the line-level settings, for [`Import::settings`].
    nodes: Vec<Node>,
    directives: Vec<Directive>,
    raw_notes: Vec<RawNote>,
}

/// Name of the generated text in validation messages.
pub const GENERATED: &str = "generated";

impl Import {
    /// [`Note::message`], one per note.
    pub fn report(&self) -> Vec<String> {
        self.notes.iter().map(Note::message).collect()
    }

    /// Every setting of the keepalived files, and whether it was carried over.
    pub fn settings(&self) -> Vec<Setting> {
        coverage::settings(&self.nodes, &self.directives, &self.raw_notes, &self.files)
    }

    /// Validates the TOML as `xdp-lb check` would. The error names the generated text's
    /// line:col, quotes that line, and names the keepalived line it came from.
    pub fn validate(&self) -> Result<Config, String> {
        config::parse(&self.toml, GENERATED).map_err(|e| {
            let Some(location) = e.location() else {
                return e.to_string();
            };
            let text = self
                .toml
                .lines()
                .nth(location.line.saturating_sub(1))
                .unwrap_or("");
            let mut message = format!(
                "the translated configuration is not valid: {e}\n  {GENERATED}:{} | {}",
                location.line,
                text.trim()
            );
            if let Some(at) = self
                .origin
                .get(location.line.saturating_sub(1))
                .copied()
                .filter(|at| at.is_some())
            {
                let file = &self.files[at.file];
                let original = file.lines.get(at.line - 1).map_or("", |l| l.trim());
                message.push_str(&format!("\n  {}:{} | {original}", file.name, at.line));
            }
            message
        })
    }
}

/// Translates keepalived configuration `text` (named `source` in messages; files it
/// includes are looked for relative to `source`'s directory).
/// `interfaces`: `[dataplane] interfaces`; empty = the VRRP instances' interfaces.
pub fn import(text: &str, source: &str, interfaces: &[String]) -> Result<Import, ImportError> {
    let options = Options {
        interfaces: interfaces.to_vec(),
        ..Options::default()
    };
    import_text(text, source, &options)
}

/// Reads and translates the keepalived configuration at `path`.
pub fn import_file(path: &Path, options: &Options) -> Result<Import, ImportError> {
    let source = path.display().to_string();
    // A regular file of bounded size only, as for xdp-lb's own configuration.
    let text = crate::config::read_bounded(path).map_err(|error| ImportError::Read {
        source: source.clone(),
        error,
    })?;
    import_text(&text, &source, options)
}

/// [`import`] with every option.
pub fn import_text(text: &str, source: &str, options: &Options) -> Result<Import, ImportError> {
    let read = source::read(text, source, options.config_id.as_deref()).map_err(|error| {
        ImportError::Syntax {
            source: error.file.clone(),
            error,
        }
    })?;
    let nodes = read.nodes;
    let mut tx = translate::Tx::default();
    tx.notes = read.notes;
    for path in &options.fwmark_rules {
        let name = path.display().to_string();
        let text = crate::config::read_bounded(path).map_err(|error| ImportError::Read {
            source: name.clone(),
            error,
        })?;
        tx.marks.read(&text, &name);
    }
    // Dependencies first: global defaults, scripts, instances, then what refers to them.
    let order = [
        "global_defs",
        "vrrp_script",
        "bfd_instance",
        "vrrp_instance",
        "vrrp_sync_group",
        "virtual_server_group",
        "virtual_server",
    ];
    for kind in order {
        for node in nodes.iter().filter(|n| n.keyword == kind) {
            match kind {
                "global_defs" => tx.global_defs(node),
                "vrrp_script" => tx.vrrp_script(node),
                "bfd_instance" => tx.bfd_instance(node),
                "vrrp_instance" => tx.vrrp_instance(node),
                "vrrp_sync_group" => tx.vrrp_sync_group(node),
                "virtual_server_group" => tx.virtual_server_group(node),
                _ => tx.virtual_server(node),
            }
        }
    }
    for node in nodes
        .iter()
        .filter(|n| !order.contains(&n.keyword.as_str()))
    {
        tx.unhandled(node);
    }

    let (interfaces, from_vrrp) = if options.interfaces.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for (_, iface, _) in &tx.instances {
            if !names.contains(iface) {
                names.push(iface.clone());
            }
        }
        if names.is_empty() {
            return Err(ImportError::NoInterface {
                source: source.to_owned(),
            });
        }
        (names, true)
    } else {
        (options.interfaces.clone(), false)
    };

    let mut sections: Vec<Section> = Vec::new();
    if let Some((id, at)) = &tx.router_id {
        let mut global = Section::new("[global]".into(), Loc::NONE);
        global.set("router_id", V::str(id), *at);
        sections.push(global);
    }
    let mut dataplane = Section::new("[dataplane]".into(), Loc::NONE);
    dataplane.set("interfaces", V::strs(interfaces.clone()), Loc::NONE);
    sections.push(dataplane);
    sections.append(&mut tx.scripts);
    sections.append(&mut tx.bfd);
    sections.extend(tx.instances.iter().map(|(_, _, s)| s.clone()));
    sections.append(&mut tx.groups);
    sections.extend(tx.sync.take());
    sections.append(&mut tx.server_groups);
    sections.append(&mut tx.services);

    let mut raw_notes = tx.notes;
    raw_notes.sort_by_key(|n| n.at);
    let preamble = vec![
        format!("xdp-lb configuration translated from {source} by `xdp-lb import-keepalived`."),
        "Review it before use: each keepalived setting left out or translated with a difference"
            .to_owned(),
        "is noted in a comment beside the place it concerns (or below, if nothing of it is left)."
            .to_owned(),
    ];
    let placed: Vec<toml_out::PlacedNote> = raw_notes
        .iter()
        .map(|n| toml_out::PlacedNote {
            anchors: coverage::anchors(&nodes, n.at),
            text: public_note(n, &read.files).message(),
        })
        .collect();
    let (toml, origin) = toml_out::render(&sections, &preamble, &placed, &read.files);
    Ok(Import {
        source: source.to_owned(),
        toml,
        notes: raw_notes
            .iter()
            .map(|n| public_note(n, &read.files))
            .collect(),
        interfaces,
        interfaces_from_vrrp: from_vrrp,
        origin,
        files: read.files,
        nodes,
        directives: read.directives,
        raw_notes,
    })
}

fn public_note(n: &RawNote, files: &[SourceFile]) -> Note {
    Note {
        file: files[n.at.file].name.clone(),
        line: n.at.line,
        setting: n.setting.clone(),
        why: n.why.clone(),
        kind: n.kind,
    }
}
