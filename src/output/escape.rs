//! Text that came from a supervised program (its output, heartbeat notes,
//! exit and freeze reasons, event messages), made safe for the operator's
//! terminal: no control character reaches it raw. JSON is never escaped.

use std::borrow::Cow;
use std::fmt::Write as _;

/// One field on one line (a table cell, a note, an event message). One
/// rendering everywhere: ESC is `\e`; tab, newline and carriage return are
/// `\t`, `\n` and `\r`; other C0 controls and DEL are in caret notation
/// (`^G`, `^?`); C1 controls and Unicode's bidirectional overrides are
/// `\u{9b}`. So a program cannot set the window title, write the clipboard
/// or clear the screen through marvel.
pub fn escape_line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// Lines of text: newlines and tabs stay, every other control is escaped.
/// A carriage return before a newline is dropped (CRLF line ends).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    let s = if s.contains("\r\n") {
        Cow::Owned(s.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(s)
    };
    match escape(&s, |c| c == '\n' || c == '\t') {
        Cow::Borrowed(_) => s,
        Cow::Owned(escaped) => Cow::Owned(escaped),
    }
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) || keep(c) {
            out.push(c);
            continue;
        }
        match c {
            '\x1b' => out.push_str("\\e"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x00'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\x7f' => out.push_str("^?"),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// Controls a terminal acts on, and the bidirectional overrides that make
/// text read differently from what it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_become_visible() {
        assert_eq!(
            escape_line("\x1b]52;c;aGk=\x07\x1b]0;owned\x07\x1b[2Jdone"),
            "\\e]52;c;aGk=^G\\e]0;owned^G\\e[2Jdone"
        );
        assert_eq!(escape_line("a\tb\nc\r\x08\x7f\0"), "a\\tb\\nc\\r^H^?^@");
        assert_eq!(
            escape_line("\u{9b}2J \u{202e}txt.exe"),
            "\\u{9b}2J \\u{202e}txt.exe"
        );
    }

    #[test]
    fn plain_text_is_untouched_and_not_copied() {
        let s = "exit 1 — ünïcode, \\e and ^G as typed";
        assert!(matches!(escape_line(s), Cow::Borrowed(x) if x == s));
        assert!(matches!(escape_text("a\n\tb\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn text_keeps_its_lines_and_tabs() {
        assert_eq!(
            escape_text("one\r\n\ttwo\x1b[31m\rthree\n"),
            "one\n\ttwo\\e[31m\\rthree\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn nothing_a_terminal_acts_on_survives(s in "\\PC*|[\\x00-\\x{a0}\\x{202a}-\\x{202e}]*") {
            proptest::prop_assert!(!escape_line(&s).chars().any(unsafe_char));
            proptest::prop_assert!(
                !escape_text(&s).chars().any(|c| unsafe_char(c) && c != '\n' && c != '\t')
            );
            if !s.chars().any(unsafe_char) {
                proptest::prop_assert_eq!(escape_line(&s), s.as_str());
            }
        }
    }
}
