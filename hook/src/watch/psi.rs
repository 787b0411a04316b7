//! Owns memory pressure: a PSI trigger on /proc/pressure/memory (Documentation/accounting/psi.rst).
//! Writing `some <stall us> <window us>` to the file and polling it for POLLPRI makes the kernel
//! wake us within the window when tasks stalled on memory for that long — no sampling.
//!
//! Windows that are not a multiple of 2 s need CAP_SYS_RESOURCE (the kernel then runs its fast
//! "rtpoll" aggregation); without it (containers, this project's test host) [`Trigger::arm`]
//! falls back to the nearest 2 s multiple with the stall scaled, and says so.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// An armed trigger.
#[derive(Debug)]
pub struct Trigger {
    fd: OwnedFd,
    pub full: bool,
    pub stall_us: u64,
    pub window_us: u64,
    /// The requested window needed privileges we lack: this is the fallback.
    pub degraded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PsiError {
    #[error("{path} is not available: {errno} (boot with psi=1 or CONFIG_PSI=y)")]
    Open { path: String, errno: Errno },
    #[error("the kernel refused trigger {line:?}: {errno}")]
    Write { line: String, errno: Errno },
}

fn line(full: bool, stall: u64, window: u64) -> String {
    format!("{} {stall} {window}", if full { "full" } else { "some" })
}

impl Trigger {
    pub fn arm(
        path: &Path,
        full: bool,
        stall_us: u64,
        window_us: u64,
    ) -> Result<Trigger, PsiError> {
        match Self::arm_exact(path, full, stall_us, window_us) {
            Err(PsiError::Write { errno: Errno::INVAL, .. })
                if !window_us.is_multiple_of(2_000_000) =>
            {
                let window = window_us.div_ceil(2_000_000) * 2_000_000;
                let stall = (stall_us as u128 * window as u128 / window_us as u128) as u64;
                let mut t = Self::arm_exact(path, full, stall, window)?;
                t.degraded = true;
                Ok(t)
            }
            r => r,
        }
    }

    fn arm_exact(
        path: &Path,
        full: bool,
        stall_us: u64,
        window_us: u64,
    ) -> Result<Trigger, PsiError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| PsiError::Open { path: path.display().to_string(), errno })?;
        let l = line(full, stall_us, window_us);
        let mut bytes = l.clone().into_bytes();
        bytes.push(0);
        rustix::io::write(&fd, &bytes).map_err(|errno| PsiError::Write { line: l, errno })?;
        Ok(Trigger { fd, full, stall_us, window_us, degraded: false })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn describe(&self) -> String {
        line(self.full, self.stall_us, self.window_us)
    }
}

/// `avg10` of the `some` (or `full`) line of a pressure file text, in percent.
pub fn avg10(text: &str, full: bool) -> Option<f64> {
    let kind = if full { "full" } else { "some" };
    text.lines()
        .find(|l| l.starts_with(kind))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg10_parses() {
        let t = "some avg10=1.50 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(avg10(t, false), Some(1.5));
        assert_eq!(avg10(t, true), Some(0.25));
        assert_eq!(avg10("", false), None);
    }

    #[test]
    fn a_trigger_arms_on_this_kernel_falling_back_without_cap_sys_resource() {
        let p = Path::new("/proc/pressure/memory");
        if !crate::test_has_root("arming a PSI trigger") {
            return;
        }
        assert!(
            p.exists(),
            "this kernel has no PSI (/proc/pressure/memory): the watchdog needs it"
        );
        let t = Trigger::arm(p, false, 150_000, 1_000_000).unwrap();
        if t.degraded {
            assert_eq!((t.stall_us, t.window_us), (300_000, 2_000_000));
        } else {
            assert_eq!((t.stall_us, t.window_us), (150_000, 1_000_000));
        }
        // Nothing stalls in a unit test: no event.
        let mut fds =
            [rustix::event::PollFd::from_borrowed_fd(t.fd(), rustix::event::PollFlags::PRI)];
        let n = rustix::event::poll(
            &mut fds,
            Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 1_000_000 }),
        )
        .unwrap();
        assert_eq!(n, 0);
    }
}
