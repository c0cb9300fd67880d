//! `Recorder::start` → `stop`: the whole engine behind `tscmerge record`.
//!
//! Start: lock → output directory → tracefs → instances (tracing off, clock,
//! buffer size, record-tgid, events) → static files → capture threads → kvm
//! debugfs sampler → tracing on. Stop: tracing off → drain and join captures →
//! per-CPU stats → final debugfs snapshot → end-state files → rmdir instances
//! → unlock. Every exit path, including errors and an interrupt during start,
//! removes the instances: each step's owner (`Instance`, `Capture`,
//! `KvmSampler`, `RecordLock`) undoes itself on drop, in reverse order.

use crate::capture::{Capture, CpuCaptureEnd, CpuCounters};
use crate::error::{Error, Result};
use crate::instance::{CpuStats, Instance};
use crate::kvm::{KvmSampler, Processes};
use crate::lock::{RecordLock, DEFAULT_LOCK_PATH};
use crate::rawdir::{self, Meta};
use crate::sys;
use crate::tracefs::{self, Tracefs};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One instance to record.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Instance name (also the subdirectory of the output).
    pub name: String,
    /// Trace clock, normally `x86-tsc`.
    pub clock: String,
    /// `system:name` or `system:*`.
    pub events: Vec<String>,
    /// Per-CPU buffer size; kernel default when None.
    pub buffer_size_kb: Option<u64>,
}

impl InstanceConfig {
    /// An instance with the x86-tsc clock.
    pub fn new(name: &str, events: &[&str]) -> Self {
        InstanceConfig {
            name: name.into(),
            clock: "x86-tsc".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            buffer_size_kb: None,
        }
    }
}

/// Everything `Recorder::start` needs.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Filesystem root holding sys/kernel/{tracing,debug} (`/`).
    pub root: PathBuf,
    /// Output directory: created, or must be empty.
    pub out_dir: PathBuf,
    /// Instances to create.
    pub instances: Vec<InstanceConfig>,
    /// Lock file.
    pub lock_path: PathBuf,
    /// Copy /proc/kallsyms (several MB).
    pub kallsyms: bool,
    /// Sample KVM debugfs with this interval; off when None.
    pub kvm_debugfs_interval: Option<Duration>,
    /// How long a capture thread waits for data before checking for stop.
    pub poll_interval: Duration,
    /// Move pages with splice(2) (default); false forces read/write.
    pub splice: bool,
    /// Checked between start steps: when set, start undoes its work and
    /// returns [`Error::Interrupted`] (wire the signal flag here).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The run's journal ([`crate::leftovers`]): each instance, and the
    /// output directory when `fresh_out_dir`, is written there before it is
    /// created, so that a SIGKILLed run's leftovers can be found and removed.
    pub journal: Option<Arc<crate::leftovers::Journal>>,
    /// Create `out_dir` with mkdir(2), refusing anything already there (a
    /// planted symlink included), instead of accepting an empty directory.
    pub fresh_out_dir: bool,
}

impl RecordConfig {
    /// Defaults: root `/`, one instance `tscmerge` with x86-tsc and
    /// `kvm:kvm_write_tsc_offset`, the default lock, debugfs sampled every second.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        RecordConfig {
            root: PathBuf::from("/"),
            out_dir: out_dir.into(),
            instances: vec![InstanceConfig::new(
                "tscmerge",
                &["kvm:kvm_write_tsc_offset"],
            )],
            lock_path: PathBuf::from(DEFAULT_LOCK_PATH),
            kallsyms: false,
            kvm_debugfs_interval: Some(Duration::from_secs(1)),
            poll_interval: Duration::from_millis(100),
            splice: true,
            interrupt: None,
            journal: None,
            fresh_out_dir: false,
        }
    }
}

/// Per-CPU result of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSummary {
    /// CPU.
    pub cpu: u32,
    /// Bytes and pages captured.
    pub capture: CpuCaptureEnd,
    /// Ring-buffer stats at stop (lost events).
    pub stats: CpuStats,
}

