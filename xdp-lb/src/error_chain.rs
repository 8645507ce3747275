//! One line for an error and its causes, like anyhow's `{e:#}` but without repeats:
//! many of our error types show their source in their own message (so a bare `{e}` in
//! a log line is complete), and the chain would print that source a second time.
use std::fmt;

/// `Chain(&e)` displays `e` and each cause not already shown, joined by ": "
/// (`Chain(&*e)` for an `anyhow::Error`).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        for cause in std::iter::successors(Some(self.0), |e| e.source()) {
            let text = cause.to_string();
            if shown.contains(&text) {
                continue;
            }
            if !shown.is_empty() {
                shown.push_str(": ");
            }
            shown.push_str(&text);
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("vrrp instance `VI_1`: {source}")]
    struct Shows {
        source: std::io::Error,
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let e = anyhow::Error::new(Shows {
            source: std::io::Error::other("unknown interface `eth7`"),
        })
        .context("lb.toml: this host cannot run it");
        assert_eq!(
            Chain(&*e).to_string(),
            "lb.toml: this host cannot run it: vrrp instance `VI_1`: unknown interface `eth7`"
        );
        let plain = anyhow::anyhow!("no such file").context("cannot read lb.toml");
        assert_eq!(
            Chain(&*plain).to_string(),
            "cannot read lb.toml: no such file"
        );
    }
}
