//! Renderers: the live log (text or JSON lines) and reports, and the
//! [`sink::Sink`] every event of an audit goes out through; the live log's
//! writer thread; findings grouped for the live log and summary; what a
//! closed standard output means.

pub mod live;
pub mod pipe;
pub mod report;
pub mod sink;
pub mod stream;
pub mod tally;

/// When to colour text output (`--color`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set to anything but "".
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour output going to a terminal (`on_terminal`) or not.
    pub fn enabled(self, on_terminal: bool) -> bool {
        self.enabled_with(on_terminal, std::env::var_os("NO_COLOR"))
    }

    fn enabled_with(self, on_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            // https://no-color.org: present and not empty.
            Self::Auto => on_terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ColorChoice;

    #[test]
    fn no_color_turns_off_automatic_colour_only() {
        let set = || Some("1".into());
        assert!(ColorChoice::Auto.enabled_with(true, None));
        assert!(ColorChoice::Auto.enabled_with(true, Some("".into())));
        assert!(!ColorChoice::Auto.enabled_with(true, set()));
        assert!(!ColorChoice::Auto.enabled_with(false, None));
        assert!(ColorChoice::Always.enabled_with(false, set()));
        assert!(!ColorChoice::Never.enabled_with(true, None));
    }
}
