//! Owns OCI I/O: the container state a hook reads on stdin, and the bundle's `config.json`
//! (read typed through `oci-spec`, edited as raw JSON so every field we do not touch survives).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One mount of a spec: (destination, type, source, options).
pub type SpecMount = (PathBuf, Option<String>, Option<PathBuf>, Vec<String>);

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot read the container state on stdin: {0} (run this as an OCI hook: the runtime passes the state JSON on stdin)")]
    StateRead(std::io::Error),
    #[error("invalid container state JSON on stdin: {0} (run this as an OCI hook: the runtime passes the state JSON on stdin)")]
    StateParse(String),
    #[error("cannot read {path}: {source} (check the bundle path)")]
    SpecRead { path: PathBuf, source: std::io::Error },
    #[error("invalid OCI spec {path}: {message} (fix the bundle's config.json)")]
    SpecParse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source} (check space and permissions in the bundle)")]
    SpecWrite { path: PathBuf, source: std::io::Error },
}

/// The OCI runtime state, as handed to hooks on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    pub id: String,
    #[serde(default)]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl State {
    pub fn from_reader(mut r: impl Read) -> Result<State, OciError> {
        // Room for a typical state up front: read in one go, not probed 32 bytes at a time.
        let mut buf = String::with_capacity(4096);
        r.read_to_string(&mut buf).map_err(OciError::StateRead)?;
        let s: State =
            serde_json::from_str(&buf).map_err(|e| OciError::StateParse(e.to_string()))?;
        if s.id.is_empty()
            || s.id.contains('/')
            || s.id.contains('\0')
            || s.id == "."
            || s.id == ".."
        {
            return Err(OciError::StateParse(format!("unusable container id {:?}", s.id)));
        }
        if !s.bundle.is_absolute() {
            return Err(OciError::StateParse(format!(
                "bundle {:?} is not an absolute path",
                s.bundle
            )));
        }
        Ok(s)
    }
}

/// A bundle's config.json: the raw document (for editing) and the typed view (for reading).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub raw: Value,
    pub spec: oci_spec::runtime::Spec,
}

pub const SANDBOX_ANNOTATIONS: &[(&str, &str)] = &[
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
];

impl Bundle {
    pub fn config_path(dir: &Path) -> PathBuf {
        dir.join("config.json")
    }

    pub fn load(dir: &Path) -> Result<Bundle, OciError> {
        let path = Self::config_path(dir);
        let text = std::fs::read(&path)
            .map_err(|source| OciError::SpecRead { path: path.clone(), source })?;
        Self::parse(dir, &text)
    }

    /// A bundle from the bytes of its config.json (what [`Bundle::load`] read from `dir`).
    pub fn parse(dir: &Path, text: &[u8]) -> Result<Bundle, OciError> {
        let raw: Value = serde_json::from_slice(text).map_err(|e| OciError::SpecParse {
            path: Self::config_path(dir),
            message: e.to_string(),
        })?;
        Self::from_value(dir, raw)
    }

    pub fn from_value(dir: &Path, raw: Value) -> Result<Bundle, OciError> {
        let path = Self::config_path(dir);
        if !raw.is_object() {
            return Err(OciError::SpecParse {
                path,
                message: "top level is not a JSON object".into(),
            });
        }
        // Read through a borrow: no deep copy of the document.
        let spec = <oci_spec::runtime::Spec as Deserialize>::deserialize(&raw)
            .map_err(|e| OciError::SpecParse { path: path.clone(), message: e.to_string() })?;
        Ok(Bundle { dir: dir.to_path_buf(), raw, spec })
    }

