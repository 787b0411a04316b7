//! A console socket for `--console-socket`: runc connects to it and sends the pty master of a
//! container (or exec) with `terminal: true` by SCM_RIGHTS, as containerd's shim receives it.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A listening console socket in its own temp dir; one connection, one pty master.
pub struct ConsoleSocket {
    dir: tempfile::TempDir,
    handle: Option<JoinHandle<std::io::Result<OwnedFd>>>,
}

impl ConsoleSocket {
    pub fn new() -> ConsoleSocket {
        let dir = tempfile::Builder::new().prefix("dph-console-").tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("console.sock")).expect("bind");
        let handle = std::thread::spawn(move || -> std::io::Result<OwnedFd> {
            let (conn, _) = listener.accept()?;
            // runc sends the pty's name as the data and the master as the one fd.
            let mut name = [0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut name)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg =
                recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                    .map_err(std::io::Error::from)?;
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    if let Some(&fd) = fds.first() {
                        // SAFETY: the kernel just installed this fd in our table for us.
                        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            Err(std::io::Error::other("no fd in the console socket message"))
        });
        ConsoleSocket { dir, handle: Some(handle) }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("console.sock")
    }

    /// The pty master runc sent (waits for it up to `timeout`; None: none came).
    pub fn master(&mut self, timeout: Duration) -> Option<OwnedFd> {
        let h = self.handle.take().expect("master taken once");
        let deadline = Instant::now() + timeout;
        while !h.is_finished() {
            if Instant::now() > deadline {
                // The thread stays blocked in accept(); the listener goes with the process.
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        h.join().expect("receiver thread").ok()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        ConsoleSocket::new()
    }
}

/// Everything the pty master yields until the other side closes (EIO) or `timeout` passes,
/// with the terminal's `\r\n` made `\n`.
pub fn read_pty(master: OwnedFd, timeout: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(timeout).unwrap_or_default();
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}
