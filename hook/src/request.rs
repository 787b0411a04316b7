//! Owns the edge between untrusted input and the rest of the program: the `dataplane-hook.io/`
//! annotations (and the spec's `hugepageLimits`) become a typed, validated [`Request`].
//! Nothing after this module sees a raw annotation string.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

pub const PREFIX: &str = "dataplane-hook.io/";

/// Annotation keys (without the prefix) that this version understands.
pub const KEYS: &[&str] = &[
    "enabled",
    "hugepages-2Mi",
    "hugepages-1Gi",
    "dpdk-runtime-dir",
    "dpdk-group",
    "dpdk-file-prefix",
    "gpu-headroom",
    "rdma-gid-index",
    "spdk-iobuf",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// The key is the annotation's own text: escaped like the value, so the error stays one line.
#[error("invalid annotation {PREFIX}{}={value:?}: {why} ({fix})", .key.escape_debug())]
pub struct RequestError {
    pub key: String,
    pub value: String,
    pub why: String,
    pub fix: String,
}

fn bad(key: &str, value: &str, why: impl Into<String>, fix: impl Into<String>) -> RequestError {
    RequestError { key: key.into(), value: value.into(), why: why.into(), fix: fix.into() }
}

/// A hugepage size the product manages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PageSize {
    #[serde(rename = "2Mi")]
    Size2Mi,
    #[serde(rename = "1Gi")]
    Size1Gi,
}

impl PageSize {
    pub const ALL: [PageSize; 2] = [PageSize::Size2Mi, PageSize::Size1Gi];

    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size2Mi => 2 << 20,
            PageSize::Size1Gi => 1 << 30,
        }
    }
    /// Kubernetes / annotation spelling.
    pub fn name(self) -> &'static str {
        match self {
            PageSize::Size2Mi => "2Mi",
            PageSize::Size1Gi => "1Gi",
        }
    }
    /// The kernel's sysfs directory name (`hugepages-2048kB`).
    pub fn sysfs_dir(self) -> String {
        format!("hugepages-{}kB", self.bytes() / 1024)
    }
    /// The cgroup hugetlb file infix (`2MB`, `1GB`).
    pub fn cgroup_name(self) -> &'static str {
        match self {
            PageSize::Size2Mi => "2MB",
            PageSize::Size1Gi => "1GB",
        }
    }
    pub fn annotation(self) -> String {
        format!("hugepages-{}", self.name())
    }
    /// Parses the OCI `hugepageLimits[].pageSize` spelling (`2MB`, `1GB`, also `2Mi`/`2048kB`).
    pub fn from_oci(s: &str) -> Option<PageSize> {
        match s {
            "2MB" | "2Mi" | "2MiB" | "2048kB" | "2048KB" => Some(PageSize::Size2Mi),
            "1GB" | "1Gi" | "1GiB" | "1048576kB" | "1048576KB" => Some(PageSize::Size1Gi),
            _ => None,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A byte quantity written the Kubernetes way (`256Mi`, `1Gi`, `268435456`, `1.5Gi`, `1e9`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse_quantity(s: &str) -> Result<Bytes, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty quantity".into());
        }
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return Err(
                "not a quantity: expected digits with an optional suffix like Mi or Gi".into()
            );
        }
        // Exact decimal arithmetic: mantissa as integer plus count of fraction digits. Every
        // step is checked: the input is an annotation, and an unchecked 10^digits or a scale
        // that wrapped to 0 (`0.` and 128 zeros) panicked the hook instead of refusing it.
        let too_large = || "number too large".to_string();
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int_part}{frac_part}");
        let mantissa: u128 = digits.parse().map_err(|_| too_large())?;
        let mut scale_num: u128 = 1;
        let mut scale_den: u128 =
            u32::try_from(frac_part.len()).ok().and_then(|n| 10u128.checked_pow(n)).ok_or_else(
                || "number too large: too many digits after the decimal point".to_string(),
            )?;
        match suffix {
            "" => {}
            "Ki" => scale_num = 1 << 10,
            "Mi" => scale_num = 1 << 20,
            "Gi" => scale_num = 1 << 30,
            "Ti" => scale_num = 1 << 40,
            "Pi" => scale_num = 1 << 50,
            "Ei" => scale_num = 1 << 60,
            "k" => scale_num = 1_000,
            "M" => scale_num = 1_000_000,
            "G" => scale_num = 1_000_000_000,
            "T" => scale_num = 1_000_000_000_000,
            "P" => scale_num = 1_000_000_000_000_000,
            "E" => scale_num = 1_000_000_000_000_000_000,
            "m" => scale_den = scale_den.checked_mul(1000).ok_or_else(too_large)?,
            e if e.starts_with(['e', 'E']) => {
                let exp: u32 = e[1..].parse().map_err(|_| format!("bad exponent {e:?}"))?;
                if exp > 30 {
                    return Err(too_large());
                }
                scale_num = 10u128.checked_pow(exp).ok_or_else(too_large)?;
            }
            other => {
                return Err(format!(
                    "unknown suffix {other:?} (use Ki, Mi, Gi, Ti, k, M, G, T or plain bytes)"
                ))
            }
        }
        let total = mantissa.checked_mul(scale_num).ok_or_else(too_large)?;
        // scale_den is a power of ten (checked above), never 0.
        if total % scale_den != 0 {
            return Err("not a whole number of bytes".into());
        }
        let v = total / scale_den;
        u64::try_from(v).map(Bytes).map_err(|_| too_large())
    }

    pub fn pages(self, size: PageSize) -> u64 {
        self.0 / size.bytes()
    }
}

