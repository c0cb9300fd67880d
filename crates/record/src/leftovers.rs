//! What a `tscmerge record` killed by SIGKILL leaves behind, found and undone.
//!
//! A recorder keeps a journal, `<registry>/<pid>.journal` (the registry is
//! the lock file's name with `.d`: `/run/tscmerge-record.d/` by default,
//! mode 0700), in which it writes each thing it is about to create *before*
//! creating it: its tracefs instances, its hidden raw directory, the traced
//! command's pid. The journal is removed when the run ends on any path that
//! runs our code (errors, SIGINT/SIGTERM); after SIGKILL it stays, naming
//! the recorder's pid and start time. A journal whose recorder is no longer
//! alive (no process with that pid and start time) is a leftover: [`find`]
//! lists every item of every such journal that still exists, and any
//! instance that bears one of our names but is in no journal at all (a
//! recorder older than the journal); [`recover`] removes them all in one
//! step: tracing off and every event disabled in each instance before its
//! rmdir, the traced command killed if it still runs, the raw directory
//! removed (only a real directory, never through a symlink), the journal
//! last.
//!
//! The recorder only ever changes tracefs inside its own instances, so
//! removing them restores the top level as found.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The registry of journals beside a lock file: `LOCK` with its extension
/// replaced by `d` (`/run/tscmerge-record.lock` → `/run/tscmerge-record.d`).
pub fn registry_for(lock: &Path) -> PathBuf {
    lock.with_extension("d")
}

/// The start time of process `pid` in clock ticks since boot
/// (`/proc/PID/stat` field 22), telling a pid's owner from a later reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` is alive (not a zombie waiting to be reaped:
/// a SIGKILLed recorder whose parent has not waited yet) and started at `start`.
fn alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else { return false };
    let mut f = rest.split_whitespace();
    let state = f.next().unwrap_or("");
    state != "Z" && state != "X" && f.nth(18).and_then(|t| t.parse::<u64>().ok()) == Some(start)
}

/// A running recorder's journal; removed by [`Journal::finish`] or on drop.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    finished: Mutex<bool>,
}

impl Journal {
    /// Creates `<registry>/<our pid>.journal` (the registry directory made
    /// 0700 if absent; a symlink or a file there refused).
    pub fn create(registry: &Path) -> Result<Journal> {
        // Another recorder's finish removes the registry when it empties:
        // once between our mkdir and our open, we make it again.
        let mut tries = 0;
        loop {
            match Self::create_once(registry) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
                r => return r,
            }
        }
    }

    fn create_once(registry: &Path) -> Result<Journal> {
        match fs::DirBuilder::new().mode(0o700).create(registry) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating journal directory", registry, e)),
        }
        let md = fs::symlink_metadata(registry).map_err(|e| Error::io("checking journal directory", registry, e))?;
        if !md.is_dir() {
            return Err(Error::io(
                "checking journal directory",
                registry,
                io::Error::other("not a directory (a symlink or a file is there)"),
            ));
        }
        let pid = std::process::id() as i32;
        let path = registry.join(format!("{pid}.journal"));
        // A journal of an earlier process that had our pid is a leftover the
        // caller has already been told about; ours replaces nothing.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("creating journal", &path, e))?;
        writeln!(file, "recorder {pid} {}", start_time(pid).unwrap_or(0)).map_err(|e| Error::io("writing journal", &path, e))?;
        Ok(Journal { path, file: Mutex::new(file), finished: Mutex::new(false) })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn note(&self, kind: &str, what: &str) -> Result<()> {
        if what.contains('\n') {
            return Err(Error::io("writing journal", &self.path, io::Error::other(format!("{kind} {what:?}: a newline in a path"))));
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write(2) per line: a kill leaves whole lines.
        f.write_all(format!("{kind} {what}\n").as_bytes()).map_err(|e| Error::io("writing journal", &self.path, e))
    }

    /// About to create the tracefs instance at `dir`.
    pub fn note_instance(&self, dir: &Path) -> Result<()> {
        self.note("instance", &dir.display().to_string())
    }

    /// About to create the raw directory `dir` (removed on recovery).
    pub fn note_rawdir(&self, dir: &Path) -> Result<()> {
        let abs = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir().map(|c| c.join(dir)).unwrap_or_else(|_| dir.to_path_buf()) };
        self.note("rawdir", &abs.display().to_string())
    }

    /// Started the traced command as `pid`.
    pub fn note_child(&self, pid: i32) -> Result<()> {
        self.note("child", &format!("{pid} {}", start_time(pid).unwrap_or(0)))
    }

    /// The run ended cleanly: the journal goes.
    pub fn finish(&self) {
        let mut done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            let _ = fs::remove_file(&self.path);
            // The registry too, when this was its last journal (fails otherwise).
            if let Some(dir) = self.path.parent() {
                let _ = fs::remove_dir(dir);
            }
            *done = true;
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One thing a killed recorder left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A tracefs instance directory.
    Instance(PathBuf),
    /// A hidden raw capture directory.
    RawDir(PathBuf),
    /// The traced command, still running.
    Child { pid: i32, start: u64 },
}

