//! keepalived's configuration syntax: whitespace-separated words, `{` `}` blocks (the
//! `{` on the keyword's line or the next one), `!` / `#` comments to the end of the
//! line, double-quoted strings that may hold spaces. Builds a tree of statements line
//! by line (so included files can be fed in where their `include` stood), each
//! statement with its file and 1-based line.

use std::fmt;

/// Where a statement was written: the index of its file in the import's file list
/// (0 = the file given) and its 1-based line. `line` 0 means "nowhere" (generated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Loc {
    pub(super) file: usize,
    pub(super) line: usize,
}

impl Loc {
    pub(super) const NONE: Loc = Loc { file: 0, line: 0 };

    pub(super) fn is_some(self) -> bool {
        self.line > 0
    }
}

/// One word of a statement; `quoted` if it was written in double quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Word {
    pub(super) text: String,
    pub(super) quoted: bool,
}

/// `keyword args... [{ block }]`.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) keyword: String,
    pub(super) args: Vec<Word>,
    pub(super) at: Loc,
    pub(super) block: Option<Vec<Node>>,
}

impl Node {
    /// The arguments' texts.
    pub(super) fn arg_texts(&self) -> Vec<&str> {
        self.args.iter().map(|w| w.text.as_str()).collect()
    }

    /// `keyword arg1 arg2 [{ ... }]` as written (quotes restored), for messages.
    pub(super) fn display(&self) -> String {
        let mut s = self.keyword.clone();
        for w in &self.args {
            s.push(' ');
            if w.quoted {
                s.push('"');
                s.push_str(&w.text);
                s.push('"');
            } else {
                s.push_str(&w.text);
            }
        }
        if self.block.is_some() {
            s.push_str(" { ... }");
        }
        s
    }

    /// Every word of the node and its block's statements, flattened: `group { A B }`,
    /// `unicast_peer { 192.0.2.2 \n 192.0.2.3 }`.
    pub(super) fn block_words(&self) -> Vec<(Word, Loc)> {
        let mut out = Vec::new();
        for node in self.block.iter().flatten() {
            out.push((
                Word {
                    text: node.keyword.clone(),
                    quoted: false,
                },
                node.at,
            ));
            out.extend(node.args.iter().map(|w| (w.clone(), node.at)));
        }
        out
    }
}

/// A syntax error: unbalanced braces, an unterminated quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The file it is in (the one given, or an included one).
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Debug)]
pub(super) enum Token {
    Word(Word),
    Open,
    Close,
}

/// The tokens of one line, without its comment; `Err` with the reason for an
/// unterminated quote.
pub(super) fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '!' || c == '#' {
            break;
        } else if c == '{' {
            chars.next();
            out.push(Token::Open);
        } else if c == '}' {
            chars.next();
            out.push(Token::Close);
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => text.push(c),
                    None => {
                        return Err("unterminated double-quoted string (a quote opened on this \
                                    line is not closed)"
                            .into());
                    }
                }
            }
            out.push(Token::Word(Word { text, quoted: true }));
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '{' || c == '}' || c == '"' {
                    break;
                }
                text.push(c);
                chars.next();
            }
            out.push(Token::Word(Word {
                text,
                quoted: false,
            }));
        }
    }
    Ok(out)
}

/// How deep blocks may nest. keepalived's own go four deep (`virtual_server` >
/// `real_server` > `HTTP_GET` > `url`); without a bound, a file of thousands of `{`
/// overflowed the stack when the tree was dropped (recursively).
pub(super) const MAX_DEPTH: usize = 32;

/// Builds the statement tree from lines fed one at a time, from any file.
pub(super) struct TreeBuilder {
    /// The open blocks: the statements collected so far in each, and where the `{`
    /// that opened it is. The bottom one is the top level.
    stack: Vec<(Vec<Node>, Loc)>,
}

impl TreeBuilder {
    pub(super) fn new() -> TreeBuilder {
        TreeBuilder {
            stack: vec![(Vec::new(), Loc::NONE)],
        }
    }

    fn level(&mut self) -> &mut Vec<Node> {
        &mut self.stack.last_mut().expect("top level").0
    }