impl fmt::Display for Bytes {
    /// Shortest exact binary spelling: `256Mi`, `1Gi`, `3Ki`, or plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if v != 0 && v.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{}", v >> shift, unit);
            }
        }
        write!(f, "{v}")
    }
}

/// An absolute path inside the container, normal components only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerPath(PathBuf);

impl ContainerPath {
    pub fn parse(s: &str) -> Result<ContainerPath, String> {
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err("must be an absolute path".into());
        }
        if s.contains('\0') {
            return Err("must not contain NUL".into());
        }
        let mut clean = PathBuf::from("/");
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => clean.push(n),
                Component::CurDir => {}
                Component::ParentDir => return Err("must not contain ..".into()),
                Component::Prefix(_) => return Err("not a Linux path".into()),
            }
        }
        if clean == Path::new("/") {
            return Err("must not be /".into());
        }
        Ok(ContainerPath(clean))
    }
    pub fn as_path(&self) -> &Path {
        &self.0
    }
    /// The path relative to the container root (no leading `/`).
    pub fn relative(&self) -> &Path {
        self.0.strip_prefix("/").unwrap_or(&self.0)
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// A DPDK group name: a DNS label.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(s: &str) -> Result<GroupName, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(GroupName(s.to_string()))
        } else {
            Err("must be a DNS label: lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `dpdk-file-prefix`: `auto` or an explicit prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FilePrefix {
    Auto,
    Explicit(String),
}

impl FilePrefix {
    pub fn parse(s: &str) -> Result<FilePrefix, String> {
        if s == "auto" {
            return Ok(FilePrefix::Auto);
        }
        if !s.is_empty()
            && s.len() <= 24
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(FilePrefix::Explicit(s.to_string()))
        } else {
            Err("must be `auto` or 1-24 characters of [A-Za-z0-9_-]".into())
        }
    }
}

/// `rdma-gid-index`: `auto` or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GidIndex {
    Auto,
    Index(u32),
}

/// `spdk-iobuf`: the pool sizes to check before start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpdkIobuf {
    pub small_count: u64,
    pub large_count: u64,
    pub small_bufsize: Option<u64>,
    pub large_bufsize: Option<u64>,
}

impl SpdkIobuf {
    pub fn parse(s: &str) -> Result<SpdkIobuf, String> {
        let (mut small, mut large, mut sb, mut lb) = (None, None, None, None);
        for part in s.split(',') {
            let (k, v) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not key=value"))?;
            // The field first, and named by its own spelling from then on: `k` is the
            // annotation's text (a newline in it made the error several lines).
            let (name, slot) = match k.trim() {
                "small" => ("small", &mut small),
                "large" => ("large", &mut large),
                "small-bufsize" => ("small-bufsize", &mut sb),
                "large-bufsize" => ("large-bufsize", &mut lb),
                other => {
                    return Err(format!(
                    "unknown field {other:?} (fields: small, large, small-bufsize, large-bufsize)"
                ))
                }
            };
            let n: u64 = if name.ends_with("-bufsize") {
                Bytes::parse_quantity(v).map_err(|e| format!("{name}: {e}"))?.0
            } else {
                v.trim().parse().map_err(|_| format!("{name}: {v:?} is not a whole number"))?
            };
            if n == 0 {
                return Err(format!("{name} must be > 0"));
            }
            if slot.replace(n).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        Ok(SpdkIobuf {
            small_count: small.ok_or("small=N is required")?,
            large_count: large.ok_or("large=N is required")?,
            small_bufsize: sb,
            large_bufsize: lb,
        })
    }
}

/// Where the DPDK runtime dir goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RuntimeDir {
    At(ContainerPath),
    None,
}

