//! What this release knows about the runtime versions nodes run (issue 14): for a runtime and
//! its version, which integration paths it offers and which guarantees (SPEC G1–G12) each path
//! gives there, and how that is proven. Pure; `doctor` prints one line per installed runtime.
//!
//! The facts behind the table:
//! - The wrapper path (containerd/CRI-O runtime handler `dataplane`, or `dataplane-runtime` in
//!   place of runc) edits the spec before the runtime runs, so it gives every guarantee.
//! - The hooks.d path (podman, CRI-O hooks.d) runs the hook alone: no spec edit, so a DPDK group
//!   member must already share the group's PID namespace (G2 partial: others are refused
//!   clearly), prefix mode gets no `DPDK_FILE_PREFIX` (G3 partial), and on a cgroup-hybrid host
//!   runc refuses a spec with `hugepageLimits` (only the wrapper takes them out).
//! - runc >= 1.1.10 writes `hugetlb.<size>.rsvd.max` from the spec's `hugepageLimits` itself;
//!   older runc does not, and the hook writes it (G7 either way; both write the reservation).
//! - containerd 1.x replaces a whole plugin section on import (configure's drop-in carries a copy
//!   of the CRI section); 2.x merges them and reads config version 3
//!   (`io.containerd.cri.v1.runtime`), which configure writes but no suite runs end to end.

/// A runtime doctor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Crio,
    Podman,
    Runc,
    Crun,
}

impl Runtime {
    pub fn from_name(name: &str) -> Option<Runtime> {
        Some(match name {
            "containerd" => Runtime::Containerd,
            "crio" => Runtime::Crio,
            "podman" => Runtime::Podman,
            "runc" => Runtime::Runc,
            "crun" => Runtime::Crun,
            _ => return None,
        })
    }
}

/// How a path's guarantees on a version are known to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Integration suites run by `make test` (named).
    Tested(&'static str),
    /// Only in the VM suite (`make test-vm`).
    TestedInVm(&'static str),
    /// The files configure writes are checked against the runtime's format only.
    FormatOnly,
    /// Nothing runs it.
    NotTested,
}

impl Proof {
    fn text(self) -> String {
        match self {
            Proof::Tested(s) => format!("tested by make test: {s}"),
            Proof::TestedInVm(s) => format!("tested in the VM only: {s}"),
            Proof::FormatOnly => "configure's files format-checked only, not run".into(),
            Proof::NotTested => "not tested".into(),
        }
    }
}

/// The guarantees of SPEC.md.
pub const ALL: &str = "G1-G12";
/// What the hooks.d path gives (README "hooks.d path").
pub const HOOKS_D: &str = "G1, G4-G12; G2 only for members already sharing the group's PID namespace (others are refused); G3 without DPDK_FILE_PREFIX; on cgroup-hybrid hosts runc refuses hugepageLimits";

/// One integration path on one runtime version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub name: &'static str,
    pub guarantees: &'static str,
    pub proof: Proof,
}

/// What a runtime version is to this release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// The version family (`containerd 1.7`), or None when this release does not know it.
    pub family: Option<String>,
    pub paths: Vec<Path>,
    /// Version-specific facts (who writes rsvd limits, config format, known refusals).
    pub notes: Vec<&'static str>,
}

impl Support {
    /// One line: `containerd 1.7: runtime handler dataplane: G1-G12 (tested by make test: ...)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .paths
            .iter()
            .map(|p| format!("{}: {} ({})", p.name, p.guarantees, p.proof.text()))
            .collect();
        parts.extend(self.notes.iter().map(|n| n.to_string()));
        match &self.family {
            Some(f) => format!("{f}: {}", parts.join("; ")),
            None => format!("a version this release does not know: {}", parts.join("; ")),
        }
    }
}

fn path(name: &'static str, guarantees: &'static str, proof: Proof) -> Path {
    Path { name, guarantees, proof }
}

const HANDLER: &str = "runtime handler dataplane";
const WRAPPER: &str = "dataplane-runtime in place of the runtime";

