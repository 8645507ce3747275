//! What an operator reads when the kernel's verifier refuses the XDP program: the
//! kernel, the verifier's reason and the instructions just before it, instead of its
//! whole log (thousands of lines, the reason near the end).

/// The oldest kernel the program is tested on: Debian 12's 6.1, under qemu in
/// `cargo xtask test` (this project's machines run 6.18).
pub const TESTED_FROM: (u32, u32) = (6, 1);

/// A verifier's refusal, read off its log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The line that says why (the one before the verifier's statistics).
    pub reason: String,
    /// Up to [`CONTEXT_LINES`] lines before it: the instructions (and source lines)
    /// it was checking.
    pub context: Vec<String>,
}

pub const CONTEXT_LINES: usize = 4;

/// The verifier's statistics, which close every log after the reason.
fn is_statistics(line: &str) -> bool {
    ["verification time", "stack depth", "processed "]
        .iter()
        .any(|p| line.starts_with(p))
}

/// The reason and its context, or None for a log without one (empty: the kernel
/// gave no log, or the refusal came before the verifier).
pub fn read(log: &str) -> Option<Refusal> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !is_statistics(l))
        .collect();
    let (reason, before) = lines.split_last()?;
    let context = before[before.len().saturating_sub(CONTEXT_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    Some(Refusal {
        reason: reason.to_string(),
        context,
    })
}

/// What to tell about the kernel `release` (as `uname -r` prints it): below the
/// oldest tested one, that it is too old; otherwise that it is untested if it is.
pub fn kernel_hint(release: &str) -> String {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) < TESTED_FROM => format!(
            "Linux {release} is older than {}.{}, the oldest kernel xdp-lb is tested on; \
             upgrade the kernel",
            TESTED_FROM.0, TESTED_FROM.1
        ),
        _ => format!(
            "xdp-lb is tested on Linux {}.{} and later, and this is Linux {release}: \
             please report this message",
            TESTED_FROM.0, TESTED_FROM.1
        ),
    }
}

/// This host's kernel release, or "unknown".
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first and last lines of the log Debian 12's Linux 6.1 gave when it refused
    /// an earlier build (a byte swap's result added to a packet pointer).
    const LINUX_6_1: &str = include_str!("../../tests/data/verifier-6.1-refusal.log");

    #[test]
    fn the_reason_is_the_line_before_the_statistics_with_the_instructions_before_it() {
        let refusal = read(LINUX_6_1).expect("a refusal");
        assert_eq!(
            refusal.reason,
            "math between pkt pointer and register with unbounded min value is not allowed"
        );
        assert_eq!(refusal.context.len(), CONTEXT_LINES);
        assert_eq!(
            refusal.context.last().map(String::as_str),
            Some("235: (0f) r5 += r3")
        );
        assert_eq!(
            refusal.context[2],
            "; if ctx.data() + l3 + tot_len > ctx.data_end() {"
        );
    }

    #[test]
    fn a_short_log_gives_what_it_has_and_an_empty_one_nothing() {
        let refusal = read("0: (b7) r0 = 2\ninvalid insn\nprocessed 1 insns\n").unwrap();
        assert_eq!(refusal.reason, "invalid insn");
        assert_eq!(refusal.context, ["0: (b7) r0 = 2"]);
        assert_eq!(read(""), None);
        assert_eq!(read("verification time 5 usec\n"), None);
    }

    #[test]
    fn kernels_before_the_oldest_tested_are_told_to_upgrade() {
        assert!(kernel_hint("5.15.0-91-generic").contains("older than 6.1"));
        assert!(kernel_hint("5.10.0-28-amd64").contains("upgrade"));
        assert!(kernel_hint("6.1.0-57-cloud-amd64").contains("please report"));
        assert!(kernel_hint("6.18.44-fc").contains("please report"));
        assert!(kernel_hint("weird").contains("please report"));
    }
}
