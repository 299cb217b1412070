//! The daemon's own messages (not audit events): one line each on stderr,
//! which systemd and container runtimes collect, prefixed with who speaks
//! and, unless the message is plain information, its level.

use std::fmt;

/// How much a message matters to whoever reads the daemon's stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// What the daemon did: started, attached, released, stopped.
    Info,
    /// Something refused or degraded that the daemon survives.
    Warn,
    /// Something the daemon could not do that loses data or a feature.
    Error,
}

/// One message line, as written.
pub fn line(level: Level, msg: fmt::Arguments<'_>) -> String {
    match level {
        Level::Info => format!("map-auditor daemon: {msg}"),
        Level::Warn => format!("map-auditor daemon: warning: {msg}"),
        Level::Error => format!("map-auditor daemon: error: {msg}"),
    }
}

/// Write one message line to stderr.
pub fn write(level: Level, msg: fmt::Arguments<'_>) {
    eprintln!("{}", line(level, msg));
}

/// `say!(Warn, "cannot {}", what)`: a daemon message at a level.
macro_rules! say {
    ($level:ident, $($arg:tt)*) => {
        $crate::daemon::say::write($crate::daemon::say::Level::$level, format_args!($($arg)*))
    };
}
pub(crate) use say;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_is_named_except_information() {
        assert_eq!(
            line(Level::Info, format_args!("stopped")),
            "map-auditor daemon: stopped"
        );
        assert_eq!(
            line(Level::Warn, format_args!("refused {}", 7)),
            "map-auditor daemon: warning: refused 7"
        );
        assert_eq!(
            line(Level::Error, format_args!("cannot write")),
            "map-auditor daemon: error: cannot write"
        );
    }
}
