//! Owns reading the node's RDMA facts: the kernel's GID tables in sysfs
//! (`/sys/class/infiniband/<dev>/ports/<port>/{gids,gid_attrs/types,gid_attrs/ndevs}/<i>`,
//! rooted at a configurable path so unit tests read recorded trees), which verbs device a
//! `/dev/infiniband/uverbsN` node is, and which network interfaces (with their addresses) a
//! network namespace holds.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source}")]
    Netns { path: PathBuf, source: std::io::Error },
    #[error("cannot list the network interfaces of {path}: {source}")]
    Interfaces { path: PathBuf, source: std::io::Error },
}

/// A 128-bit GID as the kernel stores it (network byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// Parses sysfs's spelling: eight groups of four hex digits (`fe80:0000:...:ca54`).
    pub fn parse(s: &str) -> Option<Gid> {
        let groups: Vec<&str> = s.trim().split(':').collect();
        if groups.len() != 8 {
            return None;
        }
        let mut raw = [0u8; 16];
        for (i, g) in groups.iter().enumerate() {
            if g.is_empty() || g.len() > 4 {
                return None;
            }
            let v = u16::from_str_radix(g, 16).ok()?;
            raw[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
        }
        Some(Gid(raw))
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.0)
    }

    /// `::ffff:a.b.c.d`: the GID RoCE v2 derives from an IPv4 address (what NCCL and Mooncake
    /// prefer).
    pub fn ipv4_mapped(&self) -> Option<Ipv4Addr> {
        let a = &self.0;
        if a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
        } else {
            None
        }
    }

    /// `fe80::/64`: derived from the MAC (the default GID) or a link-local IPv6 address.
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && self.0[1] == 0x80 && self.0[2..8].iter().all(|&b| b == 0)
    }

    /// The address this GID stands for on its netdev.
    pub fn address(&self) -> IpAddr {
        match self.ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(self.ipv6()),
        }
    }

    /// The link-local GID the kernel derives from a MAC (modified EUI-64).
    pub fn from_mac(mac: [u8; 6]) -> Gid {
        let mut raw = [0u8; 16];
        raw[0] = 0xfe;
        raw[1] = 0x80;
        raw[8] = mac[0] ^ 0x02;
        raw[9] = mac[1];
        raw[10] = mac[2];
        raw[11] = 0xff;
        raw[12] = 0xfe;
        raw[13] = mac[3];
        raw[14] = mac[4];
        raw[15] = mac[5];
        Gid(raw)
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in 0..8 {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", self.0[2 * i], self.0[2 * i + 1])?;
        }
        Ok(())
    }
}

/// `gid_attrs/types/<i>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GidType {
    /// `IB/RoCE v1`: the only type on InfiniBand ports; RoCE v1 on Ethernet ports.
    IbRoceV1,
    /// `RoCE v2`.
    RoceV2,
    Other(String),
}

impl GidType {
    pub fn parse(s: &str) -> GidType {
        match s.trim() {
            "IB/RoCE v1" | "RoCE v1" => GidType::IbRoceV1,
            "RoCE v2" => GidType::RoceV2,
            other => GidType::Other(other.to_string()),
        }
    }
}

impl fmt::Display for GidType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GidType::IbRoceV1 => f.write_str("IB/RoCE v1"),
            GidType::RoceV2 => f.write_str("RoCE v2"),
            GidType::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkLayer {
    InfiniBand,
    Ethernet,
    Other(String),
}

impl LinkLayer {
    pub fn parse(s: &str) -> LinkLayer {
        match s.trim() {
            "InfiniBand" => LinkLayer::InfiniBand,
            "Ethernet" => LinkLayer::Ethernet,
            other => LinkLayer::Other(other.to_string()),
        }
    }
}

/// One GID table slot. `None` where the kernel refused the read (unused slots return EINVAL
/// for `types` and `ndevs` on current kernels, and a zero GID).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GidEntry {
    pub index: u32,
    pub gid: Option<Gid>,
    pub gid_type: Option<GidType>,
    pub ndev: Option<String>,
}

/// A port's GID table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortTable {
    pub device: String,
    pub port: u32,
    pub link_layer: LinkLayer,
    /// `state` (`4: ACTIVE`), for messages.
    pub state: Option<String>,
    /// Every slot of the table, by index.
    pub entries: Vec<GidEntry>,
}

