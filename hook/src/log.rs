//! Owns logging: `tracing` events to the configured log file (hooks' stderr is often
//! swallowed), never to stdout. stderr carries only the one-line error.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Installs the file logger. A log file that cannot be opened is not fatal: the runtime's own
/// error path still shows the one-line error.
pub fn init(cfg: &Config, program: &'static str) {
    if cfg.log_file.as_os_str().is_empty() {
        return;
    }
    if let Some(dir) = cfg.log_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let Ok(file) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(&cfg.log_file)
    else {
        return;
    };
    let filter = EnvFilter::new(format!("{}={}", "dataplane_hook", cfg.log_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .try_init();
    tracing::debug!(program, pid = std::process::id(), "start");
}

/// The one-line error on stderr (and in the log).
pub fn fail(err: &anyhow::Error) -> ! {
    let mut msg = format!("{err:#}");
    msg = msg.replace('\n', " ");
    tracing::error!("{msg}");
    eprintln!("dataplane-hook: {msg}");
    std::process::exit(1)
}