    /// Writes the raw document back atomically: a new temp file in the bundle, renamed over
    /// config.json. The temp name is unique (concurrent saves on one bundle never share a
    /// file) and opened `O_CREAT|O_EXCL|O_NOFOLLOW`: whatever already sits at a name (a
    /// symlink to a host file, another writer's file) is never opened, truncated or written
    /// through. A failed save removes its temp file and leaves config.json as it was.
    pub fn save(&self) -> Result<(), OciError> {
        use crate::host::atomic_file::{write, Mode, Options};
        let path = Self::config_path(&self.dir);
        let bytes = serde_json::to_vec(&self.raw).expect("a JSON value serializes");
        // Keep the original file mode (runtimes do not care, but people do). No fsync: the
        // runtime reads the file right after this process execs it, and after a power loss the
        // bundle is rebuilt by whoever made it.
        write(&path, &bytes, Options::new(Mode::KeepOr(0o644)))
            .map_err(|source| OciError::SpecWrite { path: path.clone(), source })
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.spec
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn is_sandbox(&self) -> bool {
        let a = self.annotations();
        SANDBOX_ANNOTATIONS.iter().any(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
    }

    /// `linux.resources.hugepageLimits` as (pageSize, limit).
    pub fn hugepage_limits(&self) -> Vec<(String, u64)> {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.hugepage_limits().as_ref())
            .map(|v| v.iter().map(|h| (h.page_size().clone(), h.limit().max(0) as u64)).collect())
            .unwrap_or_default()
    }

    /// The root filesystem path on the host (spec `root.path`, relative to the bundle).
    pub fn rootfs(&self) -> PathBuf {
        let p = self
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    /// The spec's mounts: (destination, type, source, options).
    pub fn mounts(&self) -> Vec<SpecMount> {
        self.spec
            .mounts()
            .as_ref()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m.destination().clone(),
                            m.typ().clone(),
                            m.source().clone(),
                            m.options().clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Mutable access to a JSON object at `path` (created as needed).
    pub fn raw_object_mut(&mut self, path: &[&str]) -> &mut serde_json::Map<String, Value> {
        let mut cur = &mut self.raw;
        for key in path {
            let obj = cur.as_object_mut().expect("checked object");
            let entry =
                obj.entry(key.to_string()).or_insert_with(|| Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = Value::Object(Default::default());
            }
            cur = entry;
        }
        cur.as_object_mut().expect("object")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses_and_rejects_garbage() {
        let s = State::from_reader(&br#"{"ociVersion":"1.0.2","id":"abc","status":"created","pid":42,"bundle":"/b","annotations":{"a":"b"}}"#[..]).unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("abc", Some(42)));
        for bad in [
            &b"garbage"[..],
            b"{}",
            br#"{"id":"../x","bundle":"/b"}"#,
            br#"{"id":"x","bundle":"rel"}"#,
        ] {
            let e = State::from_reader(bad).unwrap_err().to_string();
            assert!(e.contains("state") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn spec_round_trip_keeps_unknown_fields_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let doc = r#"{"ociVersion":"1.0.2","zzz":{"keep":[1,2,{"x":null}]},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"futureField":true},"root":{"path":"rootfs"},"linux":{"unknownLinux":"yes","resources":{"hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}},"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#;
        std::fs::write(dir.path().join("config.json"), doc).unwrap();
        let b = Bundle::load(dir.path()).unwrap();
        assert!(b.is_sandbox());
        assert_eq!(b.hugepage_limits(), vec![("2MB".to_string(), 4194304)]);
        assert_eq!(b.rootfs(), dir.path().join("rootfs"));
        b.save().unwrap();
        let back = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        let a: Value = serde_json::from_str(doc).unwrap();
        let c: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(a, c);
        assert_eq!(back, serde_json::to_string(&a).unwrap(), "field order preserved");
    }

    #[test]
    fn numbers_survive_a_save_exactly() {
        // Fuzz find (oci_bundle): serde_json's fast float parsing read `10e24` one ulp off, so
        // the document the wrapper saved differed from the one it read in a field it never
        // touched. Parsing is exact now (serde_json's float_roundtrip).
        let dir = tempfile::tempdir().unwrap();
        let doc = r#"{"ociVersion":"1.0.2","x":[10e24,0.1,2.2250738585072014e-308,1.7976931348623157e308,5e-324,123456789012345678901234567890,0.30000000000000004,9007199254740993.0,18446744073709551615,-9223372036854775808]}"#;
        std::fs::write(dir.path().join("config.json"), doc).unwrap();
        let b = Bundle::load(dir.path()).unwrap();
        b.save().unwrap();
        let again = Bundle::load(dir.path()).unwrap();
        assert_eq!(again.raw, b.raw);
        assert_eq!(b.raw["x"][0].as_f64(), Some(1e25));
        assert_eq!(
            b.raw,
            serde_json::from_str::<Value>(&serde_json::to_string(&b.raw).unwrap()).unwrap()
        );
    }

    #[test]
    fn broken_config_json_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let e = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && !e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("config.json"), "[]").unwrap();
        assert!(Bundle::load(dir.path()).is_err());
        let e = Bundle::load(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn save_does_not_write_through_a_symlink_at_the_old_temp_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        std::fs::write(&victim, "host data\n").unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        std::fs::set_permissions(
            dir.path().join("config.json"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let planted = dir.path().join(".config.json.dataplane-hook.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let mut b = Bundle::load(dir.path()).unwrap();
        b.raw["annotations"] = serde_json::json!({"a": "b"});
        b.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "host data\n",
            "the host file was written through the link"
        );
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim, "the planted link is left alone");
        let meta = std::fs::symlink_metadata(dir.path().join("config.json")).unwrap();
        assert!(meta.file_type().is_file(), "config.json is a plain file");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "the original mode is kept");
        assert_eq!(Bundle::load(dir.path()).unwrap().raw["annotations"]["a"], "b");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".config.json.dataplane-hook.tmp", "config.json"], "no temp file left");
    }

    #[test]
    fn concurrent_saves_on_one_bundle_all_leave_a_whole_config_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        // Documents of very different sizes: a torn or truncated write shows as bad JSON.
        let docs: Vec<Value> = (0..8).map(|t| serde_json::json!({"ociVersion": "1.0.2", "annotations": {"writer": t.to_string(), "pad": "x".repeat(1 + t * 40_000)}})).collect();
        std::thread::scope(|s| {
            for d in &docs {
                let dir = dir.path();
                s.spawn(move || {
                    for _ in 0..30 {
                        let b = Bundle::from_value(dir, d.clone()).unwrap();
                        b.save().unwrap();
                        let text = std::fs::read(dir.join("config.json")).unwrap();
                        let v: Value = serde_json::from_slice(&text)
                            .expect("config.json is whole JSON at every moment");
                        assert!(v["annotations"]["writer"].is_string());
                    }
                });
            }
        });
        let last: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert!(docs.contains(&last), "config.json is one writer's whole document");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["config.json"], "no temp file left");
    }

    #[test]
    fn a_failed_save_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        let b = Bundle::load(dir.path()).unwrap();
        // config.json replaced by a directory: the rename fails after the temp file was written.
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        std::fs::create_dir(dir.path().join("config.json")).unwrap();
        std::fs::write(dir.path().join("config.json/keep"), "x").unwrap();
        let e = b.save().unwrap_err().to_string();
        assert!(e.starts_with("cannot write") && e.contains("config.json"), "{e}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["config.json"], "the temp file was removed");
    }
}
