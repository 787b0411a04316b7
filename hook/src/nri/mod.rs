//! Owns `dataplane-hook nri`: the product as an NRI plugin (containerd >= 1.7, CRI-O >= 1.26),
//! for nodes that run pods on the runtime's default handler instead of `dataplane-runtime`.
//!
//! The plugin connects to the runtime's NRI socket, registers with a name and an index, and
//! answers CreateContainer for containers that opt in by our annotations with an adjustment:
//! our annotations copied from the pod, the product's own createRuntime and poststop hooks (the
//! same binary and config the runtime handler injects) and what the features' spec edits make
//! (env, rlimits, memory limit). The hook then does the rest exactly as on the handler path, so
//! the same one-line refusal reaches the CRI caller. What an adjustment cannot express (a PID
//! namespace before NRI v0.10: groups) is refused at CreateContainer with a one-line message.
//! Synchronize (at every connect) and container stop/remove events run gc, which releases only
//! containers whose init is gone. When the runtime goes away the plugin reconnects.

pub mod adjust;
pub mod api;
pub mod ttrpc;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use prost::Message;

use self::ttrpc::{Frame, TransportError, Writer};
use crate::config::Loaded;

pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
pub const DEFAULT_NAME: &str = "dataplane-hook";
pub const DEFAULT_INDEX: &str = "10";

/// The plugin's own state in the state dir, for `doctor` (is it running, is it connected).
pub const STATE_FILE: &str = "nri-plugin.json";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginState {
    /// The plugin process (pid and start time: a reused pid is not the plugin).
    pub process: crate::host::proc::ProcessId,
    pub socket: PathBuf,
    /// `<index>-<name>`.
    pub name: String,
    pub connected: bool,
    /// From Configure (empty until then).
    pub runtime: String,
    pub runtime_version: String,
    /// Unix seconds of the last change.
    pub since: u64,
}

