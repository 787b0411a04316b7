//! Owns OCI I/O: the container state a hook reads on stdin, and the bundle's `config.json`
//! (read typed through `oci-spec`, edited as raw JSON so every field we do not touch survives).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

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
        let s: State = serde_json::from_str(&buf).map_err(|e| OciError::StateParse(e.to_string()))?;
        if s.id.is_empty() || s.id.contains('/') || s.id.contains('\0') || s.id == "." || s.id == ".." {
            return Err(OciError::StateParse(format!("unusable container id {:?}", s.id)));
        }
        if !s.bundle.is_absolute() {
            return Err(OciError::StateParse(format!("bundle {:?} is not an absolute path", s.bundle)));
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
        let text = std::fs::read(&path).map_err(|source| OciError::SpecRead { path: path.clone(), source })?;
        Self::parse(dir, &text)
    }

    /// A bundle from the bytes of its config.json (what [`Bundle::load`] read from `dir`).
    pub fn parse(dir: &Path, text: &[u8]) -> Result<Bundle, OciError> {
        let raw: Value = serde_json::from_slice(text)
            .map_err(|e| OciError::SpecParse { path: Self::config_path(dir), message: e.to_string() })?;
        Self::from_value(dir, raw)
    }

    pub fn from_value(dir: &Path, raw: Value) -> Result<Bundle, OciError> {
        let path = Self::config_path(dir);
        if !raw.is_object() {
            return Err(OciError::SpecParse { path, message: "top level is not a JSON object".into() });
        }
        // Read through a borrow: no deep copy of the document.
        let spec = <oci_spec::runtime::Spec as Deserialize>::deserialize(&raw)
            .map_err(|e| OciError::SpecParse { path: path.clone(), message: e.to_string() })?;
        Ok(Bundle { dir: dir.to_path_buf(), raw, spec })
    }

    /// Writes the raw document back atomically (temp file in the bundle, rename).
    pub fn save(&self) -> Result<(), OciError> {
        let path = Self::config_path(&self.dir);
        let err = |source| OciError::SpecWrite { path: path.clone(), source };
        let bytes = serde_json::to_vec(&self.raw).expect("a JSON value serializes");
        let tmp = self.dir.join(".config.json.dataplane-hook.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        // No fsync: the runtime reads the file right after this process execs it, and after a
        // power loss the bundle is rebuilt by whoever made it.
        // Keep the original file mode (runtimes do not care, but people do).
        if let Ok(meta) = std::fs::metadata(&path) {
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, &path).map_err(err)
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
    pub fn mounts(&self) -> Vec<(PathBuf, Option<String>, Option<PathBuf>, Vec<String>)> {
        self.spec
            .mounts()
            .as_ref()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (m.destination().clone(), m.typ().clone(), m.source().clone(), m.options().clone().unwrap_or_default())
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
            let entry = obj.entry(key.to_string()).or_insert_with(|| Value::Object(Default::default()));
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
        for bad in [&b"garbage"[..], b"{}", br#"{"id":"../x","bundle":"/b"}"#, br#"{"id":"x","bundle":"rel"}"#] {
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
        assert_eq!(b.raw, serde_json::from_str::<Value>(&serde_json::to_string(&b.raw).unwrap()).unwrap());
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
}
