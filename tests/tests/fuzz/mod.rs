//! What the fuzz targets share (`fuzz_config.rs`, `fuzz_import.rs`; the VRRP decoder's
//! `vrrp/tests/fuzz_decode.rs` has its own copy of [`campaign`]): a seeded, bounded
//! proptest runner and byte-level mutations of text.
//!
//! Why proptest at scale rather than cargo-fuzz: cargo-fuzz needs the nightly toolchain,
//! `cargo install cargo-fuzz` and an instrumented (sanitizer + coverage) build of
//! xdp-lb and everything under it (tokio, hyper, aya...) beside the normal one: minutes of
//! extra build on CI's two shared cores for a job whose whole budget is well under 30
//! minutes, and a separate CI step outside `cargo xtask test`. libFuzzer's coverage
//! guidance pays off on long runs, which CI cannot afford. proptest is already in the
//! lock file, runs under plain `cargo test` (debug profile, no root, no network), is
//! reproducible from a printed seed, and shrinks a failure to a small input. The
//! targets make up for the missing coverage guidance by being structure-aware: they
//! start from the shipped configurations and realistic snippets, generate documents from
//! the parsers' own vocabulary, and then mutate bytes, lines and sections.
//!
//! Knobs (each target prints its case count, seed and rate):
//! - `XDP_LB_FUZZ_SCALE=N`: N times each target's default number of cases (default 1,
//!   sized so that the three targets take well under a minute in a debug build),
//! - `XDP_LB_FUZZ_SEED=N` (decimal or 0x hex) or `=random`: the seed (default fixed,
//!   so CI is reproducible). A failure names the seed to rerun it with.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

pub const SCALE_VAR: &str = "XDP_LB_FUZZ_SCALE";
pub const SEED_VAR: &str = "XDP_LB_FUZZ_SEED";
/// "xdp-lb" in ASCII.
pub const DEFAULT_SEED: u64 = 0x7864_702d_6c62;
/// The stack a reload parses the config on: tokio's blocking threads get 2 MiB. A
/// recursion that overflows it is a crash, so the campaigns run on one that size.
const STACK: usize = 2 << 20;

/// The case count and seed of one run, from the environment.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub cases: u32,
    pub seed: u64,
}

impl Budget {
    pub fn from_env(default_cases: u32) -> Budget {
        let scale = match std::env::var(SCALE_VAR) {
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .unwrap_or_else(|_| panic!("{SCALE_VAR}={v:?}: expected a whole number")),
            Err(_) => 1,
        };
        let seed = match std::env::var(SEED_VAR) {
            Ok(v) if v.trim() == "random" => std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            Ok(v) => {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse::<u64>(),
                };
                parsed.unwrap_or_else(|_| {
                    panic!("{SEED_VAR}={v:?}: expected a number (decimal or 0x hex) or `random`")
                })
            }
            Err(_) => DEFAULT_SEED,
        };
        Budget {
            cases: default_cases.saturating_mul(scale),
            seed,
        }
    }
}

/// Runs `test` on `default_cases` (times [`SCALE_VAR`]) values of the strategy `make`
/// builds (on the campaign's thread: strategies are not `Send`), seeded
/// from [`SEED_VAR`], on a 2 MiB stack. A failing case (an assertion or a panic) is
/// shrunk and reported with the seed. Returns what `test` collected in `stats`.
pub fn campaign<S, T>(
    name: &'static str,
    default_cases: u32,
    make: impl FnOnce() -> S + Send + 'static,
    test: fn(S::Value, &mut T) -> Result<(), TestCaseError>,
) -> T
where
    S: Strategy,
    S::Value: 'static,
    T: Default + Send + 'static,
{
    let budget = Budget::from_env(default_cases);
    let run = move || {
        let strategy = make();
        let config = Config {
            cases: budget.cases,
            // Nothing written into the source tree; the seed reproduces a failure.
            failure_persistence: None,
            max_shrink_iters: 10_000,
            ..Config::default()
        };
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&budget.seed.to_le_bytes());
        // Each target its own stream under one seed.
        for (i, b) in name.bytes().enumerate() {
            seed[8 + i % 24] ^= b;
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        // Before the run: a stack overflow aborts the process without a report.
        eprintln!(
            "{name}: {} cases, seed {:#x} ({SEED_VAR}=N|random, {SCALE_VAR}=N for N times \
             the cases)",
            budget.cases, budget.seed
        );
        let stats = RefCell::new(T::default());
        let start = Instant::now();
        let result = runner.run(&strategy, |value| test(value, &mut stats.borrow_mut()));
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => eprintln!(
                "{name}: {} cases, no failure, in {secs:.1} s ({:.0} cases/s)",
                budget.cases,
                f64::from(budget.cases) / secs.max(1e-9),
            ),
            Err(TestError::Fail(why, input)) => panic!(
                "{name}: failed with {SEED_VAR}={:#x} ({} cases): {why}\nminimal input: {input:#?}",
                budget.seed, budget.cases
            ),
            Err(TestError::Abort(why)) => {
                panic!("{name}: aborted with {SEED_VAR}={:#x}: {why}", budget.seed)
            }
        }
        stats.into_inner()
    };
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
        .spawn(run)
        .expect("spawn the campaign's thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// What a target knows about its text format, for the mutations.
pub struct Format {
    /// Texts worth inserting: punctuation, keywords, odd values.
    pub tokens: &'static [&'static str],
    /// Words to put in place of another word (keys, keywords, names).
    pub words: &'static [&'static str],
    /// Numbers to put in place of another number.
    pub numbers: &'static [&'static str],
    /// Where the section (table, block) that starts at line `start` ends (exclusive).
    pub section_end: fn(lines: &[&str], start: usize) -> usize,
    /// Whether a line starts a section.
    pub is_section_start: fn(line: &str) -> bool,
    /// Text nested `depth` deep (arrays, inline tables, blocks).
    pub nested: fn(depth: usize) -> String,
}

