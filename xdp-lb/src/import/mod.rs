//! `xdp-lb import-keepalived`: translates a keepalived.conf into an xdp-lb TOML
//! configuration. Every keepalived setting that is not translated becomes a [`Note`]
//! with its line and what to do about it; the TOML text is validated with
//! [`crate::config::parse`] before anyone uses it.
//!
//! - `parse.rs`: keepalived's syntax (words, quotes, comments, `{ }` blocks),
//! - `translate.rs`: statements → xdp-lb tables, and the notes,
//! - `toml_out.rs`: the TOML text, with each line's keepalived origin.

mod parse;
mod toml_out;
mod translate;

use std::fmt;

pub use parse::SyntaxError;

use crate::config::{self, Config};
use toml_out::{Section, V};

/// A keepalived setting that was not translated (or only in part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line in the keepalived file.
    pub line: usize,
    /// The setting as written (keyword and values; `{ ... }` for a block).
    pub setting: String,
    /// Why, and what to do instead.
    pub why: String,
}

/// Why no configuration could be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The keepalived file's syntax is broken.
    Syntax { source: String, error: SyntaxError },
    /// No `--interface` and no VRRP instance to take one from.
    NoInterface { source: String },
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
        }
    }
}

impl std::error::Error for ImportError {}

/// The translation: TOML text (not yet validated) and what was left out.
#[derive(Debug, Clone)]
pub struct Import {
    /// The keepalived file's name, as given.
    pub source: String,
    pub toml: String,
    /// Sorted by line.
    pub notes: Vec<Note>,
    /// `[dataplane] interfaces`, and whether they came from the VRRP instances.
    pub interfaces: Vec<String>,
    pub interfaces_from_vrrp: bool,
    /// For each line of `toml`, the keepalived line it came from.
    origin: Vec<Option<usize>>,
    /// The keepalived text's lines, to quote in messages.
    source_lines: Vec<String>,
}

/// Name of the generated text in validation messages.
pub const GENERATED: &str = "generated";

impl Import {
    /// `FILE:LINE: setting: not translated (why)`, one per note.
    pub fn report(&self) -> Vec<String> {
        self.notes
            .iter()
            .map(|n| {
                format!(
                    "{}:{}: {}: not translated ({})",
                    self.source, n.line, n.setting, n.why
                )
            })
            .collect()
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
            if let Some(line) = self
                .origin
                .get(location.line.saturating_sub(1))
                .copied()
                .flatten()
            {
                let original = self.source_lines.get(line - 1).map_or("", |l| l.trim());
                message.push_str(&format!("\n  {}:{line} | {original}", self.source));
            }
            message
        })
    }
}

/// Translates keepalived configuration `text` (named `source` in messages).
/// `interfaces`: `[dataplane] interfaces`; empty = the VRRP instances' interfaces.
pub fn import(text: &str, source: &str, interfaces: &[String]) -> Result<Import, ImportError> {
    let nodes = parse::parse(text).map_err(|error| ImportError::Syntax {
        source: source.to_owned(),
        error,
    })?;
    let mut tx = translate::Tx::default();
    // Dependencies first: global defaults, scripts, instances, then what refers to them.
    let order = [
        "global_defs",
        "vrrp_script",
        "vrrp_instance",
        "vrrp_sync_group",
        "virtual_server",
    ];
    for kind in order {
        for node in nodes.iter().filter(|n| n.keyword == kind) {
            match kind {
                "global_defs" => tx.global_defs(node),
                "vrrp_script" => tx.vrrp_script(node),
                "vrrp_instance" => tx.vrrp_instance(node),
                "vrrp_sync_group" => tx.vrrp_sync_group(node),
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

    let (interfaces, from_vrrp) = if interfaces.is_empty() {
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
        (interfaces.to_vec(), false)
    };

    let mut sections: Vec<Section> = Vec::new();
    if let Some((id, line)) = &tx.router_id {
        let mut global = Section::new("[global]".into(), 0);
        global.set("router_id", V::str(id), *line);
        sections.push(global);
    }
    let mut dataplane = Section::new("[dataplane]".into(), 0);
    dataplane.set("interfaces", V::strs(interfaces.clone()), 0);
    sections.push(dataplane);
    sections.append(&mut tx.scripts);
    sections.extend(tx.instances.iter().map(|(_, _, s)| s.clone()));
    sections.append(&mut tx.groups);
    sections.append(&mut tx.services);

    let preamble = vec![
        format!("xdp-lb configuration translated from {source} by `xdp-lb import-keepalived`."),
        "Review it, and every \"not translated\" line the import printed, before use.".to_owned(),
    ];
    let (toml, origin) = toml_out::render(&sections, &preamble, source);
    let mut notes = tx.notes;
    notes.sort_by_key(|n| n.line);
    Ok(Import {
        source: source.to_owned(),
        toml,
        notes,
        interfaces,
        interfaces_from_vrrp: from_vrrp,
        origin,
        source_lines: text.lines().map(str::to_owned).collect(),
    })
}