/// The RDMA part of sysfs.
#[derive(Debug, Clone)]
pub struct RdmaSysfs {
    root: PathBuf,
}

impl Default for RdmaSysfs {
    fn default() -> Self {
        RdmaSysfs { root: PathBuf::from("/sys") }
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    super::read_kernel_file(p).ok().map(|s| s.trim().to_string())
}

fn numbered(dir: &Path) -> Result<Vec<u32>, RdmaError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|source| RdmaError::Read { path: dir.to_path_buf(), source })?;
    let mut v: Vec<u32> =
        rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable();
    Ok(v)
}

impl RdmaSysfs {
    /// A sysfs rooted elsewhere (recorded trees in unit tests).
    pub fn at(root: impl Into<PathBuf>) -> RdmaSysfs {
        RdmaSysfs { root: root.into() }
    }

    fn class(&self) -> PathBuf {
        self.root.join("class/infiniband")
    }

    /// Verbs devices (`mlx5_0`, `erdma_0`, `rxe0`), sorted.
    pub fn devices(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.class())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    pub fn has_device(&self, dev: &str) -> bool {
        valid_name(dev) && self.class().join(dev).is_dir()
    }

    /// The verbs device behind `/dev/infiniband/<uverbs>` by the node's name.
    pub fn uverbs_device(&self, uverbs: &str) -> Option<String> {
        if !valid_name(uverbs) {
            return None;
        }
        read_trimmed(&self.root.join("class/infiniband_verbs").join(uverbs).join("ibdev"))
    }

    /// The verbs device whose uverbs char device is `major:minor`.
    pub fn uverbs_device_by_number(&self, major: i64, minor: i64) -> Option<String> {
        let want = format!("{major}:{minor}");
        let dir = self.root.join("class/infiniband_verbs");
        let rd = std::fs::read_dir(&dir).ok()?;
        for e in rd.flatten() {
            let p = e.path();
            if read_trimmed(&p.join("dev")).as_deref() == Some(want.as_str()) {
                return read_trimmed(&p.join("ibdev"));
            }
        }
        None
    }

    pub fn ports(&self, dev: &str) -> Result<Vec<u32>, RdmaError> {
        numbered(&self.class().join(dev).join("ports"))
    }

    pub fn port_table(&self, dev: &str, port: u32) -> Result<PortTable, RdmaError> {
        let p = self.class().join(dev).join("ports").join(port.to_string());
        let link_layer = super::read_kernel_file(p.join("link_layer"))
            .map(|s| LinkLayer::parse(&s))
            .map_err(|source| RdmaError::Read { path: p.join("link_layer"), source })?;
        let mut entries = Vec::new();
        for index in numbered(&p.join("gids"))? {
            let i = index.to_string();
            entries.push(GidEntry {
                index,
                gid: read_trimmed(&p.join("gids").join(&i)).and_then(|s| Gid::parse(&s)),
                gid_type: read_trimmed(&p.join("gid_attrs/types").join(&i))
                    .map(|s| GidType::parse(&s)),
                ndev: read_trimmed(&p.join("gid_attrs/ndevs").join(&i)).filter(|s| !s.is_empty()),
            });
        }
        Ok(PortTable {
            device: dev.to_string(),
            port,
            link_layer,
            state: read_trimmed(&p.join("state")),
            entries,
        })
    }

    /// Every port table of `dev`.
    pub fn tables(&self, dev: &str) -> Result<Vec<PortTable>, RdmaError> {
        self.ports(dev)?.into_iter().map(|port| self.port_table(dev, port)).collect()
    }
}

/// A sysfs directory entry name we are willing to join onto a path.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// A network interface as seen from inside its network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interface {
    pub addrs: Vec<IpAddr>,
    pub mac: Option<[u8; 6]>,
}

/// The interfaces of one network namespace, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetnsView {
    pub interfaces: BTreeMap<String, Interface>,
}

impl NetnsView {
    /// Whether the GID `gid` of netdev `ndev` (named as in the netdev's own namespace) belongs
    /// to an interface of this namespace. Names alone are ambiguous (the host's `eth0` and a
    /// pod's `eth0` are different devices), so the GID must also be one the kernel derives
    /// from that interface here: one of its addresses, or its MAC's link-local GID.
    pub fn holds(&self, ndev: &str, gid: &Gid) -> bool {
        let Some(i) = self.interfaces.get(ndev) else { return false };
        i.addrs.contains(&gid.address()) || i.mac.is_some_and(|m| Gid::from_mac(m) == *gid)
    }