/// Per-instance result.
#[derive(Debug, Clone)]
pub struct InstanceSummary {
    /// Instance name.
    pub name: String,
    /// Per CPU.
    pub cpus: Vec<CpuSummary>,
}

impl InstanceSummary {
    /// Events lost on all CPUs.
    pub fn lost(&self) -> u64 {
        self.cpus.iter().map(|c| c.stats.lost()).sum()
    }
}

/// Result of `Recorder::stop`.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Page size of the raw files.
    pub page_size: usize,
    /// Per instance.
    pub instances: Vec<InstanceSummary>,
    /// kvm_debugfs.txt lines written.
    pub kvm_snapshots: usize,
}

/// Live counters of one instance.
#[derive(Debug, Clone)]
pub struct InstanceCounters {
    /// Instance name.
    pub name: String,
    /// (cpu, counters).
    pub cpus: Vec<(u32, Arc<CpuCounters>)>,
}

struct Running {
    instance: Instance,
    capture: Option<Capture>,
}

/// A running recording. Drop without `stop` still cleans up (instances removed).
pub struct Recorder {
    // Field order is drop order: captures (closing trace_pipe_raw) before
    // instances (rmdir), the lock last.
    sampler: Option<KvmSampler>,
    running: Vec<Running>,
    tfs: Tracefs,
    out_dir: PathBuf,
    page_size: usize,
    meta: Meta,
    _lock: RecordLock,
}

fn now_unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn prepare_out_dir(d: &Path) -> Result<()> {
    match fs::read_dir(d) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::OutDir {
                    path: d.into(),
                    why: "is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(d).map_err(|e| Error::io("creating", d, e))
        }
        Err(e) => Err(Error::io("opening output directory", d, e)),
    }
}

