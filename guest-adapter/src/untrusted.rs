//! Text that a client or a guest wrote, made safe to log and to answer with: control
//! characters escaped (a newline cannot forge a log line, an ANSI sequence cannot repaint
//! a terminal), and length capped (a 3 MB error cannot become a 3 MB log line).

use std::borrow::Cow;
use std::fmt;

/// Longest untrusted text written to a log line.
pub const MAX_LOGGED_BYTES: usize = 4 << 10;

/// Longest message a guest's verdict or error may put in an admission response: far
/// more than any message meant for a person (policies do use it to carry data, such as a
/// list they were answered), far less than the 3 MB a guest could otherwise echo back.
pub const MAX_ANSWERED_BYTES: usize = 256 << 10;

/// Guest log output one evaluation may write, once for its log host calls (waPC console
/// and SDK logging) and once for its stdout and stderr; past it, the rest is counted,
/// not logged.
pub const MAX_LOGGED_BYTES_PER_EVALUATION: usize = 64 << 10;

/// Displays `text` escaped and cut at [`MAX_LOGGED_BYTES`].
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// See [`untrusted`].
pub struct Untrusted<'a>(&'a str);

/// Characters that are not control characters but can still end a line for some log
/// readers (line and paragraph separators) or reorder what is shown (bidirectional
/// overrides and isolates, zero-width marks).
fn misleading(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}'
    )
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let kept = &text[..text.floor_char_boundary(MAX_LOGGED_BYTES)];
        for c in kept.chars() {
            if c.is_control() || misleading(c) {
                // `\n`, `\u{1b}`...: readable, and never a control character.
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        if kept.len() < text.len() {
            write!(f, "... ({} more bytes)", text.len() - kept.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `text` cut at `max_bytes` (on a character boundary), saying how much was left out.
pub fn capped(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let kept = &text[..text.floor_char_boundary(max_bytes)];
    Cow::Owned(format!(
        "{kept}... ({} more bytes)",
        text.len() - kept.len()
    ))
}

/// How much guest log output one evaluation has left.
#[derive(Debug)]
pub struct LogBudget {
    left: usize,
    dropped: usize,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            left: MAX_LOGGED_BYTES_PER_EVALUATION,
            dropped: 0,
        }
    }
}

impl LogBudget {
    /// Whether a line of `bytes` may be logged; it is counted either way.
    pub fn take(&mut self, bytes: usize) -> bool {
        if bytes <= self.left {
            self.left -= bytes;
            true
        } else {
            self.left = 0;
            self.dropped += bytes;
            false
        }
    }

    /// Bytes of output that were not logged.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_no_line_can_be_forged() {
        let uid = "abc\n2026-12-01T00:00:00Z  INFO forged\u{1b}[31m\r\u{85}\u{2028}\u{202e}";
        let shown = untrusted(uid).to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || misleading(c)),
            "{shown}"
        );
        assert!(shown.contains("abc\\n2026"), "{shown}");
        assert!(shown.contains("\\u{1b}[31m"), "{shown}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_LOGGED_BYTES);
        let shown = untrusted(&text).to_string();
        assert!(shown.len() < MAX_LOGGED_BYTES + 40, "{}", shown.len());
        assert!(shown.ends_with(&format!("({} more bytes)", text.len() - MAX_LOGGED_BYTES)));
        assert_eq!(capped("short", 10), "short");
        assert_eq!(capped("ééé", 3), "é... (4 more bytes)");
    }

    #[test]
    fn a_log_budget_counts_what_it_drops() {
        let mut budget = LogBudget::default();
        assert!(budget.take(MAX_LOGGED_BYTES_PER_EVALUATION - 1));
        assert!(!budget.take(2));
        assert!(!budget.take(1));
        assert_eq!(budget.dropped(), 3);
    }
}
