//! A tracefs instance (`instances/<name>`) of our own: its clock, events,
//! buffer size and options. We only ever write inside our instances, so the
//! top-level buffer is left exactly as found by construction; the directory
//! is removed by [`Instance::remove`] or, on every other path, by `Drop`.

use crate::error::{Error, Result};
use crate::lock;
use crate::sys;
use crate::tracefs::Tracefs;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `system:name` of a tracepoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventName {
    /// e.g. `kvm`.
    pub system: String,
    /// e.g. `kvm_write_tsc_offset`.
    pub name: String,
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.system, self.name)
    }
}

/// Names become path components: allow only what tracefs itself uses.
fn check_component(what: &'static str, s: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::BadName {
            what,
            value: s.to_string(),
            why,
        })
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 200 {
        return bad("too long");
    }
    if s == "." || s == ".." {
        return bad("is a relative path component");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return bad("only letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

impl EventName {
    /// Parse `system:name` (`name` may be `*` for the whole system).
    pub fn parse(s: &str) -> Result<EventName> {
        let Some((sys, name)) = s.split_once(':') else {
            return Err(Error::BadName {
                what: "event",
                value: s.into(),
                why: "expected system:name",
            });
        };
        check_component("event system", sys)?;
        if name != "*" {
            check_component("event name", name)?;
        }
        Ok(EventName {
            system: sys.into(),
            name: name.into(),
        })
    }
}

/// Per-CPU ring-buffer statistics (`per_cpu/cpuN/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Events still in the buffer (unread).
    pub entries: u64,
    /// Events overwritten before being read (lost, overwrite mode).
    pub overrun: u64,
    /// Events dropped because the buffer was full (lost, non-overwrite mode).
    pub dropped_events: u64,
    /// Events lost inside a commit that spanned pages.
    pub commit_overrun: u64,
    /// Events read by consumers.
    pub read_events: u64,
}

impl CpuStats {
    /// Parse the text of a `stats` file (kernel/trace/trace.c `tracing_stats_read`).
    pub fn parse(text: &str) -> CpuStats {
        let mut s = CpuStats::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let Ok(v) = v.trim().parse::<u64>() else {
                continue;
            };
            match k.trim() {
                "entries" => s.entries = v,
                "overrun" => s.overrun = v,
                "commit overrun" => s.commit_overrun = v,
                "dropped events" => s.dropped_events = v,
                "read events" => s.read_events = v,
                _ => {}
            }
        }
        s
    }

    /// Events lost on this CPU.
    pub fn lost(&self) -> u64 {
        self.overrun + self.dropped_events + self.commit_overrun
    }
}

/// Our tracefs instance. Removed on drop.
#[derive(Debug)]
pub struct Instance {
    name: String,
    dir: PathBuf,
    events: Vec<EventName>,
    removed: bool,
}

/// The clock marked `[selected]` in a trace_clock file, and all offered ones.
pub fn parse_trace_clock(text: &str) -> (Option<String>, Vec<String>) {
    let mut sel = None;
    let mut all = Vec::new();
    for w in text.split_whitespace() {
        if let Some(c) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            sel = Some(c.to_string());
            all.push(c.to_string());
        } else {
            all.push(w.to_string());
        }
    }
    (sel, all)
}

impl Instance {
    /// Create `instances/<name>`, refusing if it exists; tracing is switched
    /// off at once (new instances start on) until [`Instance::set_tracing_on`].
    pub fn create(tfs: &Tracefs, name: &str) -> Result<Instance> {
        Self::create_locked(tfs, name, Path::new(lock::DEFAULT_LOCK_PATH))
    }

