//! The daemon's TOML configuration file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::daemon::config::DaemonConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = DaemonConfig::from_toml(text, "fuzz.toml") {
        let _ = config.validate();
    }
});
