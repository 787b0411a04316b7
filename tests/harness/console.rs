//! A console socket for `--console-socket`: runc connects to it and sends the pty master of a
//! container (or exec) with `terminal: true` by SCM_RIGHTS, as containerd's shim receives it.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
            receive_fd(&conn)
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

/// One message from runc: the pty's name as data, the master as the one SCM_RIGHTS fd.
fn receive_fd(conn: &UnixStream) -> std::io::Result<OwnedFd> {
    let mut name = [0u8; 4096];
    let mut iov = libc::iovec { iov_base: name.as_mut_ptr().cast(), iov_len: name.len() };
    // Room for one cmsghdr with one int, aligned as the kernel writes it.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer in it points at a live buffer of this frame
    // with its real length, and the cmsg walk stays inside `control` (CMSG_NXTHDR checks).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        if libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                // The kernel just installed this fd in our table for us.
                return Ok(OwnedFd::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Err(std::io::Error::other("no fd in the console socket message"))
}
