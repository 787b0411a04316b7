//! The seam between decisions and the node: everything that touches sysfs, cgroupfs, mounts
//! and /proc lives below here, named for what it owns.

pub mod atomic_file;
pub mod cgroup;
pub mod mount;
pub mod mountinfo;
pub mod proc;
pub mod rdma;
pub mod rlimit;
pub mod sysfs;

use std::io::Read;

/// Reads a small file of a kernel filesystem (procfs, sysfs, cgroupfs) whole, into one buffer
/// with no size query: these report a size of 0 or 4096 whatever they hold, so
/// `std::fs::read_to_string` stats the file and then reads it 32 bytes at a time at first
/// (a dozen syscalls for /proc/<pid>/stat where four do). The one way the product reads a
/// kernel file ([`read_kernel_fd`] for one opened some other way, e.g. under a /proc handle).
pub fn read_kernel_file(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    utf8(read_kernel_bytes(path)?)
}

/// [`read_kernel_file`] for files that are not text (`/proc/<pid>/cmdline`, whose arguments
/// are whatever bytes a process chose).
pub fn read_kernel_bytes(path: impl AsRef<std::path::Path>) -> std::io::Result<Vec<u8>> {
    read_whole(std::fs::File::open(path)?)
}

/// [`read_kernel_file`] on a file already opened (`openat` under a /proc dir fd).
pub fn read_kernel_fd(fd: std::os::fd::OwnedFd) -> std::io::Result<String> {
    utf8(read_whole(std::fs::File::from(fd))?)
}

fn utf8(b: Vec<u8>) -> std::io::Result<String> {
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn read_whole(f: std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let len = read_into(&f, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// The whole of `f` into the start of `buf` (its length: the bytes read), by plain reads until
/// end of file: `read_to_end`'s size probe costs a statx and an lseek per file (a fifth of a
/// ledger scan's system calls). `buf` keeps its (zeroed) length from call to call, so a caller
/// reading many files reuses one buffer without clearing it.
pub fn read_into(mut f: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.is_empty() {
        buf.resize(8192, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// `openat2(2)`, retried while the kernel says EAGAIN (or EINTR). With `RESOLVE_IN_ROOT` or
/// `RESOLVE_BENEATH` the kernel answers EAGAIN when a mount or a rename anywhere on the system
/// raced with the lookup, and expects the caller to try again: on a busy node that is no reason
/// to fail a container. Bounded: a lookup that keeps racing for this many tries gives up with
/// EAGAIN.
pub fn openat2<Fd: std::os::fd::AsFd, P: rustix::path::Arg + Copy>(
    dirfd: Fd,
    path: P,
    oflags: rustix::fs::OFlags,
    mode: rustix::fs::Mode,
    resolve: rustix::fs::ResolveFlags,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    const TRIES: u32 = 1000;
    let mut n = 0;
    loop {
        match rustix::fs::openat2(dirfd.as_fd(), path, oflags, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) if n < TRIES => {
                n += 1;
                if n % 16 == 0 {
                    std::thread::yield_now();
                }
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_files_are_read_whole_whatever_their_size() {
        let t = tempfile::tempdir().unwrap();
        for len in [0, 1, 4095, 4096, 4097, 20000] {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let p = t.path().join(format!("f{len}"));
            std::fs::write(&p, &text).unwrap();
            assert_eq!(super::read_kernel_file(&p).unwrap(), text, "{len} bytes");
        }
        let mountinfo = super::read_kernel_file("/proc/self/mountinfo").unwrap();
        assert_eq!(mountinfo, std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        assert_eq!(
            super::read_kernel_file(t.path().join("missing")).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        let fd = rustix::fs::open("/proc/self/mountinfo", rustix::fs::OFlags::RDONLY, 0.into());
        assert_eq!(
            super::read_kernel_fd(fd.unwrap()).unwrap().lines().count(),
            mountinfo.lines().count()
        );
        let cmdline = super::read_kernel_bytes("/proc/self/cmdline").unwrap();
        assert_eq!(cmdline, std::fs::read("/proc/self/cmdline").unwrap());
        std::fs::write(t.path().join("bin"), b"\xff\0").unwrap();
        assert_eq!(super::read_kernel_bytes(t.path().join("bin")).unwrap(), b"\xff\0");
        assert_eq!(
            super::read_kernel_file(t.path().join("bin")).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
    }
}
