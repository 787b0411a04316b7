//! Metrics end to end: real containers through dataplane-runtime and real runc, the hooks'
//! textfile (`[metrics] textfile_dir`) and the watchdog's beside it, read by the real
//! `prometheus-node-exporter` from Debian (textfile collector only, on loopback) and scraped
//! over HTTP. Every figure is checked against what the test made happen: reservations granted
//! and refused, pages reserved and released, leaked hugepage files reclaimed by prefix mode and
//! by a DPDK group's teardown, gc releasing a container whose poststop was lost, the hook
//! latency histogram. node_exporter's own `node_textfile_scrape_error` is the format check, and
//! the control shows it does catch a malformed file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;

const HUGE: &str = "dataplane-hook.io/hugepages-2Mi";

/// node_exporter with only the textfile collector, on a free loopback port; killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let bin = ["/usr/bin/prometheus-node-exporter", "/usr/bin/node_exporter"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("prometheus-node-exporter is not installed (make deps / apt-get install prometheus-node-exporter)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ne = NodeExporter { child, port };
        assert!(
            wait_for(Duration::from_secs(10), || ne.get("/metrics").is_some()),
            "node_exporter did not answer on 127.0.0.1:{port}"
        );
        ne
    }

    /// HTTP/1.0 GET on loopback; the body.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        let (head, body) = r.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
    }

    /// Samples as `name{labels sorted}` → value.
    fn scrape(&self) -> BTreeMap<String, f64> {
        parse(&self.get("/metrics").expect("scrape"))
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus text → `name{k="v",...}` (labels sorted, as node_exporter prints them) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn val(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        let near: Vec<&String> =
            m.keys().filter(|k| k.starts_with(series.split('{').next().unwrap())).collect();
        panic!("no sample {series}; samples of that name: {near:?}")
    })
}

/// The sum over every sample of a family (e.g. all buckets' +Inf counts).
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

fn env_with_textfile(dir: &Path) -> ProductEnv {
    ProductEnv::new(&format!("[metrics]\ntextfile_dir = \"{}\"\n", dir.display()))
}

