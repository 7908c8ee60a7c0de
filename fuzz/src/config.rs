//! `keyhold.toml`: TOML parsing into the file's schema and the validation that builds
//! [`Settings`].

use std::path::Path;
use std::time::Duration;

use keyhold::config::Settings;

/// Data directory the paths in the file resolve against. Nothing is read from it.
const DATA_DIR: &str = "/keyhold-fuzz/data";

/// Parses a file as `keyhold serve` would; `None` when it is not UTF-8.
pub fn parse(data: &[u8]) -> Option<Result<Settings, keyhold::config::ConfigError>> {
    let text = std::str::from_utf8(data).ok()?;
    Some(Settings::parse(Path::new(DATA_DIR), text))
}

/// Runs the target on one file.
pub fn run(data: &[u8]) {
    match parse(data) {
        Some(Ok(settings)) => check_settings(&settings),
        Some(Err(error)) => {
            let _ = error.to_string();
        }
        None => {}
    }
}

/// Checks the limits that validation promises for every accepted file.
fn check_settings(settings: &Settings) {
    assert!(settings.time_budget >= Duration::from_millis(1));
    assert!(settings.time_budget <= Duration::from_millis(250));
    assert!(settings.body_read_timeout >= Duration::from_secs(1));
    assert!(settings.scheduler_interval >= Duration::from_secs(1));
    assert!(settings.max_in_flight >= 1);
    assert!(settings.max_connections >= 1);
    assert!(settings.audit.max_file_mib >= 1);
    assert_ne!(settings.default_quota_rps, Some(0));
    if let Some((_, subjects)) = &settings.client_auth {
        assert!(
            !subjects.is_empty(),
            "mutual TLS without an allowed subject"
        );
    }
}