/// Everything a container asked for, validated.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// `enabled` annotation, if present.
    pub enabled: Option<bool>,
    /// Hugepages per size (annotation, else non-zero `hugepageLimits`).
    pub hugepages: BTreeMap<PageSize, Bytes>,
    /// None: the configured default path.
    pub runtime_dir: Option<RuntimeDir>,
    pub group: Option<GroupName>,
    pub file_prefix: Option<FilePrefix>,
    pub gpu_headroom: Option<Bytes>,
    /// GPU devices and memory limit from the spec (not annotations): set by
    /// `features::gpu::inspect` after parsing.
    #[serde(default)]
    pub gpu: crate::features::gpu::GpuSpec,
    pub rdma_gid_index: Option<GidIndex>,
    pub spdk_iobuf: Option<SpdkIobuf>,
}

impl Request {
    /// Parses the spec's annotations and hugepage limits. `hugepage_limits` is
    /// `(pageSize as written, limit bytes)` from `linux.resources.hugepageLimits`.
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        hugepage_limits: &[(String, u64)],
    ) -> Result<Request, RequestError> {
        let mut r = Request::default();
        for (full, value) in annotations {
            let Some(key) = full.strip_prefix(PREFIX) else { continue };
            let v = value.as_str();
            match key {
                "enabled" => {
                    r.enabled = Some(match v {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(bad(
                                key,
                                v,
                                "must be \"true\" or \"false\"",
                                "use \"true\" or \"false\"",
                            ))
                        }
                    })
                }
                "hugepages-2Mi" | "hugepages-1Gi" => {
                    let size =
                        if key.ends_with("2Mi") { PageSize::Size2Mi } else { PageSize::Size1Gi };
                    let q = Bytes::parse_quantity(v)
                        .map_err(|e| bad(key, v, e, "write a quantity such as 256Mi or 2Gi"))?;
                    if q.0 == 0 {
                        return Err(bad(
                            key,
                            v,
                            "must be greater than 0",
                            "remove the annotation to ask for no hugepages",
                        ));
                    }
                    if q.0 % size.bytes() != 0 {
                        return Err(bad(
                            key,
                            v,
                            format!("{} is not a multiple of the {} page size", q, size),
                            format!("use a multiple of {}", size),
                        ));
                    }
                    r.hugepages.insert(size, q);
                }
                "dpdk-runtime-dir" => {
                    r.runtime_dir = Some(if v == "none" {
                        RuntimeDir::None
                    } else {
                        let p = ContainerPath::parse(v).map_err(|e| {
                            bad(
                                key,
                                v,
                                e,
                                "give an absolute container path such as /var/run/dpdk, or none",
                            )
                        })?;
                        // Prefix mode removes `<runtime dir>/<prefix>` from the host path behind
                        // it: never let that be a kernel filesystem (a bind of the host's /dev,
                        // /sys or /proc).
                        if let Some(top) =
                            ["proc", "sys", "dev"].into_iter().find(|t| p.relative().starts_with(t))
                        {
                            return Err(bad(
                                key,
                                v,
                                format!("must not be under /{top}"),
                                "give a path such as /var/run/dpdk, or none",
                            ));
                        }
                        RuntimeDir::At(p)
                    })
                }
                "dpdk-group" => {
                    r.group = Some(
                        GroupName::parse(v)
                            .map_err(|e| bad(key, v, e, "use a name like pktgen-1"))?,
                    )
                }
                "dpdk-file-prefix" => {
                    r.file_prefix = Some(
                        FilePrefix::parse(v)
                            .map_err(|e| bad(key, v, e, "use auto or a short prefix like app1"))?,
                    )
                }
                "gpu-headroom" => {
                    let q = Bytes::parse_quantity(v)
                        .map_err(|e| bad(key, v, e, "write a quantity such as 4Gi"))?;
                    if q.0 == 0 {
                        return Err(bad(
                            key,
                            v,
                            "must be greater than 0",
                            "remove the annotation to use the configured headroom",
                        ));
                    }
                    r.gpu_headroom = Some(q);
                }
                "rdma-gid-index" => {
                    r.rdma_gid_index = Some(if v == "auto" {
                        GidIndex::Auto
                    } else {
                        GidIndex::Index(v.parse().map_err(|_| {
                            bad(
                                key,
                                v,
                                "must be auto or a non-negative integer",
                                "use auto to let dataplane-hook choose",
                            )
                        })?)
                    })
                }
                "spdk-iobuf" => {
                    r.spdk_iobuf = Some(SpdkIobuf::parse(v).map_err(|e| {
                        bad(key, v, e, "write small=N,large=N[,small-bufsize=B,large-bufsize=B]")
                    })?)
                }
                _ => {
                    return Err(bad(
                        key,
                        v,
                        "unknown annotation key",
                        format!("known keys: {}", KEYS.join(", ")),
                    ))
                }
            }
        }
        if r.group.is_some() && r.file_prefix.is_some() {
            return Err(bad(
                "dpdk-file-prefix",
                annotations
                    .get(&format!("{PREFIX}dpdk-file-prefix"))
                    .map(String::as_str)
                    .unwrap_or(""),
                "cannot be combined with dataplane-hook.io/dpdk-group",
                "use a group (private shared dirs) or prefix mode (host dirs), not both",
            ));
        }
        for (size_str, limit) in hugepage_limits {
            let Some(size) = PageSize::from_oci(size_str) else { continue };
            if *limit == 0 || r.hugepages.contains_key(&size) {
                continue;
            }
            if limit % size.bytes() != 0 {
                return Err(bad(
                    &size.annotation(),
                    &limit.to_string(),
                    format!(
                        "the spec's hugepageLimits for {size} is not a multiple of the page size"
                    ),
                    "fix resources.limits in the pod spec",
                ));
            }
            r.hugepages.insert(size, Bytes(*limit));
        }
        Ok(r)
    }

    pub fn wants_hugepages(&self) -> bool {
        !self.hugepages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())).collect()
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        for (s, v) in [
            ("256Mi", 256u64 << 20),
            ("1Gi", 1 << 30),
            ("268435456", 268435456),
            ("1.5Gi", 3 << 29),
            ("2G", 2_000_000_000),
            ("4k", 4000),
            ("1e3", 1000),
            ("2048Ki", 2 << 20),
        ] {
            assert_eq!(Bytes::parse_quantity(s), Ok(Bytes(v)), "{s}");
        }
        for s in
            ["", "Mi", "-1Gi", "1.2.3", "12XB", "0.3", "1.5", "99999999999999999999999Gi", "1 Gi"]
        {
            assert!(Bytes::parse_quantity(s).is_err(), "{s}");
        }
    }

    #[test]
    fn quantity_arithmetic_is_checked_and_overflow_is_number_too_large() {
        // Fuzz finds (cargo fuzz run quantity): each of these panicked (10^digits overflowing
        // u128; past 127 fraction digits the scale wrapped to 0 and `total % 0` panicked even in
        // release builds) instead of being refused.
        let zeros = |n: usize| "0".repeat(n);
        for s in [
            format!("0.{}", zeros(39)),
            format!("0.{}1", zeros(40)),
            format!("0.{}", zeros(128)),
            format!("0.{}Gi", zeros(200)),
            format!("0.{}m", zeros(37)),
            format!("{}.{}", zeros(10), zeros(300)),
        ] {
            let e = Bytes::parse_quantity(&s).unwrap_err();
            assert!(e.contains("number too large"), "{s}: {e}");
        }
        // Right at the edges: u64::MAX is fine, one more is too large, as are products that
        // overflow u128 before the u64 check.
        assert_eq!(Bytes::parse_quantity("18446744073709551615"), Ok(Bytes(u64::MAX)));
        for s in [
            "18446744073709551616",
            "16Ei",
            "340282366920938463463374607431768211455Ei",
            "9e30",
            "1e31",
            "1e4294967295",
        ] {
            assert_eq!(Bytes::parse_quantity(s), Err("number too large".to_string()), "{s}");
        }
        assert_eq!(
            Bytes::parse_quantity("1e99999999999"),
            Err("bad exponent \"e99999999999\"".to_string())
        );
        // The longest fraction that still fits is exact.
        assert_eq!(Bytes::parse_quantity(&format!("1.{}Ki", zeros(35))), Ok(Bytes(1024)));
        assert_eq!(Bytes::parse_quantity("1000m"), Ok(Bytes(1)));
        assert!(Bytes::parse_quantity("1m").unwrap_err().contains("whole number"));
    }

    #[test]
    fn hostile_keys_and_spdk_fields_still_give_one_line_errors() {
        // Fuzz finds (request, annotation_values): a newline in an annotation key under the
        // prefix, or in an spdk-iobuf field name, was copied raw into the error, so one refusal
        // became several log lines (SPEC: one line).
        let mut a = BTreeMap::new();
        a.insert(format!("{PREFIX}\nugTpages-2mi"), ":ci2Mipaplane-h".to_string());
        let e = Request::parse(&a, &[]).unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains(['\n', '\r']) && msg.contains("unknown annotation key"), "{msg}");
        assert!(msg.starts_with(&format!("invalid annotation {PREFIX}\\nugTpages-2mi=")), "{msg}");
        for v in [
            "sm\n\0\0\0\0\0\0\0\u{2}/hugepages-1Gi=l-/buv",
            "small=1,large=2,\r\nsmall=3",
            "small\n=0,large=1",
            "x\n=1",
            "large=1,small\n=2Ki",
            "small=1,large=1,\nlarge-bufsize=1Zi",
        ] {
            let e = SpdkIobuf::parse(v).unwrap_err();
            assert!(!e.contains(['\n', '\r']), "{v:?}: {e:?}");
            let msg = Request::parse(&ann(&[("spdk-iobuf", v)]), &[]).unwrap_err().to_string();
            assert!(!msg.contains(['\n', '\r']), "{msg}");
        }
        // Fields are named as the SPEC spells them, whatever whitespace surrounds them.
        assert_eq!(SpdkIobuf::parse(" small =0,large=1"), Err("small must be > 0".to_string()));
        assert_eq!(
            SpdkIobuf::parse("small=1,large=2, small=3"),
            Err("small given twice".to_string())
        );
    }

    #[test]
    fn every_quantity_prints_as_one_that_parses_back_to_it() {
        for v in [
            0u64,
            1,
            1000,
            1023,
            1024,
            3 << 29,
            256 << 20,
            u64::MAX,
            u64::MAX - (1 << 40) + 1,
            (u64::MAX >> 40) << 40,
        ] {
            let b = Bytes(v);
            assert_eq!(Bytes::parse_quantity(&b.to_string()), Ok(b), "{b}");
        }
    }

    #[test]
    fn bytes_display_is_shortest_binary() {
        assert_eq!(Bytes(256 << 20).to_string(), "256Mi");
        assert_eq!(Bytes(1 << 30).to_string(), "1Gi");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }

    #[test]
    fn hugepage_annotations_must_be_page_multiples() {
        let r = Request::parse(&ann(&[("hugepages-2Mi", "16Mi"), ("hugepages-1Gi", "2Gi")]), &[])
            .unwrap();
        assert_eq!(r.hugepages[&PageSize::Size2Mi], Bytes(16 << 20));
        assert_eq!(r.hugepages[&PageSize::Size1Gi], Bytes(2 << 30));
        for (k, v) in [
            ("hugepages-2Mi", "3Mi"),
            ("hugepages-1Gi", "512Mi"),
            ("hugepages-2Mi", "0"),
            ("hugepages-2Mi", "lots"),
        ] {
            let e = Request::parse(&ann(&[(k, v)]), &[]).unwrap_err();
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(&format!("{PREFIX}{k}")));
        }
    }

    #[test]
    fn spec_hugepage_limits_are_the_default_and_zero_means_none() {
        let lim = vec![("2MB".to_string(), 8u64 << 20), ("1GB".to_string(), 0)];
        let r = Request::parse(&BTreeMap::new(), &lim).unwrap();
        assert_eq!(r.hugepages.len(), 1);
        assert_eq!(r.hugepages[&PageSize::Size2Mi], Bytes(8 << 20));
        // The annotation wins over the spec.
        let r = Request::parse(&ann(&[("hugepages-2Mi", "4Mi")]), &lim).unwrap();
        assert_eq!(r.hugepages[&PageSize::Size2Mi], Bytes(4 << 20));
        let e = Request::parse(&BTreeMap::new(), &[("2MB".into(), 3 << 20)]).unwrap_err();
        assert_eq!(e.key, "hugepages-2Mi");
    }

    #[test]
    fn unknown_keys_under_the_prefix_are_errors_and_others_ignored() {
        let e = Request::parse(&ann(&[("hugepages-2mi", "2Mi")]), &[]).unwrap_err();
        assert_eq!(e.key, "hugepages-2mi");
        assert!(e.to_string().contains("unknown annotation key"));
        let mut other = BTreeMap::new();
        other.insert("io.kubernetes.cri.container-type".to_string(), "container".to_string());
        other.insert("dataplane-hook.iox/whatever".to_string(), "x".to_string());
        assert_eq!(Request::parse(&other, &[]).unwrap(), Request::default());
    }

    #[test]
    fn every_malformed_value_names_its_key() {
        for (k, v) in [
            ("enabled", "yes"),
            ("dpdk-runtime-dir", "relative/path"),
            ("dpdk-runtime-dir", "/var/../etc"),
            ("dpdk-runtime-dir", "/"),
            ("dpdk-runtime-dir", "/proc/sys"),
            ("dpdk-runtime-dir", "/sys/fs/cgroup"),
            ("dpdk-runtime-dir", "/dev"),
            ("dpdk-runtime-dir", "/dev/./shm"),
            ("dpdk-group", "Upper"),
            ("dpdk-group", "-x"),
            ("dpdk-group", &"a".repeat(64)),
            ("dpdk-group", "a/b"),
            ("dpdk-file-prefix", "has space"),
            ("dpdk-file-prefix", &"p".repeat(25)),
            ("dpdk-file-prefix", ""),
            ("gpu-headroom", "0"),
            ("gpu-headroom", "much"),
            ("rdma-gid-index", "-1"),
            ("rdma-gid-index", "one"),
            ("spdk-iobuf", "small=1"),
            ("spdk-iobuf", "small=1,large=x"),
            ("spdk-iobuf", "small=1,large=2,medium=3"),
            ("spdk-iobuf", "small=1,small=2,large=3"),
        ] {
            let e = Request::parse(&ann(&[(k, v)]), &[]).unwrap_err();
            assert_eq!(e.key, k, "{k}={v}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{PREFIX}{k}")) && !msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn valid_values_parse() {
        let r = Request::parse(
            &ann(&[
                ("enabled", "true"),
                ("dpdk-runtime-dir", "/run/./dpdk/"),
                ("dpdk-group", "grp-1"),
                ("gpu-headroom", "4Gi"),
                ("rdma-gid-index", "3"),
                ("spdk-iobuf", "small=32767,large=16383,large-bufsize=132Ki"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(r.enabled, Some(true));
        assert_eq!(r.runtime_dir, Some(RuntimeDir::At(ContainerPath::parse("/run/dpdk").unwrap())));
        assert_eq!(r.group.unwrap().as_str(), "grp-1");
        assert_eq!(r.rdma_gid_index, Some(GidIndex::Index(3)));
        let io = r.spdk_iobuf.unwrap();
        assert_eq!(
            (io.small_count, io.large_count, io.large_bufsize),
            (32767, 16383, Some(132 << 10))
        );
        let r = Request::parse(
            &ann(&[("dpdk-runtime-dir", "none"), ("dpdk-file-prefix", "auto")]),
            &[],
        )
        .unwrap();
        assert_eq!(r.runtime_dir, Some(RuntimeDir::None));
        assert_eq!(r.file_prefix, Some(FilePrefix::Auto));
        // Only a whole first component counts: /devices, /system, /process are ordinary dirs.
        for ok in ["/devices/dpdk", "/system/run", "/process", "/var/dev"] {
            assert!(Request::parse(&ann(&[("dpdk-runtime-dir", ok)]), &[]).is_ok(), "{ok}");
        }
    }
}