/// Unicode that trips naive code: a byte-order mark, a right-to-left override,
/// combining marks, astral characters, line and paragraph separators, NUL, DEL, CR.
pub const ODD_UNICODE: &[&str] = &[
    "\u{feff}",
    "\u{202e}",
    "e\u{301}",
    "\u{1d518}",
    "\u{2028}",
    "\u{2029}",
    "\0",
    "\u{7f}",
    "\r",
    "\r\n",
    "\u{85}",
    "\u{a0}",
    "\u{fffd}",
    "\u{10ffff}",
    "ß",
    "İ",
    "日本",
    "\u{200b}",
    "\t",
    "\u{1b}[31m",
];

/// One edit of a text. Positions are [`Index`]es, so they fit any length.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert text at a byte position.
    Insert(Index, String),
    /// Remove up to this many bytes.
    Delete(Index, usize),
    /// Overwrite one byte (the result is read back as UTF-8, lossily).
    Replace(Index, u8),
    /// Flip one bit of one byte.
    Flip(Index, u8),
    /// Cut the text there.
    Truncate(Index),
    /// Copy a line (of this text or of another seed) before another line.
    SpliceLine {
        donor: Index,
        from: Index,
        to: Index,
    },
    /// Remove a line.
    DeleteLine(Index),
    /// Swap two lines.
    SwapLines(Index, Index),
    /// Copy a whole section (table, block) before another line.
    DuplicateSection { section: Index, to: Index },
    /// Put a number in place of a run of digits.
    Number(Index, String),
    /// Put a word in place of a word.
    Word(Index, String),
}

/// Text worth inserting for `format`.
pub fn insertion(format: &'static Format) -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(format.tokens).prop_map(str::to_owned),
        2 => select(format.words).prop_map(|w| format!("{w} ")),
        2 => select(ODD_UNICODE).prop_map(str::to_owned),
        1 => select(format.numbers).prop_map(str::to_owned),
        2 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
        1 => "[ -~\n]{1,16}",
        1 => (1usize..160).prop_map(format.nested),
        // Rarely, deeper than any limit: a recursion in the parser, the translation or
        // a destructor overflows the stack here.
        1 => prop_oneof![9 => Just(200usize), 1 => 5_000usize..30_000].prop_map(format.nested),
    ]
    .boxed()
}

pub fn mutation(format: &'static Format) -> BoxedStrategy<Mutation> {
    prop_oneof![
        6 => (any::<Index>(), insertion(format)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        3 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(donor, from, to)| Mutation::SpliceLine { donor, from, to }),
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        2 => (any::<Index>(), any::<Index>())
            .prop_map(|(section, to)| Mutation::DuplicateSection { section, to }),
        3 => (any::<Index>(), select(format.numbers))
            .prop_map(|(i, n)| Mutation::Number(i, n.to_owned())),
        3 => (any::<Index>(), select(format.words))
            .prop_map(|(i, w)| Mutation::Word(i, w.to_owned())),
    ]
    .boxed()
}

/// A seed text with a few mutations applied.
#[derive(Debug, Clone)]
pub struct Mutated {
    pub seed: usize,
    pub mutations: Vec<Mutation>,
    pub text: String,
}

/// One of `seeds`, mutated 1 to `max` times (mutations may take lines of other seeds).
pub fn mutated(
    format: &'static Format,
    seeds: &'static [&'static str],
    max: usize,
) -> impl Strategy<Value = Mutated> {
    (0..seeds.len(), vec(mutation(format), 1..=max)).prop_map(move |(seed, mutations)| {
        let mut text = seeds[seed].to_owned();
        for m in &mutations {
            text = apply(format, seeds, &text, m);
        }
        Mutated {
            seed,
            mutations,
            text,
        }
    })
}