    /// Adds one line's tokens; `Err` (with the reason) for a brace that does not fit.
    pub(super) fn line(&mut self, tokens: Vec<Token>, at: Loc) -> Result<(), String> {
        // The statement being built on this line (keyword and arguments).
        let mut current: Option<Node> = None;
        for token in tokens {
            match token {
                Token::Word(word) => match &mut current {
                    Some(node) => node.args.push(word),
                    None => {
                        current = Some(Node {
                            keyword: word.text,
                            args: Vec::new(),
                            at,
                            block: None,
                        })
                    }
                },
                Token::Open => {
                    let owner = match current.take() {
                        Some(node) => node,
                        // A `{` that starts its line belongs to the statement just before.
                        None => {
                            let level = self.level();
                            match level.last() {
                                Some(node) if node.block.is_none() => level.pop().expect("checked"),
                                _ => return Err("`{` without a keyword before it".into()),
                            }
                        }
                    };
                    self.level().push(owner);
                    if self.stack.len() > MAX_DEPTH {
                        return Err(format!(
                            "blocks nested more than {MAX_DEPTH} deep (a `}}` is missing \
                             somewhere above)"
                        ));
                    }
                    self.stack.push((Vec::new(), at));
                }
                Token::Close => {
                    if let Some(node) = current.take() {
                        self.level().push(node);
                    }
                    if self.stack.len() == 1 {
                        return Err(
                            "`}` closes no block (one `}` too many, or a `{` missing before it)"
                                .into(),
                        );
                    }
                    let (block, _) = self.stack.pop().expect("checked above");
                    let owner = self.level().last_mut().expect("a block has an owner");
                    owner.block = Some(block);
                }
            }
        }
        if let Some(node) = current.take() {
            self.level().push(node);
        }
        Ok(())
    }

    /// The top-level statements; `Err` with where the unclosed `{` is, and why.
    pub(super) fn finish(mut self) -> Result<Vec<Node>, (Loc, String)> {
        if self.stack.len() > 1 {
            let (_, opened) = *self.stack.last().expect("checked");
            let parent = &self.stack[self.stack.len() - 2].0;
            let owner = parent.last().map(|n| n.keyword.as_str()).unwrap_or("?");
            return Err((
                opened,
                format!("the `{{` of `{owner}` on this line is never closed (a `}}` is missing)"),
            ));
        }
        Ok(self.stack.pop().expect("top level").0)
    }
}

/// Parses one file's text (no includes) into top-level statements, for tests.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let error = |line, message| SyntaxError {
        file: "test".into(),
        line,
        message,
    };
    let mut tree = TreeBuilder::new();
    for (index, line) in text.lines().enumerate() {
        let at = Loc {
            file: 0,
            line: index + 1,
        };
        let tokens = tokens(line).map_err(|m| error(at.line, m))?;
        tree.line(tokens, at).map_err(|m| error(at.line, m))?;
    }
    tree.finish().map_err(|(at, m)| error(at.line, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_comments_and_quotes() {
        let nodes = parse(
            "! comment\nglobal_defs\n{\n  router_id lb1 # trailing\n}\nvrrp_script chk { script \"pgrep -x nginx\" }\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].keyword, "global_defs");
        assert_eq!(nodes[0].at.line, 2);
        let inner = nodes[0].block.as_ref().unwrap();
        assert_eq!(inner[0].keyword, "router_id");
        assert_eq!(inner[0].arg_texts(), vec!["lb1"]);
        let script = &nodes[1].block.as_ref().unwrap()[0];
        assert_eq!(script.args[0].text, "pgrep -x nginx");
        assert!(script.args[0].quoted);
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        assert_eq!(parse("a {\n b\n").unwrap_err().line, 1);
        assert_eq!(parse("a {\n}\n}\n").unwrap_err().line, 3);
        assert_eq!(parse("x \"open\n").unwrap_err().line, 1);
    }

    #[test]
    fn deep_nesting_is_a_syntax_error_not_a_stack_overflow() {
        // Found by tests/tests/fuzz_import.rs: 10,000 nested blocks overflowed a 2 MiB
        // stack when the tree was dropped.
        let nested = |depth: usize| format!("{}{}", "a {\n".repeat(depth), "}\n".repeat(depth));
        let deepest = parse(&nested(MAX_DEPTH)).unwrap();
        let mut depth = 0;
        let mut level = deepest.as_slice();
        while let [node] = level {
            depth += 1;
            level = node.block.as_deref().unwrap_or_default();
        }
        assert_eq!(depth, MAX_DEPTH);

        let error = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&nested(100_000)).map(|_| ()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(error.line, MAX_DEPTH + 1);
        assert!(
            error.message.contains("nested more than 32 deep"),
            "{error}"
        );
    }
}
