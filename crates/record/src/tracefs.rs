//! Finding (or mounting) tracefs and debugfs, and a snapshot of the global
//! tracefs state that tests use to prove a recording left it exactly as found.
//!
//! Pipeline position: first step of `tscmerge record`; everything else works
//! inside [`crate::Instance`]s below the directory found here.

use crate::error::{Error, Result};
use crate::sys;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A mounted tracefs directory.
#[derive(Debug, Clone)]
pub struct Tracefs {
    dir: PathBuf,
}

/// Whether `dir` looks like a mounted tracefs: its magic, or (for trees built
/// by tests) a `trace_clock` file next to an `instances` directory.
fn is_tracefs(dir: &Path) -> bool {
    match sys::fs_magic(dir) {
        Ok(m) if m == sys::TRACEFS_MAGIC => true,
        _ => dir.join("trace_clock").is_file() && dir.join("instances").is_dir(),
    }
}

impl Tracefs {
    /// Find tracefs below `root` (`/` normally): `sys/kernel/tracing`, then
    /// `sys/kernel/debug/tracing`; mount tracefs (or debugfs, whose `tracing`
    /// directory automounts tracefs) when neither is there.
    pub fn open_or_mount(root: &Path) -> Result<Tracefs> {
        Self::open_with(root, &|fs, target| sys::mount_pseudo(fs, target))
    }

    /// [`Tracefs::open_or_mount`] with the mount call replaced (tests).
    pub(crate) fn open_with(
        root: &Path,
        mount: &dyn Fn(&str, &Path) -> io::Result<()>,
    ) -> Result<Tracefs> {
        let primary = root.join("sys/kernel/tracing");
        let debug = root.join("sys/kernel/debug");
        let secondary = debug.join("tracing");
        for d in [&primary, &secondary] {
            if is_tracefs(d) {
                return Ok(Tracefs { dir: d.clone() });
            }
        }
        let mut reasons = Vec::new();
        match mount("tracefs", &primary) {
            Ok(()) if is_tracefs(&primary) => return Ok(Tracefs { dir: primary }),
            Ok(()) => reasons.push(format!(
                "mounted tracefs at {} but it has no trace_clock",
                primary.display()
            )),
            Err(e) => reasons.push(format!(
                "{} (mount tracefs at {})",
                sys::errno_name(&e),
                primary.display()
            )),
        }
        let debug_ok = match sys::fs_magic(&debug) {
            Ok(m) if m == sys::DEBUGFS_MAGIC => true,
            _ => match mount("debugfs", &debug) {
                Ok(()) => true,
                Err(e) => {
                    reasons.push(format!(
                        "{} (mount debugfs at {})",
                        sys::errno_name(&e),
                        debug.display()
                    ));
                    false
                }
            },
        };
        if debug_ok && is_tracefs(&secondary) {
            return Ok(Tracefs { dir: secondary });
        }
        if debug_ok {
            reasons.push(format!("{} is not tracefs", secondary.display()));
        }
        Err(Error::NoTracefs {
            primary,
            reason: reasons.join("; "),
        })
    }

    /// Use `dir` as tracefs without checks (tests on fake trees).
    pub fn at(dir: impl Into<PathBuf>) -> Tracefs {
        Tracefs { dir: dir.into() }
    }

    /// The tracefs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `instances/`.
    pub fn instances_dir(&self) -> PathBuf {
        self.dir.join("instances")
    }

    /// Names of the existing instances, sorted.
    pub fn instance_names(&self) -> Result<Vec<String>> {
        let d = self.instances_dir();
        let mut v = Vec::new();
        for e in fs::read_dir(&d).map_err(|e| Error::io("listing", &d, e))? {
            let e = e.map_err(|e| Error::io("listing", &d, e))?;
            v.push(e.file_name().to_string_lossy().into_owned());
        }
        v.sort();
        Ok(v)
    }
}

/// Find debugfs below `root` (`sys/kernel/debug`), mounting it if needed.
pub fn open_or_mount_debugfs(root: &Path) -> Result<PathBuf> {
    let d = root.join("sys/kernel/debug");
    if matches!(sys::fs_magic(&d), Ok(m) if m == sys::DEBUGFS_MAGIC) {
        return Ok(d);
    }
    match sys::mount_pseudo("debugfs", &d) {
        Ok(()) => Ok(d),
        Err(e) => Err(Error::NoDebugfs {
            path: d,
            errno: sys::errno_name(&e),
        }),
    }
}

/// The global tracefs settings a recorder must never change, plus the list of
/// instances. Compare two with [`TracefsState::diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracefsState {
    /// Instance names, sorted.
    pub instances: Vec<String>,
    /// (file, content) of the top-level files: trace_clock, set_event,
    /// tracing_on, current_tracer, buffer_size_kb, trace_options.
    pub files: Vec<(String, String)>,
}

const WATCHED: &[&str] = &[
    "trace_clock",
    "set_event",
    "tracing_on",
    "current_tracer",
    "buffer_size_kb",
    "trace_options",
];

impl TracefsState {
    /// Read the state now.
    pub fn snapshot(tfs: &Tracefs) -> Result<TracefsState> {
        let mut files = Vec::new();
        for f in WATCHED {
            let p = tfs.dir().join(f);
            // A missing file is state too (old kernels lack some).
            let v = sys::read_text(&p).unwrap_or_else(|_| "<unreadable>".to_string());
            files.push((f.to_string(), v));
        }
        Ok(TracefsState {
            instances: tfs.instance_names()?,
            files,
        })
    }

    /// Human-readable differences from `self` (before) to `after`; empty when equal.
    pub fn diff(&self, after: &TracefsState) -> Vec<String> {
        let mut out = Vec::new();
        for i in &after.instances {
            if !self.instances.contains(i) {
                out.push(format!("instance {i} appeared"));
            }
        }
        for i in &self.instances {
            if !after.instances.contains(i) {
                out.push(format!("instance {i} disappeared"));
            }
        }
        for ((f, a), (_, b)) in self.files.iter().zip(&after.files) {
            if a != b {
                out.push(format!("{f} changed from {:?} to {:?}", a.trim(), b.trim()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_failure_message_names_path_errno_and_fix() {
        let root =
            std::env::temp_dir().join(format!("record_test_fakeroot_{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let eperm = |_: &str, _: &Path| Err(io::Error::from_raw_os_error(libc::EPERM));
        let e = Tracefs::open_with(&root, &eperm).unwrap_err().to_string();
        let want = format!(
            "tracefs is not mounted at {}/sys/kernel/tracing and mounting it failed: EPERM",
            root.display()
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(e.contains("run as root or `mount -t tracefs nodev"), "{e}");
        assert!(e.contains("EPERM (mount debugfs at"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fake_tree_is_found_without_mounting() {
        let root =
            std::env::temp_dir().join(format!("record_test_faketree_{}", std::process::id()));
        let t = root.join("sys/kernel/debug/tracing");
        fs::create_dir_all(t.join("instances")).unwrap();
        fs::write(t.join("trace_clock"), "[local] x86-tsc\n").unwrap();
        let never = |_: &str, _: &Path| -> io::Result<()> { panic!("must not mount") };
        let tfs = Tracefs::open_with(&root, &never).unwrap();
        assert_eq!(tfs.dir(), t);
        fs::remove_dir_all(&root).unwrap();
    }
}
