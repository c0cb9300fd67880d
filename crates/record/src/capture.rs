//! Moving ring-buffer pages out of `per_cpu/cpuN/trace_pipe_raw` into
//! `cpuN.raw`, one thread per CPU.
//!
//! splice(2) takes only completed pages (kernel/trace/trace.c
//! `tracing_buffers_splice_read` calls `ring_buffer_read_page(..., full=1)`),
//! so while running we splice page by page through a pipe; at stop the caller
//! switches tracing off and the thread drains the rest, including the partly
//! filled page, with read(2) (`tracing_buffers_read`, full=0) until EAGAIN.
//! If splice refuses with EINVAL (a file system without splice support) the
//! thread falls back to read/write for good.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Live counters of one CPU's capture, readable by a status line.
#[derive(Debug, Default)]
pub struct CpuCounters {
    /// Bytes written to `cpuN.raw`.
    pub bytes: AtomicU64,
    /// Pages written (bytes / page size, counted per transfer).
    pub pages: AtomicU64,
}

/// How one CPU's capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCaptureEnd {
    /// CPU number.
    pub cpu: u32,
    /// Bytes written.
    pub bytes: u64,
    /// Pages written.
    pub pages: u64,
    /// Whether splice was used (false after a fallback to read/write).
    pub spliced: bool,
}

struct CpuThread {
    cpu: u32,
    counters: Arc<CpuCounters>,
    handle: JoinHandle<Result<CpuCaptureEnd>>,
}

/// The capture threads of one instance.
pub struct Capture {
    instance: String,
    stop: Arc<AtomicBool>,
    threads: Vec<CpuThread>,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn is_eagain(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN))
}