/// What [`find`] found.
#[derive(Debug, Default, Clone)]
pub struct Leftovers {
    /// Journals of recorders no longer alive.
    pub journals: Vec<PathBuf>,
    /// Their items that still exist, then instances with our names in no journal.
    pub items: Vec<Item>,
}

fn count_enabled(inst: &Path) -> usize {
    let mut n = 0;
    let Ok(systems) = fs::read_dir(inst.join("events")) else { return 0 };
    for s in systems.flatten() {
        let Ok(evs) = fs::read_dir(s.path()) else { continue };
        for e in evs.flatten() {
            if fs::read_to_string(e.path().join("enable")).is_ok_and(|t| t.trim() == "1") {
                n += 1;
            }
        }
    }
    n
}

fn dir_size(d: &Path) -> u64 {
    fs::read_dir(d).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| if m.is_dir() { 0 } else { m.len() }).sum()).unwrap_or(0)
}

impl Item {
    /// The item in words, with its state.
    pub fn describe(&self) -> String {
        match self {
            Item::Instance(d) => {
                let on = fs::read_to_string(d.join("tracing_on")).is_ok_and(|t| t.trim() == "1");
                format!("tracefs instance {} (tracing {}, {} events enabled)", d.display(), if on { "on" } else { "off" }, count_enabled(d))
            }
            Item::RawDir(d) => format!("raw capture directory {} ({} bytes)", d.display(), dir_size(d)),
            Item::Child { pid, .. } => {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                format!("traced command pid {pid} ({}) still running", comm.trim())
            }
        }
    }

    fn exists(&self) -> bool {
        match self {
            Item::Instance(d) | Item::RawDir(d) => fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()),
            Item::Child { pid, start } => alive(*pid, *start),
        }
    }
}

impl Leftovers {
    /// Nothing left but, perhaps, journals whose items are all gone (a
    /// recorder killed before it made anything): those are removed by
    /// [`recover`] without anything to tell.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Everything, in one sentence.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.items.iter().map(Item::describe).collect();
        if parts.is_empty() {
            parts = self.journals.iter().map(|j| format!("journal {} (nothing else)", j.display())).collect();
        }
        parts.join("; ")
    }
}

struct Parsed {
    recorder: Option<(i32, u64)>,
    items: Vec<Item>,
}

fn parse_journal(text: &str) -> Parsed {
    let mut p = Parsed { recorder: None, items: Vec::new() };
    for line in text.lines() {
        let Some((kind, rest)) = line.split_once(' ') else { continue };
        let pid_start = || {
            let (a, b) = rest.split_once(' ')?;
            Some((a.parse::<i32>().ok()?, b.parse::<u64>().ok()?))
        };
        match kind {
            "recorder" => p.recorder = pid_start(),
            "instance" => p.items.push(Item::Instance(PathBuf::from(rest))),
            "rawdir" => p.items.push(Item::RawDir(PathBuf::from(rest))),
            "child" => {
                if let Some((pid, start)) = pid_start() {
                    p.items.push(Item::Child { pid, start });
                }
            }
            _ => {}
        }
    }
    p
}

/// Leftovers of killed recorders: the journals in `registry` whose recorder
/// is gone, and instances under `instances_dir` named as one of `our_names`
/// that no journal (of a live recorder or not) lists.
pub fn find(registry: &Path, instances_dir: &Path, our_names: &[String]) -> Leftovers {
    let mut out = Leftovers::default();
    let mut journaled = Vec::new();
    if let Ok(rd) = fs::read_dir(registry) {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "journal")).collect();
        paths.sort();
        for path in paths {
            let Ok(text) = fs::read_to_string(&path) else { continue };
            let p = parse_journal(&text);
            for it in &p.items {
                if let Item::Instance(d) = it {
                    journaled.push(d.clone());
                }
            }
            if p.recorder.is_some_and(|(pid, start)| alive(pid, start)) {
                continue;
            }
            out.items.extend(p.items.into_iter().filter(Item::exists));
            out.journals.push(path);
        }
    }
    for n in our_names {
        let d = instances_dir.join(n);
        if !journaled.contains(&d) && d.is_dir() && !out.items.contains(&Item::Instance(d.clone())) {
            out.items.push(Item::Instance(d));
        }
    }
    out
}

