//! Child processes measured from outside: wall time and peak RSS. The peak is the
//! kernel's per-process high-water mark `VmHWM` from `/proc/PID/status`, polled while
//! the child runs: `wait4`'s `ru_maxrss` cannot be used, because Linux carries it across
//! `execve` from the forked copy of the harness, whose RSS includes the emulator's data.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How a measured child process ended.
#[derive(Debug)]
pub struct Measured {
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Peak resident set size in KiB.
    pub maxrss_kib: u64,
    /// Everything it printed on stdout.
    pub stdout: String,
}

impl Measured {
    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }
}

/// Reaps `pid` and returns its exit code (or -signal) and peak RSS in KiB.
pub fn wait_rusage(pid: i32) -> std::io::Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value of a plain C struct; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok((code, ru.ru_maxrss as u64))
}

/// Runs `cmd` to completion (stderr to `stderr_log`), measuring it; fails on a non-zero exit.
pub async fn run_measured(
    mut cmd: Command,
    stderr_log: &std::path::Path,
) -> anyhow::Result<Measured> {
    let log = std::fs::File::create(stderr_log)?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .stdin(Stdio::null());
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let pid = child.id() as i32;
    let peak = HwmPoller::start(pid);
    let (code, _) = tokio::task::spawn_blocking(move || wait_rusage(pid)).await??;
    let maxrss_kib = peak.finish();
    let wall = start.elapsed();
    let stdout = reader.join().unwrap_or_default();
    if code != 0 {
        let err = std::fs::read_to_string(stderr_log).unwrap_or_default();
        bail!("{what} exited with {code}: {}", tail(&err, 2000));
    }
    Ok(Measured {
        wall,
        maxrss_kib,
        stdout,
    })
}

/// The last `n` bytes of `s` (on a char boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// `VmHWM` of `pid` in KiB (`None` once it has exited).
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A long-running child process (the daemon, the bare relay), stopped with SIGTERM by
/// [`Running::terminate`]; killed and reaped if dropped before that (an error path).
pub struct Running {
    /// Process id.
    pid: i32,
    /// Set once reaped.
    reaped: bool,
}

impl Running {
    /// Takes charge of `child` (it must not be waited for elsewhere).
    pub fn new(child: &std::process::Child) -> Running {
        Running {
            pid: child.id() as i32,
            reaped: false,
        }
    }

    /// Whether the process still exists (not yet reaped).
    pub fn alive(&self) -> bool {
        // SAFETY: kill with signal 0 only checks the process exists.
        !self.reaped && unsafe { libc::kill(self.pid, 0) } == 0
    }

    /// SIGTERM and reap: the exit code (or -signal) and the peak RSS in KiB (`VmHWM`
    /// just before the signal).
    pub async fn terminate(&mut self) -> anyhow::Result<(i32, u64)> {
        let rss = vm_hwm_kib(self.pid).unwrap_or(0);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let pid = self.pid;
        let (code, _) = tokio::task::spawn_blocking(move || wait_rusage(pid)).await??;
        self.reaped = true;
        Ok((code, rss))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signalling and reaping our own child on an error path.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = wait_rusage(self.pid);
        }
    }
}

/// Polls a child's `VmHWM` every 10 ms until told to stop; keeps the largest value seen.
pub struct HwmPoller {
    /// Set to stop the thread.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The polling thread; returns the peak.
    thread: std::thread::JoinHandle<u64>,
}

impl HwmPoller {
    /// Starts polling `pid`.
    pub fn start(pid: i32) -> HwmPoller {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match vm_hwm_kib(pid) {
                    Some(k) => peak = peak.max(k),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        HwmPoller { stop, thread }
    }

    /// Stops polling; the peak seen (KiB).
    pub fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