fn retry<F: FnMut() -> isize>(mut f: F) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = last_err();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice.
        let n = retry(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = buf.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

struct Worker {
    src: File,
    out: File,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    page: usize,
    buf: Vec<u8>,
    splice: bool,
    counters: Arc<CpuCounters>,
    src_path: PathBuf,
    out_path: PathBuf,
}

enum Step {
    Moved,
    Empty,
}

impl Worker {
    fn count(&self, n: usize) {
        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.counters
            .pages
            .fetch_add(n.div_ceil(self.page) as u64, Ordering::Relaxed);
    }

    fn io_err(&self, what: &'static str, e: io::Error) -> Error {
        Error::io(what, &self.src_path, e)
    }

    /// One page via splice: trace_pipe_raw → pipe → file.
    fn splice_page(&mut self) -> Result<Step> {
        let (src, pw) = (self.src.as_raw_fd(), self.pipe_w.as_raw_fd());
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: valid fds, NULL offsets (use file positions).
        let r = retry(|| unsafe {
            libc::splice(
                src,
                std::ptr::null_mut(),
                pw,
                std::ptr::null_mut(),
                self.page,
                flags,
            )
        });
        let n = match r {
            Ok(0) => return Ok(Step::Empty),
            Ok(n) => n,
            Err(e) if is_eagain(&e) => return Ok(Step::Empty),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.splice = false;
                return self.read_page();
            }
            Err(e) => return Err(self.io_err("splicing from", e)),
        };
        // Drain the pipe into the file; fall back to read/write on EINVAL.
        let (pr, out) = (self.pipe_r.as_raw_fd(), self.out.as_raw_fd());
        let mut left = n;
        while left > 0 {
            // SAFETY: valid fds.
            match retry(|| unsafe {
                libc::splice(
                    pr,
                    std::ptr::null_mut(),
                    out,
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            }) {
                Ok(0) => {
                    return Err(Error::io(
                        "splicing to",
                        &self.out_path,
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(m) => left -= m.min(left),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.splice = false;
                    while left > 0 {
                        let want = left.min(self.buf.len());
                        // SAFETY: buf has at least `want` bytes.
                        let m =
                            retry(|| unsafe { libc::read(pr, self.buf.as_mut_ptr().cast(), want) })
                                .map_err(|e| self.io_err("reading pipe of", e))?;
                        if m == 0 {
                            break;
                        }
                        write_all(out, &self.buf[..m])
                            .map_err(|e| Error::io("writing", &self.out_path, e))?;
                        left -= m;
                    }
                }
                Err(e) => return Err(Error::io("splicing to", &self.out_path, e)),
            }
        }
        self.count(n);
        Ok(Step::Moved)
    }

    /// One page via read/write (also the drain path: gets partial pages).
    fn read_page(&mut self) -> Result<Step> {
        let src = self.src.as_raw_fd();
        let page = self.page;
        // SAFETY: buf holds `page` bytes.
        let r = retry(|| unsafe { libc::read(src, self.buf.as_mut_ptr().cast(), page) });
        let n = match r {
            Ok(0) => return Ok(Step::Empty),
            Ok(n) => n.min(page),
            Err(e) if is_eagain(&e) => return Ok(Step::Empty),
            Err(e) => return Err(self.io_err("reading", e)),
        };
        write_all(self.out.as_raw_fd(), &self.buf[..n])
            .map_err(|e| Error::io("writing", &self.out_path, e))?;
        self.count(n);
        Ok(Step::Moved)
    }

    fn run(mut self, cpu: u32, stop: &AtomicBool, poll: Duration) -> Result<CpuCaptureEnd> {
        let poll_ms = poll.as_millis().clamp(1, 10_000) as libc::c_int;
        let mut idle_after_poll = false;
        while !stop.load(Ordering::Acquire) {
            let step = if self.splice {
                self.splice_page()?
            } else {
                self.read_page()?
            };
            match step {
                Step::Moved => idle_after_poll = false,
                Step::Empty => {
                    if idle_after_poll {
                        // poll said readable but no full page came: do not spin.
                        std::thread::sleep(poll);
                    }
                    let mut p = libc::pollfd {
                        fd: self.src.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd. Errors (EINTR) just end the wait.
                    unsafe { libc::poll(&mut p, 1, poll_ms) };
                    idle_after_poll = true;
                }
            }
        }
        // Drain: the caller switched tracing off; read(2) also returns the
        // partly filled page. Bounded so a writer that is still on cannot keep us here.
        for _ in 0..1_000_000 {
            if let Step::Empty = self.read_page()? {
                break;
            }
        }
        self.out
            .sync_data()
            .map_err(|e| Error::io("syncing", &self.out_path, e))?;
        Ok(CpuCaptureEnd {
            cpu,
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            pages: self.counters.pages.load(Ordering::Relaxed),
            spliced: self.splice,
        })
    }
}

fn make_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_err());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The temporary name a capture writes to before [`Capture::stop`] renames it.
pub fn partial_name(cpu: u32) -> String {
    format!("cpu{cpu}.raw.part")
}

impl Capture {
    /// Open every CPU's `trace_pipe_raw` of `instance` and start its thread,
    /// writing `<out_dir>/cpuN.raw.part` (renamed to `cpuN.raw` at stop).
    /// `splice` false uses read/write from the start.
    pub fn start(
        instance: &crate::Instance,
        out_dir: &Path,
        page: usize,
        poll: Duration,
        splice: bool,
    ) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut cap = Capture {
            instance: instance.name().to_string(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for cpu in instance.cpus()? {
            let src_path = instance.trace_pipe_raw(cpu);
            let src = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&src_path)
                .map_err(|e| Error::io("opening", &src_path, e))?;
            let out_path = out_dir.join(partial_name(cpu));
            // No O_APPEND: splice(2) refuses to write to append-only files.
            let out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&out_path)
                .map_err(|e| Error::io("creating", &out_path, e))?;
            let (pipe_r, pipe_w) =
                make_pipe().map_err(|e| Error::io("creating a pipe for", &src_path, e))?;
            let counters = Arc::new(CpuCounters::default());
            let w = Worker {
                src,
                out,
                pipe_r,
                pipe_w,
                page,
                buf: vec![0; page],
                splice,
                counters: counters.clone(),
                src_path,
                out_path,
            };
            let st = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rec-{}-cpu{cpu}", instance.name()))
                .spawn(move || w.run(cpu, &st, poll))
                .map_err(|e| Error::io("spawning capture thread for", out_dir, e))?;
            cap.threads.push(CpuThread {
                cpu,
                counters,
                handle,
            });
        }
        Ok(cap)
    }

    /// Instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Live counters per CPU.
    pub fn counters(&self) -> Vec<(u32, Arc<CpuCounters>)> {
        self.threads
            .iter()
            .map(|t| (t.cpu, t.counters.clone()))
            .collect()
    }

    /// Stop the threads (switch the instance's tracing off first, so the
    /// drain ends), join them (closing every `trace_pipe_raw`) and rename each
    /// `cpuN.raw.part` to `cpuN.raw`. The first error wins; all threads are joined.
    pub fn stop(mut self, out_dir: &Path) -> Result<Vec<CpuCaptureEnd>> {
        self.stop.store(true, Ordering::Release);
        let mut ends = Vec::new();
        let mut first_err = None;
        for t in self.threads.drain(..) {
            match t.handle.join() {
                Ok(Ok(end)) => {
                    let from = out_dir.join(partial_name(t.cpu));
                    let to = out_dir.join(format!("cpu{}.raw", t.cpu));
                    if let Err(e) = fs::rename(&from, &to) {
                        first_err.get_or_insert(Error::io("renaming", from, e));
                    }
                    ends.push(end);
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::ThreadPanic {
                        instance: self.instance.clone(),
                        cpu: t.cpu,
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ends),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Not stopped through `stop`: end and join the threads so every
        // trace_pipe_raw is closed before the instance's rmdir.
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.handle.join();
        }
    }
}
