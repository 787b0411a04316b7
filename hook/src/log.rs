//! Owns logging: `tracing` events to the configured log file (hooks' stderr is often
//! swallowed), never to stdout. stderr carries only the one-line error.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

/// Installs the file logger. A log file that cannot be opened is not fatal: the runtime's own
/// error path still shows the one-line error.
pub fn init(cfg: &Config, program: &'static str) {
    if cfg.log_file.as_os_str().is_empty() {
        return;
    }
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(&cfg.log_file)
    };
    // The log's directory is made on the first run only (every hook and wrapper opens the log).
    let file = open().or_else(|e| match (e.kind(), cfg.log_file.parent()) {
        (std::io::ErrorKind::NotFound, Some(dir)) => {
            std::fs::create_dir_all(dir).and_then(|_| open())
        }
        _ => Err(e),
    });
    let Ok(file) = file else {
        return;
    };
    let _ = subscriber(&cfg.log_level, file).try_init();
    tracing::debug!(program, pid = std::process::id(), "start");
}

/// The file logger: our crate's events at `level` (validated by the config), nothing else's.
fn subscriber(level: &str, file: std::fs::File) -> impl tracing::Subscriber + Send + Sync {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .finish()
        .with(Targets::new().with_target("dataplane_hook", level))
}

/// An error and its causes on one line. A cause whose text the message already carries is
/// left out: our error types print their source inside their own message, before the
/// `(what to do)` part, and repeating it after that part would bury the advice mid-line.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg.replace('\n', " ")
}

/// The one-line error on stderr (and in the log).
pub fn fail(err: &anyhow::Error) -> ! {
    let msg = one_line(err);
    tracing::error!("{msg}");
    eprintln!("dataplane-hook: {msg}");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot do it: {source} (fix it)")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn the_log_holds_our_events_at_the_configured_level_and_no_one_elses() {
        for (level, debug_logged) in [("debug", true), ("info", false)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let file = std::fs::File::create(&path).unwrap();
            tracing::subscriber::with_default(subscriber(level, file), || {
                tracing::info!("an info line");
                tracing::debug!("a debug line");
                tracing::info!(target: "other_crate", "someone else's line");
            });
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("an info line"), "{level}: {text}");
            assert_eq!(text.contains("a debug line"), debug_logged, "{level}: {text}");
            assert!(!text.contains("someone else's line"), "{level}: {text}");
        }
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let e = anyhow::Error::new(Outer { source: std::io::Error::other("disk on fire") });
        assert_eq!(one_line(&e), "cannot do it: disk on fire (fix it)");
    }

    #[test]
    fn context_keeps_its_cause_on_the_same_line() {
        let e = anyhow::Error::new(std::io::Error::other("no such\nfile")).context("cannot find x");
        assert_eq!(one_line(&e), "cannot find x: no such file");
    }
}