    pub fn names(&self) -> Vec<&str> {
        self.interfaces.keys().map(String::as_str).collect()
    }
}

/// The interfaces of the network namespace at `ns` (`/proc/<pid>/ns/net`, `/var/run/netns/x`),
/// read from a short-lived thread that joins it (a thread may change its own network
/// namespace; the rest of the process is untouched).
pub fn netns_view(ns: &Path) -> Result<NetnsView, RdmaError> {
    let path = ns.to_path_buf();
    let handle = std::thread::spawn(move || -> Result<NetnsView, RdmaError> {
        let f = std::fs::File::open(&path)
            .map_err(|source| RdmaError::Netns { path: path.clone(), source })?;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| RdmaError::Netns { path: path.clone(), source: e.into() })?;
        interfaces().map_err(|source| RdmaError::Interfaces { path: path.clone(), source })
    });
    handle.join().unwrap_or_else(|_| {
        Err(RdmaError::Interfaces {
            path: ns.to_path_buf(),
            source: std::io::Error::other("reader thread panicked"),
        })
    })
}

/// The interfaces of the calling thread's network namespace (getifaddrs: netlink).
fn interfaces() -> std::io::Result<NetnsView> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut view = NetnsView::default();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned; fields are valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        let entry = view.interfaces.entry(name).or_default();
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    entry.addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    entry.addrs.push(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)));
                }
                libc::AF_PACKET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    if sa.sll_halen == 6 {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&sa.sll_addr[..6]);
                        entry.mac = Some(mac);
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(view)
}

/// Turns the compact fixture format of `hook/tests/fixtures/rdma/` into a sysfs tree.
#[cfg(test)]
pub mod fixture {
    use std::path::Path;