fn run_to_end(r: &Runner, b: &TestBundle, id: &str) {
    r.launch(b, id);
    assert!(r.wait_stopped(id, Duration::from_secs(30)), "{id} did not finish: {}", stdout_of(b));
    let o = r.delete(id);
    assert!(o.status.success(), "delete {id}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn node_exporter_scrapes_the_hooks_figures_after_real_containers() {
    let pool = PoolGuard::new(16);
    let textfile = tempfile::Builder::new().prefix("dph-textfile-").tempdir().unwrap();
    let env = env_with_textfile(textfile.path());
    let r = Runner::product(&env);
    let ne = NodeExporter::start(textfile.path());
    let file_series = format!(
        "node_textfile_mtime_seconds{{file=\"{}\"}}",
        textfile.path().join("dataplane_hook.prom").display()
    );

    // 1. Granted: 8Mi (4 pages) reserved, then released at poststop.
    let mut ok = TestBundle::new(&["sh", "-c", "grep -c hugetlbfs /proc/mounts"]);
    ok.annotate(HUGE, "8Mi");
    run_to_end(&r, &ok, &unique("granted"));
    pool.assert_baseline("granted container");
    let m1 = ne.scrape();
    assert_eq!(val(&m1, "node_textfile_scrape_error"), 0.0, "node_exporter parsed the file");
    assert!(
        m1.contains_key(&file_series),
        "the collector read our file: {:?}",
        m1.keys().filter(|k| k.starts_with("node_textfile")).collect::<Vec<_>>()
    );
    assert_eq!(val(&m1, "dataplane_hook_reservations_total{result=\"granted\",size=\"2Mi\"}"), 1.0);
    assert_eq!(val(&m1, "dataplane_hook_reservations_total{result=\"refused\",size=\"2Mi\"}"), 0.0);
    assert_eq!(val(&m1, "dataplane_hook_reserved_pages_total{size=\"2Mi\"}"), 4.0);
    assert_eq!(val(&m1, "dataplane_hook_released_pages_total{size=\"2Mi\"}"), 4.0);
    assert_eq!(val(&m1, "dataplane_hook_teardowns_total{result=\"complete\"}"), 1.0);
    assert_eq!(
        val(&m1, "dataplane_hook_hook_duration_seconds_count{stage=\"createRuntime\"}"),
        1.0
    );
    assert_eq!(val(&m1, "dataplane_hook_hook_duration_seconds_count{stage=\"poststop\"}"), 1.0);
    assert_eq!(
        val(
            &m1,
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"+Inf\"}"
        ),
        1.0
    );
    let sum = val(&m1, "dataplane_hook_hook_duration_seconds_sum{stage=\"createRuntime\"}");
    assert!(sum > 0.0 && sum < 10.0, "createRuntime took {sum}s");
    assert_eq!(val(&m1, "dataplane_hook_pool_pages{size=\"2Mi\",state=\"total\"}"), 16.0);
    assert_eq!(val(&m1, "dataplane_hook_reserved_pages{size=\"2Mi\"}"), 0.0);
    assert_eq!(val(&m1, "dataplane_hook_containers"), 0.0);

    // 2. Refused: 64Mi does not fit a 16-page pool; the create fails and is counted.
    let mut big = TestBundle::new(&["true"]);
    big.annotate(HUGE, "64Mi");
    let o = r.create(&big, &unique("refused"));
    assert!(!o.status.success(), "a 64Mi request on a 32Mi pool must be refused");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reserve 64Mi of 2Mi hugepages"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // 3. A live container shows in the gauges while it runs.
    let mut live = TestBundle::new(&["sleep", "600"]);
    live.annotate(HUGE, "4Mi");
    let live_id = unique("live");
    r.launch(&live, &live_id);
    let m2 = ne.scrape();
    assert_eq!(
        delta(&m1, &m2, "dataplane_hook_reservations_total{result=\"refused\",size=\"2Mi\"}"),
        1.0
    );
    assert_eq!(delta(&m1, &m2, "dataplane_hook_hook_failures_total{stage=\"createRuntime\"}"), 1.0);
    assert_eq!(val(&m2, "dataplane_hook_containers"), 1.0);
    assert_eq!(val(&m2, "dataplane_hook_reserved_pages{size=\"2Mi\"}"), 2.0);
    assert_eq!(
        val(&m2, "dataplane_hook_pool_pages{size=\"2Mi\",state=\"reserved\"}"),
        2.0,
        "the kernel agrees"
    );

    // 4. gc: the live container's poststop is lost (init killed, runc state gone); gc releases it.
    let pid = r.pid(&live_id).unwrap();
    let cgroups = cgroup_dirs(pid);
    signal(pid, libc::SIGKILL);
    assert!(wait_pid_gone(pid, Duration::from_secs(10)));
    std::fs::remove_dir_all(r.runc_root.path().join(&live_id)).unwrap();
    let o = env.hook(&["gc"]);
    assert!(o.status.success(), "gc: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("released {live_id}")));
    for d in cgroups {
        let _ = std::fs::remove_dir(d);
    }
    let m3 = ne.scrape();
    assert_eq!(
        delta(&m2, &m3, "dataplane_hook_gc_actions_total{action=\"release_container\"}"),
        1.0
    );
    assert!(delta(&m2, &m3, "dataplane_hook_gc_runs_total") >= 1.0);
    assert_eq!(delta(&m2, &m3, "dataplane_hook_released_pages_total{size=\"2Mi\"}"), 2.0);
    assert_eq!(val(&m3, "dataplane_hook_containers"), 0.0);
    pool.assert_baseline("after gc");

    // 5. Prefix mode: the application leaves two 2Mi pages in a host hugetlbfs; teardown
    //    removes them and counts them.
    let host = HostHugetlbfs::mount("pagesize=2M");
    let mut leaky = TestBundle::new(&[
        "sh",
        "-c",
        "fallocate -l 4M /dev/hugepages/${DPDK_FILE_PREFIX}map_0 && ls -l /dev/hugepages",
    ]);
    leaky
        .annotate(HUGE, "4Mi")
        .annotate("dataplane-hook.io/dpdk-file-prefix", "leaky")
        .bind(host.path(), "/dev/hugepages");
    run_to_end(&r, &leaky, &unique("leaky"));
    assert!(
        stdout_of(&leaky).contains("leakymap_0"),
        "the app wrote its file: {}",
        stdout_of(&leaky)
    );
    assert_eq!(host.files(), Vec::<String>::new(), "teardown removed the leaked file");
    let m4 = ne.scrape();
    assert_eq!(
        delta(&m3, &m4, "dataplane_hook_leaked_files_reclaimed_total{origin=\"prefix\"}"),
        1.0
    );
    assert_eq!(
        delta(
            &m3,
            &m4,
            "dataplane_hook_leaked_pages_reclaimed_total{origin=\"prefix\",size=\"2Mi\"}"
        ),
        2.0
    );
    drop(host);

    // 6. A DPDK group: its only member leaves a 2Mi page in the group's hugetlbfs; the group's
    //    teardown reclaims it with the holder, and counts the group's reservation both ways.
    let mut member =
        TestBundle::new(&["sh", "-c", "fallocate -l 2M /dev/hugepages/rtemap_0 && echo wrote"]);
    member.annotate(HUGE, "8Mi").annotate("dataplane-hook.io/dpdk-group", "metrics");
    run_to_end(&r, &member, &unique("member"));
    assert!(stdout_of(&member).contains("wrote"), "{}", stdout_of(&member));
    pool.assert_baseline("after the group");
    let m5 = ne.scrape();
    assert_eq!(
        delta(&m4, &m5, "dataplane_hook_leaked_files_reclaimed_total{origin=\"group\"}"),
        1.0
    );
    assert_eq!(
        delta(
            &m4,
            &m5,
            "dataplane_hook_leaked_pages_reclaimed_total{origin=\"group\",size=\"2Mi\"}"
        ),
        1.0
    );
    assert_eq!(
        delta(&m4, &m5, "dataplane_hook_reserved_pages_total{size=\"2Mi\"}"),
        4.0,
        "the group's 8Mi"
    );
    assert_eq!(delta(&m4, &m5, "dataplane_hook_released_pages_total{size=\"2Mi\"}"), 4.0);
    assert_eq!(
        delta(&m4, &m5, "dataplane_hook_reservations_total{result=\"granted\",size=\"2Mi\"}"),
        1.0
    );

    // Every hook run is in the histogram: five createRuntime runs (granted, refused, live,
    // leaky, member) and four poststops — runc also runs poststop when it destroys the
    // container whose createRuntime hook failed; the live container's poststop was lost.
    assert_eq!(
        val(&m5, "dataplane_hook_hook_duration_seconds_count{stage=\"createRuntime\"}"),
        5.0
    );
    assert_eq!(
        val(&m5, "dataplane_hook_hook_duration_seconds_count{stage=\"poststop\"}"),
        4.0,
        "granted, refused, leaky, member"
    );
    assert_eq!(val(&m5, "node_textfile_scrape_error"), 0.0);
}

#[test]
fn the_watchdog_file_sits_beside_the_hooks_file_and_both_are_collected() {
    let textfile = tempfile::Builder::new().prefix("dph-textfile-").tempdir().unwrap();
    let watch_file = textfile.path().join("dataplane_hook_watch.prom");
    let env = ProductEnv::new(&format!(
        "[metrics]\ntextfile_dir = \"{}\"\n[watch]\nmetrics_file = \"{}\"\nmetrics_interval_ms = 1000\ndry_run = true\n",
        textfile.path().display(),
        watch_file.display()
    ));
    // The hooks' file: a gc run writes it.
    let o = env.hook(&["gc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut watch = Command::new(hook_bin())
        .arg("--config")
        .arg(&env.config)
        .arg("watch")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wrote = wait_for(Duration::from_secs(15), || watch_file.exists());
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(wrote, "watch wrote no metrics file: {}", env.log_text());
    let ne = NodeExporter::start(textfile.path());
    let m = ne.scrape();
    assert_eq!(
        val(&m, "node_textfile_scrape_error"),
        0.0,
        "both files parse and their families do not clash"
    );
    for f in ["dataplane_hook.prom", "dataplane_hook_watch.prom"] {
        assert!(
            m.contains_key(&format!(
                "node_textfile_mtime_seconds{{file=\"{}\"}}",
                textfile.path().join(f).display()
            )),
            "{f} collected"
        );
    }
    assert!(m.contains_key("dataplane_hook_gc_runs_total"));
    assert!(m.keys().any(|k| k.starts_with("dataplane_hook_watch_")), "watch's figures are there");
}

#[test]
fn control_node_exporter_reports_a_malformed_textfile() {
    // The format check above is node_exporter's: show it fails on a broken file.
    let textfile = tempfile::Builder::new().prefix("dph-textfile-").tempdir().unwrap();
    std::fs::write(textfile.path().join("broken.prom"), "# TYPE x counter\nx{a=\"1\" 1\n").unwrap();
    let ne = NodeExporter::start(textfile.path());
    assert_eq!(val(&ne.scrape(), "node_textfile_scrape_error"), 1.0);
}