/// What `runtime` at `version` (major, minor, patch) gives on each integration path.
pub fn support(runtime: Runtime, version: (u32, u32, u32)) -> Support {
    use Proof::*;
    let (major, minor, _) = version;
    let known = |family: String, paths: Vec<Path>, notes: Vec<&'static str>| Support {
        family: Some(family),
        paths,
        notes,
    };
    let family = format!("{major}.{minor}");
    match runtime {
        Runtime::Containerd => match (major, minor) {
            (1, 6) => known(
                format!("containerd {family}"),
                vec![path(HANDLER, ALL, Tested("cri.rs, shim_config.rs"))],
                vec!["config version 2; imports replace whole plugin sections (configure's drop-in carries the CRI section)"],
            ),
            (1, 7) => known(
                format!("containerd {family}"),
                vec![path(HANDLER, ALL, Tested("cri.rs (containerd 1.7.24)"))],
                vec!["config version 2; imports replace whole plugin sections (configure's drop-in carries the CRI section)"],
            ),
            (2, _) => known(
                "containerd 2.x".into(),
                vec![path(HANDLER, ALL, FormatOnly)],
                vec!["config version 3 (plugin io.containerd.cri.v1.runtime); imports merge plugin sections"],
            ),
            _ => unknown(vec![path(HANDLER, ALL, NotTested)]),
        },
        Runtime::Crio => match major {
            1 => known(
                format!("CRI-O {family}"),
                vec![path(HANDLER, ALL, FormatOnly), path("hooks.d", HOOKS_D, FormatOnly)],
                vec!["CRI-O passes every pod annotation to the spec"],
            ),
            _ => unknown(vec![path(HANDLER, ALL, NotTested), path("hooks.d", HOOKS_D, NotTested)]),
        },
        Runtime::Podman => match major {
            4 => known(
                format!("podman {family}"),
                vec![path("hooks.d", HOOKS_D, Tested("podman.rs"))],
                vec![],
            ),
            5 => known("podman 5".into(), vec![path("hooks.d", HOOKS_D, NotTested)], vec![]),
            _ => unknown(vec![path("hooks.d", HOOKS_D, NotTested)]),
        },
        Runtime::Runc => {
            let rsvd = if version >= crate::doctor::MIN_RUNC_RSVD {
                "writes hugetlb.<size>.rsvd.max from the spec itself (the hook writes the same reservation)"
            } else {
                "does not write hugetlb.<size>.rsvd.max (the hook writes it)"
            };
            match (major, minor) {
                (1, 1) if version < crate::doctor::MIN_RUNC_RSVD => known(
                    format!("runc {major}.{minor}.x < 1.1.10"),
                    vec![
                        path(WRAPPER, ALL, Tested("core.rs, groups.rs, gc.rs, safety.rs and more")),
                        path("hook in the spec (hooks.d)", HOOKS_D, Tested("groups.rs, gpu.rs, rdma.rs hooks_d_*")),
                    ],
                    vec![rsvd],
                ),
                (1, 1..) => known(
                    format!("runc {}", if minor == 1 { ">= 1.1.10".into() } else { family }),
                    vec![
                        path(WRAPPER, ALL, NotTested),
                        path("hook in the spec (hooks.d)", HOOKS_D, NotTested),
                    ],
                    vec![rsvd],
                ),
                _ => unknown(vec![path(WRAPPER, ALL, NotTested)]),
            }
        }
        Runtime::Crun => {
            let hybrid = "refuses cgroup-hybrid hosts";
            match (major, minor) {
                (1, 8) => known(
                    format!("crun {family}"),
                    vec![path(WRAPPER, ALL, TestedInVm("core.rs, groups.rs, gc.rs, safety.rs, podman.rs, cri.rs"))],
                    vec![hybrid],
                ),
                (1, 20..=29) => known(
                    "crun 1.2x".into(),
                    vec![path(WRAPPER, ALL, NotTested)],
                    vec![],
                ),
                _ => unknown(vec![path(WRAPPER, ALL, NotTested)]),
            }
        }
    }
}