/// `text` with mutation `m` applied.
pub fn apply(format: &Format, seeds: &[&str], text: &str, m: &Mutation) -> String {
    let bytes = text.as_bytes();
    let at = |i: &Index| {
        if bytes.is_empty() {
            0
        } else {
            i.index(bytes.len() + 1)
        }
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let line_at = |i: &Index| {
        if lines.is_empty() {
            0
        } else {
            i.index(lines.len() + 1)
        }
    };
    let with_lines = |lines: Vec<&str>| lines.concat();
    let out: Vec<u8> = match m {
        Mutation::Insert(i, s) => {
            let at = at(i);
            [&bytes[..at], s.as_bytes(), &bytes[at..]].concat()
        }
        Mutation::Delete(i, n) => {
            let at = at(i);
            let end = (at + n).min(bytes.len());
            [&bytes[..at], &bytes[end..]].concat()
        }
        Mutation::Replace(i, b) | Mutation::Flip(i, b) if !bytes.is_empty() => {
            let mut out = bytes.to_vec();
            let at = i.index(bytes.len());
            out[at] = match m {
                Mutation::Flip(..) => out[at] ^ (1 << (b % 8)),
                _ => *b,
            };
            out
        }
        Mutation::Replace(..) | Mutation::Flip(..) => bytes.to_vec(),
        Mutation::Truncate(i) => bytes[..at(i)].to_vec(),
        Mutation::SpliceLine { donor, from, to } => {
            let donor: Vec<&str> = seeds[donor.index(seeds.len())]
                .split_inclusive('\n')
                .collect();
            let mut lines = lines.clone();
            if !donor.is_empty() {
                let line = donor[from.index(donor.len())];
                lines.insert(line_at(to), line);
            }
            with_lines(lines).into_bytes()
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            let mut lines = lines.clone();
            lines.remove(i.index(lines.len()));
            with_lines(lines).into_bytes()
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => {
            let mut lines = lines.clone();
            let n = lines.len();
            lines.swap(a.index(n), b.index(n));
            with_lines(lines).into_bytes()
        }
        Mutation::DeleteLine(_) | Mutation::SwapLines(..) => bytes.to_vec(),
        Mutation::DuplicateSection { section, to } => {
            let starts: Vec<usize> = (0..lines.len())
                .filter(|&i| (format.is_section_start)(lines[i]))
                .collect();
            if starts.is_empty() {
                bytes.to_vec()
            } else {
                let start = starts[section.index(starts.len())];
                let end = (format.section_end)(&lines, start).clamp(start + 1, lines.len());
                let copy: Vec<&str> = lines[start..end].to_vec();
                let mut lines = lines.clone();
                let to = line_at(to);
                // A section copied after a last line without a newline would join it.
                let mut insert = copy;
                if to == lines.len() && !text.ends_with('\n') {
                    insert.insert(0, "\n");
                }
                lines.splice(to..to, insert);
                with_lines(lines).into_bytes()
            }
        }
        Mutation::Number(i, n) => replace_run(text, i, |c| c.is_ascii_digit(), n).into_bytes(),
        Mutation::Word(i, w) => {
            replace_run(text, i, |c| c.is_ascii_alphanumeric() || c == '_', w).into_bytes()
        }
    };
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with its `i`-th maximal run of characters matching `class` replaced by `with`.
fn replace_run(text: &str, i: &Index, class: fn(char) -> bool, with: &str) -> String {
    let mut runs = Vec::new();
    let mut start = None;
    for (at, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (start, class(c) && at < text.len()) {
            (None, true) => start = Some(at),
            (Some(s), false) => {
                runs.push(s..at);
                start = None;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return text.to_owned();
    }
    let run = runs[i.index(runs.len())].clone();
    format!("{}{with}{}", &text[..run.start], &text[run.end..])
}

/// Whether `line` (the `line_no`-th, 1-based) of `text` exists and `col` is at most
/// one past its last character (a byte-order mark on the first line takes no column).
pub fn position_in_text(text: &str, line_no: usize, col: usize) -> Result<(), String> {
    let newlines = text.bytes().filter(|&b| b == b'\n').count();
    if line_no == 0 || line_no > newlines + 1 {
        return Err(format!(
            "line {line_no} is outside the text ({} lines, {newlines} newlines)",
            text.lines().count()
        ));
    }
    let line = text.split('\n').nth(line_no - 1).unwrap_or("");
    let line = if line_no == 1 {
        line.strip_prefix('\u{feff}').unwrap_or(line)
    } else {
        line
    };
    let width = line.chars().count();
    if col == 0 || col > width + 1 {
        return Err(format!(
            "column {col} is outside line {line_no} ({width} characters: {line:?})"
        ));
    }
    Ok(())
}
