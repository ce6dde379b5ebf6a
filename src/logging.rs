//! Log set-up: one line per record on stderr, level visible, no secrets.
//!
//! Only tether's own records are written. tungstenite logs request lines at
//! trace level, and a request line to `/ws` can carry a resume token; the
//! filter keeps every such record out. Under systemd (`JOURNAL_STREAM` set)
//! lines carry no timestamp, since journald adds its own.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

/// Installs the logger. Calling it twice keeps the first.
pub fn init(level: LevelFilter) {
    let mut config = ConfigBuilder::new();
    config
        .add_filter_allow_str("tether")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        config.set_time_level(LevelFilter::Off);
    } else {
        config.set_time_format_rfc3339();
    }
    let _ = WriteLogger::init(level, config.build(), std::io::stderr());
}