    pub fn materialize(text: &str, root: &Path) {
        let w = |p: std::path::PathBuf, v: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        };
        let ib = root.join("class/infiniband");
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "uverbs" => {
                    let d = root.join("class/infiniband_verbs").join(f[1]);
                    w(d.join("dev"), f[2]);
                    w(d.join("ibdev"), f[3]);
                }
                "port" => {
                    let p = ib.join(f[1]).join("ports").join(f[2]);
                    w(p.join("link_layer"), f[3]);
                    w(p.join("state"), &f[5..].join(" "));
                    let len: u32 = f[4].parse().unwrap();
                    for i in 0..len {
                        w(
                            p.join("gids").join(i.to_string()),
                            "0000:0000:0000:0000:0000:0000:0000:0000",
                        );
                    }
                    std::fs::create_dir_all(p.join("gid_attrs/types")).unwrap();
                    std::fs::create_dir_all(p.join("gid_attrs/ndevs")).unwrap();
                }
                "gid" => {
                    let p = ib.join(f[1]).join("ports").join(f[2]);
                    let i = f[3];
                    assert!(p.join("gids").join(i).exists(), "gid {i} outside the table: {line}");
                    w(p.join("gids").join(i), f[4]);
                    match f[5] {
                        "v1" => w(p.join("gid_attrs/types").join(i), "IB/RoCE v1"),
                        "v2" => w(p.join("gid_attrs/types").join(i), "RoCE v2"),
                        _ => {}
                    }
                    if f[6] != "-" {
                        w(p.join("gid_attrs/ndevs").join(i), f[6]);
                    }
                }
                other => panic!("unknown fixture line kind {other}: {line}"),
            }
        }
    }

    pub const MLX5_ROCE: &str = include_str!("../../tests/fixtures/rdma/mlx5_roce.txt");
    pub const ERDMA: &str = include_str!("../../tests/fixtures/rdma/erdma.txt");
    pub const RXE: &str = include_str!("../../tests/fixtures/rdma/rxe.txt");
    pub const IB: &str = include_str!("../../tests/fixtures/rdma/ib.txt");

    /// A temp sysfs holding all of `texts`.
    pub fn tree(texts: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for x in texts {
            materialize(x, t.path());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_parse_and_classify() {
        let g = Gid::parse("0000:0000:0000:0000:0000:ffff:0a6e:0021\n").unwrap();
        assert_eq!(g.ipv4_mapped(), Some(Ipv4Addr::new(10, 110, 0, 33)));
        assert_eq!(g.address(), IpAddr::V4(Ipv4Addr::new(10, 110, 0, 33)));
        assert!(!g.is_link_local());
        assert_eq!(g.to_string(), "0000:0000:0000:0000:0000:ffff:0a6e:0021");
        let ll = Gid::parse("fe80:0000:0000:0000:0ac0:ebff:fe3d:ca54").unwrap();
        assert!(ll.is_link_local() && ll.ipv4_mapped().is_none());
        assert_eq!(Gid::from_mac([0x08, 0xc0, 0xeb, 0x3d, 0xca, 0x54]), ll);
        assert!(Gid::parse("0000:0000:0000:0000:0000:0000:0000:0000").unwrap().is_zero());
        for bad in [
            "",
            "fe80::1",
            "fe80:0:0:0:0:0:0",
            "zzzz:0000:0000:0000:0000:0000:0000:0000",
            "12345:0:0:0:0:0:0:0",
        ] {
            assert!(Gid::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(GidType::parse("RoCE v2\n"), GidType::RoceV2);
        assert_eq!(GidType::parse("IB/RoCE v1\n"), GidType::IbRoceV1);
        assert_eq!(LinkLayer::parse("Ethernet\n"), LinkLayer::Ethernet);
    }

    #[test]
    fn recorded_tables_read_back() {
        let t = fixture::tree(&[fixture::MLX5_ROCE, fixture::ERDMA, fixture::IB]);
        let s = RdmaSysfs::at(t.path());
        assert_eq!(s.devices(), vec!["erdma_0", "mlx5_0", "mlx5_1", "mlx5_2"]);
        assert_eq!(s.uverbs_device("uverbs1").as_deref(), Some("mlx5_1"));
        assert_eq!(s.uverbs_device_by_number(231, 194).as_deref(), Some("mlx5_2"));
        assert_eq!(s.uverbs_device_by_number(231, 199), None);
        assert_eq!(s.uverbs_device("../x"), None);
        let m = s.port_table("mlx5_0", 1).unwrap();
        assert_eq!(m.link_layer, LinkLayer::Ethernet);
        assert_eq!(m.entries.len(), 255);
        assert_eq!(m.state.as_deref(), Some("4: ACTIVE"));
        let e3 = &m.entries[3];
        assert_eq!(e3.gid_type, Some(GidType::RoceV2));
        assert_eq!(e3.ndev.as_deref(), Some("ens1f0np0"));
        assert_eq!(e3.gid.unwrap().ipv4_mapped(), Some(Ipv4Addr::new(10, 110, 0, 33)));
        let empty = &m.entries[200];
        assert!(empty.gid.unwrap().is_zero() && empty.gid_type.is_none() && empty.ndev.is_none());
        let e = s.port_table("erdma_0", 1).unwrap();
        assert_eq!(e.entries.len(), 1);
        assert!(e.entries[0].gid_type.is_none() && !e.entries[0].gid.unwrap().is_zero());
        assert_eq!(s.tables("mlx5_2").unwrap()[0].link_layer, LinkLayer::InfiniBand);
        assert!(s.port_table("mlx5_9", 1).is_err());
    }

    #[test]
    fn own_netns_lists_loopback() {
        let v = netns_view(Path::new("/proc/self/ns/net")).unwrap();
        let lo = v.interfaces.get("lo").expect("lo");
        assert!(lo.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{v:?}");
        let e = netns_view(Path::new("/nonexistent/ns")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ns"), "{e}");
    }

    #[test]
    fn a_netdev_of_the_same_name_elsewhere_is_not_held() {
        let mut v = NetnsView::default();
        v.interfaces.insert(
            "eth0".into(),
            Interface {
                addrs: vec!["10.0.0.5".parse().unwrap()],
                mac: Some([0x02, 0, 0, 0, 0, 1]),
            },
        );
        let mine = Gid::parse("0000:0000:0000:0000:0000:ffff:0a00:0005").unwrap();
        let hosts = Gid::parse("0000:0000:0000:0000:0000:ffff:c0a8:0101").unwrap();
        assert!(v.holds("eth0", &mine));
        assert!(!v.holds("eth0", &hosts), "same name, another device's address");
        assert!(!v.holds("eth1", &mine));
        assert!(v.holds("eth0", &Gid::from_mac([0x02, 0, 0, 0, 0, 1])));
    }
}