fn remove_instance(d: &Path) -> Result<()> {
    // Tracing off and every event disabled first, so the instance stops
    // costing anything even if the rmdir below fails.
    let write = |f: &str| OpenOptions::new().write(true).open(d.join(f)).and_then(|mut f| f.write_all(b"0"));
    let _ = write("tracing_on");
    let _ = write("events/enable");
    let mut last = None;
    for _ in 0..100 {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io("removing instance", d, e)),
        }
    }
    Err(Error::io("removing instance", d, last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY))))
}

/// Removes every leftover (children first, so that nothing writes to the
/// instances or directories being removed); returns what was done, one
/// line per item. The journals go once all their items are gone.
pub fn recover(l: &Leftovers) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for it in &l.items {
        if let Item::Child { pid, start } = it {
            let what = it.describe();
            if alive(*pid, *start) {
                // SAFETY: kill(2); the start time check above makes a reused pid unlikely.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                for _ in 0..100 {
                    if !alive(*pid, *start) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                done.push(format!("killed {what}"));
            }
        }
    }
    for it in &l.items {
        match it {
            Item::Instance(d) => {
                let what = it.describe();
                remove_instance(d)?;
                done.push(format!("removed {what}"));
            }
            Item::RawDir(d) => {
                // Only a real directory is removed; remove_dir_all does not
                // follow symlinks inside it.
                if fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
                    let what = it.describe();
                    fs::remove_dir_all(d).map_err(|e| Error::io("removing raw directory", d, e))?;
                    done.push(format!("removed {what}"));
                }
            }
            Item::Child { .. } => {}
        }
    }
    for j in &l.journals {
        fs::remove_file(j).map_err(|e| Error::io("removing journal", j, e))?;
        if let Some(dir) = j.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
    Ok(done)
}

/// Creates the directory `d` (mode 0700) with mkdir(2): refused if anything
/// is there already, a symlink included (never followed).
pub fn create_fresh_dir(d: &Path) -> Result<()> {
    fs::DirBuilder::new().mode(0o700).create(d).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            let what = match fs::symlink_metadata(d) {
                Ok(m) if m.file_type().is_symlink() => "a symlink",
                Ok(m) if m.is_dir() => "a directory",
                _ => "a file",
            };
            Error::OutDir { path: d.into(), why: format!("already exists ({what}); the raw directory is made fresh and never reused") }
        } else {
            Error::io("creating", d, e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_of_a_dead_recorder_is_found_and_recovered() {
        let base = std::env::temp_dir().join(format!("leftovers_test_{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("instances/x_tscmerge")).unwrap();
        fs::create_dir_all(base.join("raw")).unwrap();
        fs::write(base.join("raw/cpu0.raw"), b"abc").unwrap();
        let reg = base.join("reg.d");
        fs::create_dir(&reg).unwrap();
        // pid 1 never started at tick 1: dead.
        fs::write(reg.join("99.journal"), format!("recorder 1 1\ninstance {}\nrawdir {}\n", base.join("instances/nope").display(), base.join("raw").display())).unwrap();
        let l = find(&reg, &base.join("instances"), &["x_tscmerge".into(), "x_tsc_offset".into()]);
        assert_eq!(l.items, vec![Item::RawDir(base.join("raw")), Item::Instance(base.join("instances/x_tscmerge"))]);
        assert!(l.describe().contains("raw capture directory"), "{}", l.describe());
        // A live journal (ours) hides nothing of its own from others but is not a leftover.
        let j = Journal::create(&reg).unwrap();
        j.note_instance(&base.join("instances/x_tsc_offset")).unwrap();
        fs::create_dir_all(base.join("instances/x_tsc_offset")).unwrap();
        let l2 = find(&reg, &base.join("instances"), &["x_tscmerge".into(), "x_tsc_offset".into()]);
        assert_eq!(l2.items.len(), 2, "{:?}", l2.items);
        // Plain directories stand in for instances here.
        let done = recover(&l).unwrap();
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(!base.join("raw").exists() && !reg.join("99.journal").exists());
        j.finish();
        assert!(!j.path().exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn fresh_dir_refuses_a_planted_symlink() {
        let base = std::env::temp_dir().join(format!("fresh_test_{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("target")).unwrap();
        std::os::unix::fs::symlink(base.join("target"), base.join("link")).unwrap();
        let e = create_fresh_dir(&base.join("link")).unwrap_err().to_string();
        assert!(e.contains("a symlink"), "{e}");
        create_fresh_dir(&base.join("new")).unwrap();
        assert!(create_fresh_dir(&base.join("new")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