fn unknown(paths: Vec<Path>) -> Support {
    Support { family: None, paths, notes: vec![] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_1_6_and_1_7_are_tested_here_and_2_x_by_format() {
        for v in [(1, 6, 20), (1, 7, 24)] {
            let s = support(Runtime::Containerd, v);
            assert_eq!(s.family.as_deref(), Some(format!("containerd 1.{}", v.1).as_str()));
            assert_eq!(s.paths.len(), 1);
            assert_eq!(s.paths[0].guarantees, ALL);
            assert!(matches!(s.paths[0].proof, Proof::Tested(t) if t.contains("cri.rs")), "{s:?}");
        }
        let s = support(Runtime::Containerd, (2, 0, 2));
        assert_eq!(s.family.as_deref(), Some("containerd 2.x"));
        assert_eq!(s.paths[0].proof, Proof::FormatOnly);
        assert!(s.describe().contains("config version 3"), "{}", s.describe());
        assert_eq!(support(Runtime::Containerd, (1, 5, 0)).family, None);
        assert!(support(Runtime::Containerd, (1, 5, 0))
            .describe()
            .starts_with("a version this release does not know"));
    }

    #[test]
    fn runc_from_1_1_10_writes_rsvd_itself_and_older_runc_leaves_it_to_the_hook() {
        let old = support(Runtime::Runc, (1, 1, 5));
        assert_eq!(old.family.as_deref(), Some("runc 1.1.x < 1.1.10"));
        assert!(
            old.notes[0].contains("does not write") && old.notes[0].contains("the hook writes it")
        );
        assert!(matches!(old.paths[0].proof, Proof::Tested(_)));
        assert_eq!(old.paths[1].guarantees, HOOKS_D);
        for v in [(1, 1, 10), (1, 1, 15), (1, 2, 0)] {
            let new = support(Runtime::Runc, v);
            assert!(new.notes[0].starts_with("writes hugetlb.<size>.rsvd.max"), "{v:?}: {new:?}");
            assert_eq!(new.paths[0].proof, Proof::NotTested, "{v:?}");
        }
        assert_eq!(support(Runtime::Runc, (1, 1, 15)).family.as_deref(), Some("runc >= 1.1.10"));
        assert_eq!(support(Runtime::Runc, (1, 2, 3)).family.as_deref(), Some("runc 1.2"));
        assert_eq!(support(Runtime::Runc, (1, 0, 3)).family, None);
    }

    #[test]
    fn crun_1_2x_and_podman_5_are_known_but_untested_and_hooks_d_is_partial() {
        let crun = support(Runtime::Crun, (1, 21, 0));
        assert_eq!(crun.family.as_deref(), Some("crun 1.2x"));
        assert_eq!(crun.paths[0].proof, Proof::NotTested);
        assert!(support(Runtime::Crun, (1, 8, 1)).notes.contains(&"refuses cgroup-hybrid hosts"));
        assert_eq!(support(Runtime::Crun, (1, 30, 0)).family, None);
        let p5 = support(Runtime::Podman, (5, 4, 2));
        assert_eq!(p5.family.as_deref(), Some("podman 5"));
        assert_eq!(p5.paths[0].name, "hooks.d");
        assert!(p5.paths[0].guarantees.contains("G2 only for members already sharing"));
        assert_eq!(support(Runtime::Podman, (4, 3, 1)).paths[0].proof, Proof::Tested("podman.rs"));
        let crio = support(Runtime::Crio, (1, 30, 0));
        assert_eq!(crio.paths.iter().map(|p| p.name).collect::<Vec<_>>(), [HANDLER, "hooks.d"]);
    }

    #[test]
    fn a_line_names_family_paths_guarantees_and_proof() {
        assert_eq!(
            support(Runtime::Containerd, (1, 7, 24)).describe(),
            "containerd 1.7: runtime handler dataplane: G1-G12 (tested by make test: cri.rs (containerd 1.7.24)); config version 2; imports replace whole plugin sections (configure's drop-in carries the CRI section)"
        );
        assert_eq!(Runtime::from_name("crio"), Some(Runtime::Crio));
        assert_eq!(Runtime::from_name("docker"), None);
    }
}
