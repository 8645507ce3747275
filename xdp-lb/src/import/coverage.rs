//! Which settings of the keepalived files the import carried over and which it noted:
//! every statement of the tree (nested ones included) and every line-level setting
//! (`include`, `@ID` lines, definitions), each with its outcome. A statement is noted
//! when a note names it, or when a block around it was left out as a whole.

use super::parse::{Loc, Node};
use super::source::{Directive, SourceFile};
use super::{NoteKind, RawNote};

/// One setting of the source and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub file: String,
    pub line: usize,
    /// Its keyword as written (`include`, `@ID` for a conditional line).
    pub keyword: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In the output with keepalived's meaning (or, like `state`, needing no output).
    Carried,
    /// Named by a note (left out, or translated with a difference): the note's reason.
    Noted { why: String },
}

pub(super) fn settings(
    nodes: &[Node],
    directives: &[Directive],
    notes: &[RawNote],
    files: &[SourceFile],
) -> Vec<Setting> {
    let mut out = Vec::new();
    walk(nodes, None, notes, files, &mut out);
    for d in directives {
        let note = notes.iter().find(|n| n.at == d.at);
        out.push(Setting {
            file: files[d.at.file].name.clone(),
            line: d.at.line,
            keyword: d.keyword.clone(),
            outcome: outcome(note),
        });
    }
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}

fn outcome(note: Option<&RawNote>) -> Outcome {
    match note {
        Some(n) => Outcome::Noted { why: n.why.clone() },
        None => Outcome::Carried,
    }
}

/// `left_out`: the note of an enclosing block left out as a whole.
fn walk(
    nodes: &[Node],
    left_out: Option<&RawNote>,
    notes: &[RawNote],
    files: &[SourceFile],
    out: &mut Vec<Setting>,
) {
    for node in nodes {
        let own = note_of(node, nodes, notes);
        let note = own.or(left_out);
        out.push(Setting {
            file: files[node.at.file].name.clone(),
            line: node.at.line,
            keyword: node.keyword.clone(),
            outcome: outcome(note),
        });
        if let Some(block) = &node.block {
            let inner = match own {
                Some(n) if n.kind == NoteKind::NotTranslated => Some(n),
                _ => left_out,
            };
            walk(block, inner, notes, files, out);
        }
    }
}

/// The note naming `node`: one at its line whose setting starts with its keyword, or
/// any at its line if no other statement shares that line.
fn note_of<'n>(node: &Node, siblings: &[Node], notes: &'n [RawNote]) -> Option<&'n RawNote> {
    let at_line = || notes.iter().filter(|n| n.at == node.at);
    let named = at_line().find(|n| {
        n.setting.split_whitespace().next() == Some(node.keyword.as_str())
            || (n.setting.starts_with('"') && n.setting[1..].starts_with(node.keyword.as_str()))
    });
    if named.is_some() {
        return named;
    }
    let alone = siblings.iter().filter(|s| s.at == node.at).count() == 1
        && node.block.iter().flatten().all(|child| child.at != node.at);
    if alone { at_line().next() } else { None }
}

/// `at`, then the statements around the one at `at`, innermost first: where a note
/// about it may be written in the output.
pub(super) fn anchors(nodes: &[Node], at: Loc) -> Vec<Loc> {
    fn path(nodes: &[Node], at: Loc, trail: &mut Vec<Loc>) -> bool {
        for node in nodes {
            if node.at == at {
                return true;
            }
            if let Some(block) = &node.block {
                trail.push(node.at);
                if path(block, at, trail) {
                    return true;
                }
                trail.pop();
            }
        }
        false
    }
    let mut trail = Vec::new();
    let mut out = vec![at];
    if path(nodes, at, &mut trail) {
        out.extend(trail.into_iter().rev());
    }
    out
}