impl PluginState {
    pub fn read(state_dir: &Path) -> Option<PluginState> {
        let text = std::fs::read(state_dir.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Written atomically (the product's one writer) into the state dir, made safe by the ledger.
    fn write(&self, state_dir: &Path) {
        use crate::host::atomic_file::{self, Mode, Options};
        let r = crate::ledger::Ledger::open(state_dir).map_err(|e| e.to_string()).and_then(|_| {
            let bytes = serde_json::to_vec(self).expect("serializes");
            atomic_file::write(
                &state_dir.join(STATE_FILE),
                &bytes,
                Options::new(Mode::Exactly(0o600)),
            )
            .map_err(|e| e.to_string())
        });
        if let Err(e) = r {
            tracing::warn!("NRI: cannot record the plugin's state: {e}");
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long to wait between connection attempts while the runtime is away.
const RECONNECT: Duration = Duration::from_secs(1);
/// gc's budget per run in the plugin (the hooks' own bound).
const GC_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct NriArgs {
    /// The runtime's NRI socket
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Plugin name to register
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// Plugin index (two digits): plugins are called in ascending index order
    #[arg(long, default_value = DEFAULT_INDEX)]
    pub index: String,
    /// Exit when the runtime closes the connection instead of reconnecting
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NriError {
    #[error("invalid NRI plugin index {0:?}: must be two digits (pass --index 00..99)")]
    Index(String),
    #[error(
        "invalid NRI plugin name {0:?}: must be non-empty without '/' or whitespace (pass --name)"
    )]
    Name(String),
    #[error("the runtime refused to register plugin {name}: {why} (see the runtime's log)")]
    Refused { name: String, why: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

pub fn check_identity(name: &str, index: &str) -> Result<(), NriError> {
    if index.len() != 2 || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NriError::Index(index.into()));
    }
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c == '/' || c.is_whitespace()) {
        return Err(NriError::Name(name.into()));
    }
    Ok(())
}

/// Runs the plugin: connect, serve, reconnect.
pub fn run(loaded: &Loaded, args: &NriArgs) -> anyhow::Result<()> {
    check_identity(&args.name, &args.index)?;
    let hook_bin = std::env::current_exe().and_then(std::fs::canonicalize).map_err(|e| {
        anyhow::anyhow!(
            "cannot find the dataplane-hook executable: {e} (run it by its installed path)"
        )
    })?;
    let gc = spawn_gc(loaded.config.state_dir.clone());
    let mut said_waiting = false;
    let mut state = PluginState {
        process: crate::host::proc::ProcessId::of(std::process::id() as i32).ok_or_else(|| {
            anyhow::anyhow!("cannot read this process's identity in /proc (mount /proc)")
        })?,
        socket: args.socket.clone(),
        name: format!("{}-{}", args.index, args.name),
        connected: false,
        runtime: String::new(),
        runtime_version: String::new(),
        since: now(),
    };
    state.write(&loaded.config.state_dir);
    loop {
        match UnixStream::connect(&args.socket) {
            Ok(sock) => {
                said_waiting = false;
                let r = serve(loaded, args, &hook_bin, &gc, sock, &mut state);
                state.connected = false;
                state.since = now();
                state.write(&loaded.config.state_dir);
                match &r {
                    Ok(()) | Err(NriError::Transport(TransportError::Closed)) => {
                        tracing::info!("NRI: the runtime closed the connection");
                        eprintln!("dataplane-hook: nri: the runtime closed the connection");
                    }
                    Err(e) => {
                        tracing::warn!("NRI: {e}");
                        eprintln!("dataplane-hook: nri: {e}");
                    }
                }
                if args.once {
                    // The runtime going away is how a --once run ends, not a failure.
                    return match r {
                        Err(NriError::Transport(TransportError::Closed)) => Ok(()),
                        r => r.map_err(Into::into),
                    };
                }
            }
            Err(e) => {
                if args.once {
                    anyhow::bail!(
                        "cannot connect to the NRI socket {}: {e} (enable NRI in the runtime, or pass --socket)",
                        args.socket.display()
                    );
                }
                if !said_waiting {
                    tracing::info!(socket = %args.socket.display(), "NRI: waiting for the runtime: {e}");
                    eprintln!("dataplane-hook: nri: waiting for {}: {e}", args.socket.display());
                    said_waiting = true;
                }
            }
        }
        std::thread::sleep(RECONNECT);
    }
}

/// One gc at a time, requests coalesced: events come in bursts (a pod's containers stop together).
fn spawn_gc(state_dir: PathBuf) -> mpsc::Sender<&'static str> {
    let (tx, rx) = mpsc::channel::<&'static str>();
    let spawned = std::thread::Builder::new().name("nri-gc".into()).spawn(move || {
        while let Ok(why) = rx.recv() {
            while rx.try_recv().is_ok() {}
            let ledger = match crate::ledger::Ledger::open(&state_dir) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("NRI gc ({why}): {e}");
                    continue;
                }
            };
            let r = crate::gc::run_within(&ledger, false, GC_BUDGET);
            for id in &r.released {
                tracing::info!(container = %id, "NRI gc ({why}): released");
            }
            for e in &r.errors {
                tracing::warn!("NRI gc ({why}): {e}");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("NRI: cannot start the gc thread: {e}");
    }
    tx
}

struct Session<'a> {
    loaded: &'a Loaded,
    hook_bin: &'a Path,
    runtime: adjust::Runtime,
    gc: &'a mpsc::Sender<&'static str>,
}

fn serve(
    loaded: &Loaded,
    args: &NriArgs,
    hook_bin: &Path,
    gc: &mpsc::Sender<&'static str>,
    sock: UnixStream,
    state: &mut PluginState,
) -> Result<(), NriError> {
    let (mut reader, writer) = ttrpc::split(sock)?;
    let name = format!("{}-{}", args.index, args.name);
    // The runtime calls Configure as soon as it has our registration, possibly before its
    // answer reaches us: serve requests while waiting for it.
    let reg = ttrpc::Request {
        service: api::RUNTIME_SERVICE.into(),
        method: "RegisterPlugin".into(),
        payload: api::RegisterPluginRequest {
            plugin_name: args.name.clone(),
            plugin_idx: args.index.clone(),
        }
        .encode_to_vec(),
        timeout_nano: 0,
    };
    writer.send(ttrpc::RUNTIME_CONN, 1, ttrpc::TYPE_REQUEST, &reg.encode_to_vec())?;
    let mut s = Session { loaded, hook_bin, runtime: Default::default(), gc };
    loop {
        let f = reader.next_message()?;
        match (f.conn, f.kind) {
            (ttrpc::RUNTIME_CONN, ttrpc::TYPE_RESPONSE) => {
                let resp = ttrpc::Response::decode(f.body.as_slice())
                    .map_err(|e| TransportError::Protocol(e.to_string()))?;
                if let Some(st) = resp.status.filter(|s| s.code != 0) {
                    return Err(NriError::Refused { name, why: st.message });
                }
                tracing::info!("NRI: registered as {name}");
                eprintln!("dataplane-hook: nri: registered as {name}");
                state.connected = true;
                state.since = now();
                state.write(&loaded.config.state_dir);
            }
            (ttrpc::PLUGIN_CONN, ttrpc::TYPE_REQUEST) => {
                let configured = s.runtime.version.clone();
                if s.request(&writer, f)? {
                    return Ok(());
                }
                if s.runtime.version != configured {
                    state.runtime = s.runtime.name.clone();
                    state.runtime_version = s.runtime.version.clone();
                    state.write(&loaded.config.state_dir);
                }
            }
            _ => tracing::debug!(conn = f.conn, kind = f.kind, "NRI: message ignored"),
        }
    }
}

fn decode<M: Message + Default>(b: &[u8]) -> Result<M, (i32, String)> {
    M::decode(b).map_err(|e| (ttrpc::CODE_FAILED_PRECONDITION, format!("cannot decode: {e}")))
}

impl Session<'_> {
    /// Answers one runtime call. Returns true when the runtime says it is shutting down.
    fn request(&mut self, w: &Writer, f: Frame) -> Result<bool, NriError> {
        let req = ttrpc::Request::decode(f.body.as_slice())
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        let mut shutdown = false;
        let result = if req.service != api::PLUGIN_SERVICE {
            Err((ttrpc::CODE_UNIMPLEMENTED, format!("no service {}", req.service)))
        } else {
            match req.method.as_str() {
                "Configure" => decode::<api::ConfigureRequest>(&req.payload).map(|c| {
                    tracing::info!(runtime = %c.runtime_name, version = %c.runtime_version, "NRI: configured");
                    self.runtime =
                        adjust::Runtime { name: c.runtime_name, version: c.runtime_version };
                    api::ConfigureResponse {
                        events: api::event::mask(&[
                            api::event::CREATE_CONTAINER,
                            api::event::STOP_CONTAINER,
                            api::event::REMOVE_CONTAINER,
                        ]),
                    }
                    .encode_to_vec()
                }),
                "Synchronize" => decode::<api::SynchronizeRequest>(&req.payload).map(|r| {
                    tracing::info!(containers = r.containers.len(), "NRI: synchronized; gc");
                    let _ = self.gc.send("synchronize");
                    api::SynchronizeResponse {}.encode_to_vec()
                }),
                "CreateContainer" => decode::<api::CreateContainerRequest>(&req.payload)
                    .and_then(|r| self.create(r)),
                "StopContainer" => decode::<api::StopContainerRequest>(&req.payload).map(|_| {
                    let _ = self.gc.send("stop");
                    api::StopContainerResponse {}.encode_to_vec()
                }),
                "StateChange" => decode::<api::StateChangeEvent>(&req.payload).map(|e| {
                    if e.event == api::event::REMOVE_CONTAINER {
                        let _ = self.gc.send("remove");
                    }
                    api::Empty {}.encode_to_vec()
                }),
                "UpdateContainer" => Ok(Vec::new()),
                "Shutdown" => {
                    shutdown = true;
                    Ok(api::Empty {}.encode_to_vec())
                }
                m => Err((ttrpc::CODE_UNIMPLEMENTED, format!("no method {m}"))),
            }
        };
        w.send(ttrpc::PLUGIN_CONN, f.stream, ttrpc::TYPE_RESPONSE, &ttrpc::response(result))?;
        Ok(shutdown)
    }

    fn create(&self, r: api::CreateContainerRequest) -> Result<Vec<u8>, (i32, String)> {
        let Some(c) = r.container else {
            return Ok(api::CreateContainerResponse::default().encode_to_vec());
        };
        match adjust::adjust(self.loaded, self.hook_bin, &self.runtime, r.pod.as_ref(), &c) {
            Ok(adjust) => {
                if adjust.is_some() {
                    tracing::info!(container = %c.id, "NRI: container adjusted for the hook");
                }
                Ok(api::CreateContainerResponse { adjust }.encode_to_vec())
            }
            Err(e) => {
                let msg = format!("dataplane-hook: {e}").replace('\n', " ");
                tracing::error!(container = %c.id, "{msg}");
                Err((ttrpc::CODE_FAILED_PRECONDITION, msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake runtime's side of one call: sends a request on the plugin's connection, returns
    /// the response.
    fn call(
        w: &Writer,
        r: &mut ttrpc::Reader<UnixStream>,
        stream: u32,
        method: &str,
        payload: Vec<u8>,
    ) -> ttrpc::Response {
        let req = ttrpc::Request {
            service: api::PLUGIN_SERVICE.into(),
            method: method.into(),
            payload,
            timeout_nano: 0,
        };
        w.send(ttrpc::PLUGIN_CONN, stream, ttrpc::TYPE_REQUEST, &req.encode_to_vec()).unwrap();
        let f = r.next_message().unwrap();
        assert_eq!((f.conn, f.stream, f.kind), (ttrpc::PLUGIN_CONN, stream, ttrpc::TYPE_RESPONSE));
        ttrpc::Response::decode(f.body.as_slice()).unwrap()
    }

    /// Accepts the plugin and checks its registration; answers it.
    fn accept_registration(l: &UnixListener) -> (Writer, ttrpc::Reader<UnixStream>) {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut r, w) = ttrpc::split(sock).unwrap();
        let f = r.next_message().unwrap();
        assert_eq!((f.conn, f.kind), (ttrpc::RUNTIME_CONN, ttrpc::TYPE_REQUEST));
        let req = ttrpc::Request::decode(f.body.as_slice()).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            (api::RUNTIME_SERVICE, "RegisterPlugin")
        );
        let reg = api::RegisterPluginRequest::decode(req.payload.as_slice()).unwrap();
        assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("dataplane-hook", "10"));
        let ok = ttrpc::response(Ok(api::Empty {}.encode_to_vec()));
        w.send(ttrpc::RUNTIME_CONN, f.stream, ttrpc::TYPE_RESPONSE, &ok).unwrap();
        (w, r)
    }

    #[test]
    fn the_plugin_registers_configures_adjusts_refuses_and_registers_again_after_a_runtime_restart()
    {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nri.sock");
        let loaded = Loaded {
            config: crate::config::Config {
                state_dir: dir.path().join("state"),
                log_file: PathBuf::new(),
                ..Default::default()
            },
            path: None,
        };
        let args = NriArgs {
            socket: sock.clone(),
            name: DEFAULT_NAME.into(),
            index: DEFAULT_INDEX.into(),
            once: false,
        };
        // The plugin starts before the runtime is there.
        std::thread::spawn(move || run(&loaded, &args));
        std::thread::sleep(Duration::from_millis(200));
        let l = UnixListener::bind(&sock).unwrap();
        let (w, mut r) = accept_registration(&l);

        let conf = api::ConfigureRequest {
            config: String::new(),
            runtime_name: "containerd".into(),
            runtime_version: "v1.7.24".into(),
        };
        let resp = call(&w, &mut r, 1, "Configure", conf.encode_to_vec());
        assert_eq!(resp.status, None);
        let events = api::ConfigureResponse::decode(resp.payload.as_slice()).unwrap().events;
        assert_eq!(events, (1 << 3) | (1 << 9) | (1 << 10), "create, stop, remove");
        let resp =
            call(&w, &mut r, 3, "Synchronize", api::SynchronizeRequest::default().encode_to_vec());
        assert_eq!(resp.status, None);

        let create = |ann: &[(&str, &str)]| api::CreateContainerRequest {
            pod: Some(api::PodSandbox {
                id: "pod".into(),
                annotations: ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            container: Some(api::Container {
                id: "ctr".into(),
                args: vec!["sh".into()],
                ..Default::default()
            }),
        };
        let resp = call(
            &w,
            &mut r,
            5,
            "CreateContainer",
            create(&[("dataplane-hook.io/hugepages-2Mi", "4Mi")]).encode_to_vec(),
        );
        assert_eq!(resp.status, None);
        let adj =
            api::CreateContainerResponse::decode(resp.payload.as_slice()).unwrap().adjust.unwrap();
        let hooks = adj.hooks.unwrap();
        assert_eq!((hooks.create_runtime.len(), hooks.poststop.len()), (1, 1));
        assert_eq!(hooks.create_runtime[0].args.last().map(String::as_str), Some("createRuntime"));

        let resp = call(
            &w,
            &mut r,
            7,
            "CreateContainer",
            create(&[("dataplane-hook.io/dpdk-group", "g")]).encode_to_vec(),
        );
        let st = resp.status.expect("refused");
        assert_eq!(st.code, ttrpc::CODE_FAILED_PRECONDITION);
        assert!(
            st.message.starts_with(
                "dataplane-hook: cannot put container ctr in DPDK group g: containerd v1.7.24"
            ),
            "{}",
            st.message
        );

        let resp = call(&w, &mut r, 9, "NoSuchMethod", vec![]);
        assert_eq!(resp.status.map(|s| s.code), Some(ttrpc::CODE_UNIMPLEMENTED));

        // The runtime restarts: its socket goes and comes back; the plugin registers again.
        w.shutdown();
        drop((w, r, l));
        std::fs::remove_file(&sock).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let l = UnixListener::bind(&sock).unwrap();
        let (w, mut r) = accept_registration(&l);
        let resp = call(&w, &mut r, 1, "Configure", conf.encode_to_vec());
        assert_eq!(resp.status, None);
    }

    #[test]
    fn plugin_identity_is_checked_like_the_runtime_checks_it() {
        assert!(check_identity("dataplane-hook", "10").is_ok());
        for idx in ["1", "100", "ab", ""] {
            assert!(matches!(check_identity("x", idx), Err(NriError::Index(_))), "{idx}");
        }
        for name in ["", "a b", "a/b"] {
            assert!(matches!(check_identity(name, "10"), Err(NriError::Name(_))), "{name:?}");
        }
    }
}
