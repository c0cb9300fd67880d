//! The raw recording directory: self-describing, so tscmerge can read it as a
//! source and later turn it into a trace.dat. Every file is written under a
//! temporary name and renamed into place, so a reader never sees half a file.
//!
//! ```text
//! <dir>/meta.txt                     key=value lines (see [`Meta`]); written at start,
//!                                    rewritten at stop with `complete=1`
//! <dir>/header_page, header_event    from the first instance's events/ (page layout)
//! <dir>/events/<sys>/<name>/format   every enabled event, plus all of events/ftrace/*
//! <dir>/printk_formats               for bprint/bputs string addresses
//! <dir>/saved_cmdlines, saved_tgids  at stop (pid → comm, pid → tgid)
//! <dir>/kallsyms                     /proc/kallsyms, only when asked (large)
//! <dir>/processes.txt                "pid tgid comm" of threads seen (see kvm.rs)
//! <dir>/kvm_debugfs.txt              debugfs tsc-offset snapshots (see kvm.rs)
//! <dir>/<instance>/cpuN.raw          trace_pipe_raw pages, page_size bytes each
//! <dir>/<instance>/trace_clock       the selected clock name, one line
//! <dir>/<instance>/events            enabled events, one `system:name` a line
//! <dir>/<instance>/stats             per CPU at stop: "cpuN key=value ..." (see [`CpuStats`])
//! ```
//!
//! [`CpuStats`]: crate::CpuStats

use crate::error::{Error, Result};
use crate::sys;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` through an unguessable temporary name + rename
/// ([`safefs::AtomicFile`]; removed on error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = safefs::AtomicFile::create(path)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", f.tmp_path(), e))?;
    // No fsync: these are the raw directory's side files, which the
    // conversion reads back at once (the old code did not sync them either).
    Ok(f.commit_unsynced()?)
}

/// Copy a (pseudo) file's content into `dst` atomically, creating parents.
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<()> {
    let data = sys::read_bytes(src)?;
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io("creating", p, e))?;
    }
    write_atomic(dst, &data)
}

/// Ordered `key=value` metadata (`meta.txt`). Keys written by the recorder:
/// `format` (`tscmerge-raw 1`), `page_size`, `long_size`, `endian`
/// (`little`/`big`), `uname`, `cpus`, `instances` (comma-separated),
/// `events.INSTANCE` (its enabled events, `system:event`, globs expanded),
/// `tsc_hz` + `tsc_hz_source` (`perf_mmap`/`cpuinfo_mhz`) + `tsc_mult`/`tsc_shift`
/// when from perf, `date` (UTC, RFC 3339), `start_unix_ns`, `start_tsc`,
/// `stop_tsc`, `stop_unix_ns`, `kallsyms` (0/1), `complete` (0 while running).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Entries in file order.
    pub entries: Vec<(String, String)>,
}

impl Meta {
    /// Set (replace or append) a key.
    pub fn set(&mut self, k: &str, v: impl ToString) {
        let v = v.to_string().replace('\n', " ");
        match self.entries.iter_mut().find(|(kk, _)| kk == k) {
            Some(e) => e.1 = v,
            None => self.entries.push((k.to_string(), v)),
        }
    }

    /// Value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }

    /// The file text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.entries {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// Parse the file text (`#` comments and blank lines allowed).
    pub fn parse(text: &str, path: &Path) -> Result<Meta> {
        let mut m = Meta::default();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                return Err(Error::Parse {
                    path: path.into(),
                    line: i + 1,
                    what: "expected key=value".into(),
                });
            };
            m.entries.push((k.trim().to_string(), v.to_string()));
        }
        Ok(m)
    }

    /// Read `<dir>/meta.txt`.
    pub fn read(dir: &Path) -> Result<Meta> {
        let p = dir.join("meta.txt");
        Meta::parse(&sys::read_text(&p)?, &p)
    }
}

/// Seconds since the epoch → `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Size of `commit` in header_page: the kernel's long size (trace-cmd reads it the same way).
pub fn long_size_from_header_page(text: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.contains(" commit;"))?;
    let size = line
        .split(';')
        .find_map(|p| p.trim().strip_prefix("size:"))?;
    size.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn meta_round_trip_and_errors() {
        let mut m = Meta::default();
        m.set("page_size", 4096);
        m.set("uname", "Linux x\n6.18");
        m.set("page_size", 8192);
        let t = m.to_text();
        assert_eq!(t, "page_size=8192\nuname=Linux x 6.18\n");
        assert_eq!(Meta::parse(&t, Path::new("m")).unwrap(), m);
        let e = Meta::parse("a=1\nbad\n", Path::new("m"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "m: line 2: expected key=value");
    }

    #[test]
    fn long_size() {
        let hp = "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n";
        assert_eq!(long_size_from_header_page(hp), Some(8));
    }
}