impl Recorder {
    /// Set up everything and start capturing. On error nothing is left in tracefs.
    pub fn start(cfg: RecordConfig) -> Result<Recorder> {
        let check = || match &cfg.interrupt {
            Some(f) if f.load(Ordering::SeqCst) => Err(Error::Interrupted),
            _ => Ok(()),
        };
        check()?;
        if cfg.instances.is_empty() {
            return Err(Error::BadName {
                what: "configuration",
                value: String::new(),
                why: "no instance to record",
            });
        }
        let lock = RecordLock::acquire(&cfg.lock_path)?;
        if cfg.fresh_out_dir {
            if let Some(j) = &cfg.journal {
                j.note_rawdir(&cfg.out_dir)?;
            }
            crate::leftovers::create_fresh_dir(&cfg.out_dir)?;
        } else {
            prepare_out_dir(&cfg.out_dir)?;
        }
        let tfs = Tracefs::open_or_mount(&cfg.root)?;
        check()?;

        let mut running: Vec<Running> = Vec::new();
        for ic in &cfg.instances {
            if let Some(j) = &cfg.journal {
                j.note_instance(&tfs.instances_dir().join(&ic.name))?;
            }
            let mut inst = Instance::create_locked(&tfs, &ic.name, &cfg.lock_path)?;
            inst.set_clock(&ic.clock)?;
            if let Some(kb) = ic.buffer_size_kb {
                inst.set_buffer_size_kb(kb)?;
            }
            inst.set_option("record-tgid", true)?;
            for ev in &ic.events {
                inst.enable_event(ev)?;
            }
            running.push(Running {
                instance: inst,
                capture: None,
            });
            check()?;
        }
        let first = &running[0].instance;
        let page_size = first.page_size()?;
        for r in &running[1..] {
            let p = r.instance.page_size()?;
            if p != page_size {
                return Err(Error::OutDir {
                    path: cfg.out_dir.clone(),
                    why: format!(
                        "would mix page sizes: {} has {p}, {} has {page_size}",
                        r.instance.name(),
                        first.name()
                    ),
                });
            }
        }

        // Static description of the data.
        let out = &cfg.out_dir;
        let ev_dir = first.dir().join("events");
        let header_page = sys::read_text(&ev_dir.join("header_page"))?;
        rawdir::write_atomic(&out.join("header_page"), header_page.as_bytes())?;
        rawdir::copy_atomic(&ev_dir.join("header_event"), &out.join("header_event"))?;
        copy_formats(&tfs, &running, out)?;
        rawdir::copy_atomic(
            &tfs.dir().join("printk_formats"),
            &out.join("printk_formats"),
        )?;
        if cfg.kallsyms {
            rawdir::copy_atomic(Path::new("/proc/kallsyms"), &out.join("kallsyms"))?;
        }
        let mut meta = Meta::default();
        meta.set("format", "tscmerge-raw 1");
        meta.set("page_size", page_size);
        let long = rawdir::long_size_from_header_page(&header_page)
            .unwrap_or(std::mem::size_of::<libc::c_long>());
        meta.set("long_size", long);
        meta.set(
            "endian",
            if cfg!(target_endian = "little") {
                "little"
            } else {
                "big"
            },
        );
        meta.set("uname", sys::uname());
        meta.set("cpus", first.cpus()?.len());
        meta.set(
            "instances",
            running
                .iter()
                .map(|r| r.instance.name())
                .collect::<Vec<_>>()
                .join(","),
        );
        // What each instance traces (globs expanded): a reader that needs
        // one event type (kvm_write_tsc_offset) skips the buffers without it.
        for r in &running {
            let evs: Vec<String> = r.instance.events().iter().map(|e| e.to_string()).collect();
            meta.set(&format!("events.{}", r.instance.name()), evs.join(","));
        }
        match crate::tsc::tsc_frequency() {
            Some(f) => {
                meta.set("tsc_hz", format!("{:.0}", f.hz));
                meta.set("tsc_hz_source", f.source.as_str());
                if let Some((m, s)) = f.mult_shift {
                    meta.set("tsc_mult", m);
                    meta.set("tsc_shift", s);
                }
            }
            None => meta.set("tsc_hz_source", "none"),
        }
        let ns = now_unix_ns();
        meta.set("date", rawdir::rfc3339_utc((ns / 1_000_000_000) as i64));
        meta.set("start_unix_ns", ns);
        meta.set("kallsyms", u8::from(cfg.kallsyms));
        meta.set("complete", 0);
        for r in &running {
            let d = out.join(r.instance.name());
            fs::create_dir_all(&d).map_err(|e| Error::io("creating", &d, e))?;
            rawdir::write_atomic(
                &d.join("trace_clock"),
                format!("{}\n", r.instance.clock()?).as_bytes(),
            )?;
            let evs: String = r
                .instance
                .events()
                .iter()
                .map(|e| format!("{e}\n"))
                .collect();
            rawdir::write_atomic(&d.join("events"), evs.as_bytes())?;
        }
        check()?;

        let mut rec = Recorder {
            sampler: None,
            running,
            tfs,
            out_dir: out.clone(),
            page_size,
            meta,
            _lock: lock,
        };
        for r in &mut rec.running {
            r.capture = Some(Capture::start(
                &r.instance,
                &out.join(r.instance.name()),
                page_size,
                cfg.poll_interval,
                cfg.splice,
            )?);
        }
        if let Some(iv) = cfg.kvm_debugfs_interval {
            let dbg = tracefs::open_or_mount_debugfs(&cfg.root)?;
            rec.sampler = Some(KvmSampler::start(&dbg, &out.join("kvm_debugfs.txt"), iv)?);
        }
        check()?;
        rec.meta.set("start_tsc", sys::rdtsc());
        rawdir::write_atomic(&out.join("meta.txt"), rec.meta.to_text().as_bytes())?;
        for r in &rec.running {
            r.instance.set_tracing_on(true)?;
        }
        check()?;
        Ok(rec)
    }