    /// [`Instance::create`] naming `lock_path` in the "exists" error.
    pub fn create_locked(tfs: &Tracefs, name: &str, lock_path: &Path) -> Result<Instance> {
        check_component("instance name", name)?;
        let dir = tfs.instances_dir().join(name);
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(Error::InstanceExists {
                    name: name.into(),
                    path: dir,
                    holder: lock::describe_holder(lock_path),
                });
            }
            return Err(Error::io("creating instance", dir, e));
        }
        let inst = Instance {
            name: name.into(),
            dir,
            events: Vec::new(),
            removed: false,
        };
        inst.set_tracing_on(false)?;
        Ok(inst)
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Events enabled through [`Instance::enable_event`], expanded (`sys:*` → each event).
    pub fn events(&self) -> &[EventName] {
        &self.events
    }

    /// Select a trace clock, checking the kernel offers it.
    pub fn set_clock(&self, clock: &str) -> Result<()> {
        let p = self.dir.join("trace_clock");
        let (_, all) = parse_trace_clock(&sys::read_text(&p)?);
        if !all.iter().any(|c| c == clock) {
            return Err(Error::ClockUnavailable {
                wanted: clock.into(),
                path: p,
                available: all.join(" "),
            });
        }
        sys::write_ctl(&p, clock)?;
        match self.clock()? {
            c if c == clock => Ok(()),
            c => Err(Error::ClockUnavailable {
                wanted: clock.into(),
                path: p,
                available: format!("{} (the kernel kept {c})", all.join(" ")),
            }),
        }
    }

    /// The selected clock.
    pub fn clock(&self) -> Result<String> {
        let p = self.dir.join("trace_clock");
        parse_trace_clock(&sys::read_text(&p)?)
            .0
            .ok_or_else(|| Error::Parse {
                path: p,
                line: 1,
                what: "no [selected] clock".into(),
            })
    }

    /// Enable `system:name` (or `system:*`) in this instance.
    pub fn enable_event(&mut self, event: &str) -> Result<()> {
        let ev = EventName::parse(event)?;
        let sysdir = self.dir.join("events").join(&ev.system);
        let (dir, expanded) = if ev.name == "*" {
            if !sysdir.is_dir() {
                return Err(Error::NoSuchEvent {
                    event: event.into(),
                    path: sysdir,
                });
            }
            let mut v = Vec::new();
            for e in fs::read_dir(&sysdir).map_err(|e| Error::io("listing", &sysdir, e))? {
                let e = e.map_err(|e| Error::io("listing", &sysdir, e))?;
                if e.path().join("format").is_file() {
                    v.push(EventName {
                        system: ev.system.clone(),
                        name: e.file_name().to_string_lossy().into(),
                    });
                }
            }
            v.sort();
            (sysdir, v)
        } else {
            let d = sysdir.join(&ev.name);
            if !d.join("enable").is_file() {
                return Err(Error::NoSuchEvent {
                    event: event.into(),
                    path: d,
                });
            }
            (d, vec![ev])
        };
        sys::write_ctl(&dir.join("enable"), "1")?;
        for e in expanded {
            if !self.events.contains(&e) {
                self.events.push(e);
            }
        }
        Ok(())
    }

    /// Per-CPU buffer size.
    pub fn set_buffer_size_kb(&self, kb: u64) -> Result<()> {
        sys::write_ctl(&self.dir.join("buffer_size_kb"), &kb.to_string())
    }

    /// `options/<name>` on or off (e.g. `record-tgid`).
    pub fn set_option(&self, name: &str, on: bool) -> Result<()> {
        check_component("option", name)?;
        sys::write_ctl(
            &self.dir.join("options").join(name),
            if on { "1" } else { "0" },
        )
    }

    /// `tracing_on`.
    pub fn set_tracing_on(&self, on: bool) -> Result<()> {
        sys::write_ctl(&self.dir.join("tracing_on"), if on { "1" } else { "0" })
    }

    /// The CPUs with a `per_cpu/cpuN` directory, sorted.
    pub fn cpus(&self) -> Result<Vec<u32>> {
        let d = self.dir.join("per_cpu");
        let mut v = Vec::new();
        for e in fs::read_dir(&d).map_err(|e| Error::io("listing", &d, e))? {
            let e = e.map_err(|e| Error::io("listing", &d, e))?;
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|s| s.strip_prefix("cpu"))
                .and_then(|s| s.parse().ok())
            {
                v.push(n);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Size of one ring-buffer page as `trace_pipe_raw` hands it out:
    /// `buffer_subbuf_size_kb` (kernel 6.8+), else the MMU page size.
    pub fn page_size(&self) -> Result<usize> {
        let p = self.dir.join("buffer_subbuf_size_kb");
        if !p.exists() {
            return Ok(sys::page_size());
        }
        let t = sys::read_text(&p)?;
        match t.trim().parse::<usize>() {
            Ok(kb) if (1..=1024).contains(&kb) => Ok(kb * 1024),
            _ => Err(Error::Parse {
                path: p,
                line: 1,
                what: format!("expected a size in KiB, got {:?}", t.trim()),
            }),
        }
    }

    /// `per_cpu/cpuN/stats`.
    pub fn cpu_stats(&self, cpu: u32) -> Result<CpuStats> {
        let p = self.dir.join(format!("per_cpu/cpu{cpu}/stats"));
        Ok(CpuStats::parse(&sys::read_text(&p)?))
    }

    /// `per_cpu/cpuN/trace_pipe_raw`.
    pub fn trace_pipe_raw(&self, cpu: u32) -> PathBuf {
        self.dir.join(format!("per_cpu/cpu{cpu}/trace_pipe_raw"))
    }

    /// Stop tracing and remove the directory. Every reader of the instance's
    /// files must be closed first (the kernel refuses with EBUSY otherwise);
    /// enabled events need no disabling: rmdir tears them down (checked on 6.18).
    pub fn remove(mut self) -> Result<()> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let _ = self.set_tracing_on(false);
        let mut last = None;
        // EBUSY while a just-closed reader's last reference drains: retry briefly.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io("removing instance", &self.dir, e)),
            }
        }
        Err(Error::io(
            "removing instance",
            &self.dir,
            last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        ))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            // Nowhere to return it; a leftover instance must not go unnoticed.
            eprintln!("tscmerge record: warning: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats_and_clock() {
        let s = CpuStats::parse("entries: 3\noverrun: 1\ncommit overrun: 0\nbytes: 0\noldest event ts:   669.255827\ndropped events: 2\nread events: 9\n");
        assert_eq!(
            s,
            CpuStats {
                entries: 3,
                overrun: 1,
                dropped_events: 2,
                commit_overrun: 0,
                read_events: 9
            }
        );
        assert_eq!(s.lost(), 3);
        let (sel, all) = parse_trace_clock("[local] global x86-tsc\n");
        assert_eq!(sel.as_deref(), Some("local"));
        assert_eq!(all, ["local", "global", "x86-tsc"]);
    }

    #[test]
    fn refuses_path_like_names() {
        assert!(EventName::parse("kvm:../x").is_err());
        assert!(EventName::parse("kvm").is_err());
        assert!(EventName::parse("a/b:c").is_err());
        assert_eq!(EventName::parse("sched:*").unwrap().name, "*");
        assert!(check_component("instance name", "..").is_err());
    }
}
