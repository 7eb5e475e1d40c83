//! Colours on a terminal. Chosen once per command from `--color`, `NO_COLOR` (any non-empty
//! value turns them off, <https://no-color.org>) and whether standard output is a terminal;
//! text written to a pipe or a file never carries escape codes. Only the words that carry a
//! verdict are coloured: phases, error counts, refusals.

use std::sync::atomic::{AtomicBool, Ordering};

use anstyle::{AnsiColor, Style};

use super::ColorChoice;

static ON: AtomicBool = AtomicBool::new(false);

/// Decides for this process.
pub fn init(choice: ColorChoice) {
    let on = match choice {
        ColorChoice::Never => false,
        ColorChoice::Always => true,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
        }
    };
    ON.store(on, Ordering::Relaxed);
}

fn paint(text: &str, style: Style) -> String {
    if ON.load(Ordering::Relaxed) {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

fn color(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

/// Green for what is as it should be.
pub fn good(text: &str) -> String {
    paint(text, color(AnsiColor::Green))
}

/// Yellow for what waits or is on its way.
pub fn waiting(text: &str) -> String {
    paint(text, color(AnsiColor::Yellow))
}

/// Bold red for what needs a person.
pub fn bad(text: &str) -> String {
    paint(text, color(AnsiColor::Red).bold())
}

/// A map phase (padding included), coloured by what it means.
pub fn phase(text: &str) -> String {
    use crate::state::Phase;
    match Phase::parse(text.trim()) {
        Some(Phase::Running) => good(text),
        Some(Phase::Paused | Phase::InitialSync | Phase::NotRunning) => waiting(text),
        Some(Phase::Stopped) => text.to_string(),
        None => bad(text),
    }
}

/// A count of errors (padding included): red when there are any.
pub fn errors(n: u64, padded: &str) -> String {
    if n == 0 {
        padded.to_string()
    } else {
        bad(padded)
    }
}