    /// Live byte/page counters per instance and CPU.
    pub fn counters(&self) -> Vec<InstanceCounters> {
        self.running
            .iter()
            .map(|r| InstanceCounters {
                name: r.instance.name().to_string(),
                cpus: r.capture.as_ref().map(|c| c.counters()).unwrap_or_default(),
            })
            .collect()
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Stop, drain, write the end-state files and remove the instances.
    pub fn stop(mut self) -> Result<RecordSummary> {
        for r in &self.running {
            r.instance.set_tracing_on(false)?;
        }
        self.meta.set("stop_tsc", sys::rdtsc());
        self.meta.set("stop_unix_ns", now_unix_ns());
        let mut summaries = Vec::new();
        let mut first_err = None;
        for r in &mut self.running {
            let dir = self.out_dir.join(r.instance.name());
            let ends = match r.capture.take().map(|c| c.stop(&dir)) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                    Vec::new()
                }
                None => Vec::new(),
            };
            let mut cpus = Vec::new();
            let mut stats_text = String::new();
            for end in ends {
                let stats = r.instance.cpu_stats(end.cpu)?;
                stats_text.push_str(&format!(
                    "cpu{} bytes={} pages={} entries={} overrun={} dropped_events={} commit_overrun={} read_events={}\n",
                    end.cpu, end.bytes, end.pages, stats.entries, stats.overrun, stats.dropped_events,
                    stats.commit_overrun, stats.read_events
                ));
                cpus.push(CpuSummary {
                    cpu: end.cpu,
                    capture: end,
                    stats,
                });
            }
            rawdir::write_atomic(&dir.join("stats"), stats_text.as_bytes())?;
            summaries.push(InstanceSummary {
                name: r.instance.name().to_string(),
                cpus,
            });
        }
        let mut procs = Processes::default();
        let mut kvm_snapshots = 0;
        if let Some(s) = self.sampler.take() {
            procs = s.processes().lock().map(|p| p.clone()).unwrap_or_default();
            kvm_snapshots = s.stop()?;
        }
        let cmd = sys::read_bytes(&self.tfs.dir().join("saved_cmdlines"))?;
        let tg = sys::read_bytes(&self.tfs.dir().join("saved_tgids")).unwrap_or_default();
        rawdir::write_atomic(&self.out_dir.join("saved_cmdlines"), &cmd)?;
        rawdir::write_atomic(&self.out_dir.join("saved_tgids"), &tg)?;
        procs.add_saved_cmdlines(&String::from_utf8_lossy(&cmd));
        procs.add_saved_tgids(&String::from_utf8_lossy(&tg));
        rawdir::write_atomic(
            &self.out_dir.join("processes.txt"),
            procs.to_text().as_bytes(),
        )?;
        for r in self.running.drain(..) {
            if let Err(e) = r.instance.remove() {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        self.meta.set("complete", 1);
        rawdir::write_atomic(
            &self.out_dir.join("meta.txt"),
            self.meta.to_text().as_bytes(),
        )?;
        Ok(RecordSummary {
            out_dir: self.out_dir.clone(),
            page_size: self.page_size,
            instances: summaries,
            kvm_snapshots,
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Not stopped (error, panic, early return): tracing off so the drains
        // end, then captures, then instances (each by its own Drop).
        for r in &self.running {
            let _ = r.instance.set_tracing_on(false);
        }
        for r in &mut self.running {
            drop(r.capture.take());
        }
        self.sampler.take();
        self.running.clear();
    }
}

/// Copy the format of every enabled event and of all `ftrace` events
/// (print, bprint, ...: needed to decode trace_printk records).
fn copy_formats(tfs: &Tracefs, running: &[Running], out: &Path) -> Result<()> {
    let mut all: Vec<(String, String)> = Vec::new();
    for r in running {
        for e in r.instance.events() {
            all.push((e.system.clone(), e.name.clone()));
        }
    }
    let ftrace = tfs.dir().join("events/ftrace");
    if let Ok(rd) = fs::read_dir(&ftrace) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.path().join("format").is_file() {
                all.push(("ftrace".into(), e.file_name().to_string_lossy().into()));
            }
        }
    }
    all.sort();
    all.dedup();
    for (s, n) in all {
        let rel = format!("events/{s}/{n}/format");
        rawdir::copy_atomic(&tfs.dir().join(&rel), &out.join(&rel))?;
    }
    Ok(())
}
