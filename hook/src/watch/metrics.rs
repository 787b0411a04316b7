//! Owns the watchdog's metrics in the node-exporter textfile collector format, written
//! atomically (temp file in the same directory, rename) so the collector never reads half a file.

use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Uncharged memory above the baseline (last full estimate; may be negative).
    pub uncharged: i64,
    pub baseline: i64,
    pub granted: u64,
    pub gpu_containers: usize,
    pub kills: u64,
    pub dry_run_kills: u64,
    pub pressure_events: u64,
    /// Budget crossing (first sample over) to victim's cgroup empty, of the last kill.
    pub last_reaction_seconds: Option<f64>,
    pub last_kill_unix: Option<u64>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut g = |name: &str, kind: &str, help: &str, value: String| {
            s += &format!("# HELP dataplane_hook_watch_{name} {help}\n# TYPE dataplane_hook_watch_{name} {kind}\n");
            s += &format!("dataplane_hook_watch_{name} {value}\n");
        };
        g(
            "uncharged_bytes",
            "gauge",
            "Memory no cgroup is charged for, above the baseline taken without GPU containers.",
            self.uncharged.to_string(),
        );
        g(
            "baseline_bytes",
            "gauge",
            "Uncharged memory of the node without GPU containers.",
            self.baseline.to_string(),
        );
        g(
            "granted_headroom_bytes",
            "gauge",
            "Driver-memory headroom granted to running GPU containers.",
            self.granted.to_string(),
        );
        g("gpu_containers", "gauge", "Running GPU containers.", self.gpu_containers.to_string());
        g(
            "kills_total",
            "counter",
            "GPU containers killed for uncharged memory over budget.",
            self.kills.to_string(),
        );
        g(
            "dry_run_kills_total",
            "counter",
            "Kills a dry run would have made.",
            self.dry_run_kills.to_string(),
        );
        g(
            "pressure_events_total",
            "counter",
            "Memory PSI trigger events.",
            self.pressure_events.to_string(),
        );
        if let Some(r) = self.last_reaction_seconds {
            g(
                "last_reaction_seconds",
                "gauge",
                "Budget crossing to the victim's cgroup empty, last kill.",
                format!("{r:.6}"),
            );
        }
        if let Some(t) = self.last_kill_unix {
            g(
                "last_kill_timestamp_seconds",
                "gauge",
                "When the last kill happened.",
                t.to_string(),
            );
        }
        s
    }

    /// Writes the file atomically (the directory is created if missing).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use crate::host::atomic_file::{write, Mode, Options};
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
        // The collector reads *.prom only: the helper's dot-file temp is never picked up.
        write(path, self.render().as_bytes(), Options::new(Mode::Exactly(0o644)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_textfile_format_and_writes_atomically() {
        let m = Metrics {
            uncharged: 5,
            granted: 7,
            kills: 2,
            last_reaction_seconds: Some(0.25),
            ..Default::default()
        };
        let text = m.render();
        assert!(text.contains("# TYPE dataplane_hook_watch_kills_total counter\ndataplane_hook_watch_kills_total 2\n"), "{text}");
        assert!(text.contains("dataplane_hook_watch_last_reaction_seconds 0.250000\n"));
        assert!(!text.contains("last_kill_timestamp"), "absent until a kill");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let mut f = l.split(' ');
            assert!(
                f.next().unwrap().starts_with("dataplane_hook_watch_")
                    && f.next().unwrap().parse::<f64>().is_ok()
                    && f.next().is_none(),
                "{l}"
            );
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/w.prom");
        m.write(&p).unwrap();
        m.write(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(t.path().join("sub")).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_symlink_planted_in_the_textfile_dir_is_never_written_through() {
        // The textfile dir may belong to the collector's user: whoever owns it can plant a
        // link at the name a root writer's temp file had (`.<name>.<pid>.tmp` before the one
        // helper) and have root overwrite the file it points at.
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = t.path().join("textfile");
        std::fs::create_dir(&dir).unwrap();
        let planted = dir.join(format!(".w.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "root:secret\n", "the link points");
        let m = Metrics { kills: 1, ..Default::default() };
        m.write(&dir.join("w.prom")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n", "written through");
        assert_eq!(std::fs::symlink_metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(dir.join("w.prom")).unwrap(), m.render());
    }
}
