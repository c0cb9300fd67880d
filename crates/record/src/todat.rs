//! Raw recording directory ([`crate::rawdir`]) → one trace.dat (v7) through
//! `ftrace::write`: the last step of `tscmerge record`.
//!
//! Every instance becomes a buffer, named as [`ToDat::names`] says (`""` is the
//! top-level buffer, as `trace-cmd record -B` lays files out) or after the
//! instance. Metadata: header_page/header_event, every copied format,
//! printk formats, kallsyms (when recorded), saved_cmdlines; options TRACECLOCK,
//! CPUCOUNT, UNAME, VERSION, CPUSTAT (trace-cmd's layout: the first buffer's
//! CPUs, then a `Buffer: NAME` separator and the next buffer's), and our own
//! options (ids from `ftrace::write::option_id::PRIVATE_FIRST`, which trace-cmd
//! skips: see `ftrace/src/write/mod.rs`):
//!
//! | id | [`opt`] | content (UTF-8 text) |
//! |---|---|---|
//! | 0x7f00 | `RECORD_META` | `meta.txt` of the recording, `key=value` lines, plus `buffer_events.NAME=sys:event,...` per buffer |
//! | 0x7f01 | `PROCESSES`   | `processes.txt`: `pid tgid comm` lines (`-` when unknown) |
//! | 0x7f02 | `KVM_DEBUGFS` | `kvm_debugfs.txt` lines (format in [`crate::kvm`]) |
//! | 0x7f03 | `TSC_HZ`      | one line `<hz> <source>` (source `perf_mmap`/`cpuinfo_mhz`) |
//!
//! trace-cmd's host-guest options: TSC2NSEC from the perf page's
//! `time_mult`/`time_shift` that the recorder noted (`tsc_mult`, `tsc_shift`
//! in meta.txt), as trace-record.c `get_tsc_nsec` takes them, else (no
//! `cap_user_time`, where trace-cmd writes none) from the frequency noted, so
//! `trace-cmd report` prints seconds as for its own recordings (`--raw-ts`
//! shows the counts; tscmerge matches on the raw counts whatever the option
//! says); and
//! whatever [`ToDat::options`] holds (TRACEID, GUEST: the caller knows the
//! session). Deliberately absent: DATE, which trace-cmd adds (µs) to every
//! timestamp (trace-input.c `handle_options`); the date is in our options.
//!
//! A directory whose capture did not end cleanly still converts: `cpuN.raw.part`
//! is used when `cpuN.raw` is absent, and a trailing partial page is dropped.

use crate::error::{Error, Result};
use crate::rawdir::Meta;
use crate::sys;
use ftrace::write::{hostguest, option_id, Compression, Header, OptionData, TraceDatWriter};
use ftrace::Endian;
use std::fs;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

/// Our private option ids.
pub mod opt {
    use ftrace::write::option_id::PRIVATE_FIRST;
    /// `meta.txt` text.
    pub const RECORD_META: u16 = PRIVATE_FIRST;
    /// `processes.txt` text: pid → tgid, comm.
    pub const PROCESSES: u16 = PRIVATE_FIRST + 1;
    /// `kvm_debugfs.txt` text.
    pub const KVM_DEBUGFS: u16 = PRIVATE_FIRST + 2;
    /// `<hz> <source>`.
    pub const TSC_HZ: u16 = PRIVATE_FIRST + 3;
}

/// How to convert.
#[derive(Debug, Clone)]
pub struct ToDat {
    /// (instance, buffer name in the file); `""` makes it the top-level
    /// buffer, written first. Instances not listed keep their name.
    pub names: Vec<(String, String)>,
    /// Codec (v7).
    pub compression: Compression,
    /// More options, written after ours (trace-cmd's TRACEID, GUEST).
    pub options: Vec<OptionData>,
}

impl Default for ToDat {
    fn default() -> Self {
        ToDat {
            names: Vec::new(),
            compression: Compression::Zstd,
            options: Vec::new(),
        }
    }
}

/// What was written, per buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDatBuffer {
    /// Name in the file (`""` for the top level).
    pub name: String,
    /// The instance it came from.
    pub instance: String,
    /// Pages written.
    pub pages: u64,
    /// Partial trailing bytes dropped (an unclean stop).
    pub dropped_bytes: u64,
}

fn write_err(path: &Path) -> impl FnOnce(ftrace::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A side file of the raw directory, `None` when absent; FIFOs, devices
/// and files over [`safefs::SIDE_FILE_CAP`] refused with an error naming it.
fn read_opt(p: &Path) -> Result<Option<Vec<u8>>> {
    Ok(safefs::read_capped_opt(p, safefs::SIDE_FILE_CAP, "a side file of a raw capture directory")?)
}

/// A small text side file, `""` when absent (the callers' default).
fn read_text_opt(p: &Path) -> Result<String> {
    Ok(read_opt(p)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
}

fn parse_field<T: std::str::FromStr>(meta: &Meta, k: &str, path: &Path) -> Result<T> {
    meta.get(k)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Parse {
            path: path.join("meta.txt"),
            line: 0,
            what: format!("missing or bad `{k}`"),
        })
}

/// `events/<system>/<name>/format` files below `raw`, sorted: (system, bytes).
fn formats(raw: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let ev = raw.join("events");
    let mut out = Vec::new();
    let Ok(systems) = fs::read_dir(&ev) else {
        return Ok(out);
    };
    let mut systems: Vec<_> = systems.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    systems.sort();
    for s in systems {
        let sys = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut names: Vec<_> = fs::read_dir(&s)
            .map_err(|e| Error::io("listing", &s, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("format"))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for f in names {
            out.push((
                sys.clone(),
                sys::read_bytes(&f)?,
            ));
        }
    }
    Ok(out)
}

/// `cpuN.raw` (or `.part`) files of an instance directory: (cpu, path).
fn cpu_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut v: Vec<(u32, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let e = e.map_err(|e| Error::io("listing", dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("cpu") else {
            continue;
        };
        let (num, part) = match (rest.strip_suffix(".raw"), rest.strip_suffix(".raw.part")) {
            (Some(n), _) => (n, false),
            (_, Some(n)) => (n, true),
            _ => continue,
        };
        let Ok(cpu) = num.parse::<u32>() else {
            continue;
        };
        match v.iter_mut().find(|(c, _)| *c == cpu) {
            // A finished file wins over a partial one.
            Some(slot) if !part => slot.1 = e.path(),
            Some(_) => {}
            None => v.push((cpu, e.path())),
        }
    }
    v.sort();
    Ok(v)
}

/// `stats` of an instance (`cpuN key=value ...` lines) as trace-cmd's CPUSTAT
/// text (`CPU: N` then the kernel's `per_cpu/cpuN/stats` names).
fn cpustat_texts(stats: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stats.lines() {
        let mut it = line.split_whitespace();
        let Some(cpu) = it.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        let mut s = format!("CPU: {cpu}\n");
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let k = match k {
                "entries" => "entries",
                "overrun" => "overrun",
                "commit_overrun" => "commit overrun",
                "dropped_events" => "dropped events",
                "read_events" => "read events",
                _ => continue,
            };
            s.push_str(&format!("{k}: {v}\n"));
        }
        out.push(s);
    }
    out
}

/// Convert `raw` into `out`, written under an unguessable temporary name
/// beside it ([`safefs::AtomicFile`]), renamed into place when complete and
/// removed on error.
pub fn convert(raw: &Path, out: &Path, cfg: &ToDat) -> Result<Vec<ToDatBuffer>> {
    let file = safefs::AtomicFile::create(out)?;
    let (done, file) = convert_to(raw, out, file, cfg)?;
    file.commit()?;
    Ok(done)
}

fn convert_to(raw: &Path, out: &Path, file: safefs::AtomicFile, cfg: &ToDat) -> Result<(Vec<ToDatBuffer>, safefs::AtomicFile)> {
    let meta = Meta::read(raw)?;
    let page_size: u32 = parse_field(&meta, "page_size", raw)?;
    let long_size: u8 = parse_field(&meta, "long_size", raw)?;
    let cpus: u32 = parse_field(&meta, "cpus", raw)?;
    let endian = match meta.get("endian") {
        Some("big") => Endian::Big,
        _ => Endian::Little,
    };
    let instances: Vec<String> = meta
        .get("instances")
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let need = |name: &str| -> Result<Vec<u8>> {
        let p = raw.join(name);
        sys::read_bytes(&p)
    };
    let header_page = need("header_page")?;
    let header_event = need("header_event")?;
    let printk = read_opt(&raw.join("printk_formats"))?;
    let kallsyms = read_opt(&raw.join("kallsyms"))?;
    let cmdlines = read_opt(&raw.join("saved_cmdlines"))?.unwrap_or_default();
    let formats = formats(raw)?;
    let header = Header {
        endian,
        long_size,
        page_size,
        header_page: &header_page,
        header_event: &header_event,
        ftrace_formats: formats
            .iter()
            .filter(|(s, _)| s == "ftrace")
            .map(|(_, f)| f.as_slice())
            .collect(),
        event_formats: formats
            .iter()
            .filter(|(s, _)| s != "ftrace")
            .map(|(s, f)| (s.as_str(), f.as_slice()))
            .collect(),
        kallsyms: kallsyms.as_deref(),
        printk: printk.as_deref(),
        cmdlines: &cmdlines,
    };
    let mut w = TraceDatWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        7,
        cfg.compression,
        &header,
    )
    .map_err(write_err(out))?;

    let file_name = |inst: &str| -> String {
        cfg.names
            .iter()
            .find(|(i, _)| i == inst)
            .map_or_else(|| inst.to_string(), |(_, n)| n.clone())
    };
    // Top buffer first, then the others in recording order.
    let mut order: Vec<&String> = instances.iter().collect();
    order.sort_by_key(|n| !file_name(n).is_empty());

    let first_clock = order
        .first()
        .map(|i| read_text_opt(&raw.join(i).join("trace_clock")))
        .transpose()?
        .unwrap_or_default();
    let first_clock = first_clock.trim();
    let opts = [
        OptionData::TraceClock(if first_clock.is_empty() {
            "local".into()
        } else {
            first_clock.into()
        }),
        OptionData::CpuCount(cpus),
        OptionData::Uname(meta.get("uname").unwrap_or("").into()),
        OptionData::Version(format!("tscmerge record {}", env!("CARGO_PKG_VERSION"))),
    ];
    for o in opts {
        w.add_option(o).map_err(write_err(out))?;
    }
    for (k, inst) in order.iter().enumerate() {
        if k > 0 {
            w.add_option(OptionData::CpuStat(format!(
                "\nBuffer: {}\n\n",
                file_name(inst)
            )))
            .map_err(write_err(out))?;
        }
        let stats = read_text_opt(&raw.join(inst).join("stats"))?;
        for s in cpustat_texts(&stats) {
            w.add_option(OptionData::CpuStat(s))
                .map_err(write_err(out))?;
        }
    }
    let raw_opt = |id: u16, data: Vec<u8>| OptionData::Raw { id, data };
    // Each instance's events keyed by its buffer's name in the file
    // (`buffer_events.` + name; the top level's name is empty), which is
    // what a reader of the file sees.
    let mut meta = meta;
    for inst in &order {
        if let Some(evs) = meta.get(&format!("events.{inst}")).map(str::to_string) {
            meta.set(&format!("buffer_events.{}", file_name(inst)), evs);
        }
    }
    w.add_option(raw_opt(opt::RECORD_META, meta.to_text().into_bytes()))
        .map_err(write_err(out))?;
    if let Some(p) = read_opt(&raw.join("processes.txt"))? {
        w.add_option(raw_opt(opt::PROCESSES, p))
            .map_err(write_err(out))?;
    }
    if let Some(k) = read_opt(&raw.join("kvm_debugfs.txt"))? {
        w.add_option(raw_opt(opt::KVM_DEBUGFS, k))
            .map_err(write_err(out))?;
    }
    if let (Some(hz), Some(src)) = (meta.get("tsc_hz"), meta.get("tsc_hz_source")) {
        w.add_option(raw_opt(opt::TSC_HZ, format!("{hz} {src}\n").into_bytes()))
            .map_err(write_err(out))?;
    }
    let num = |k: &str| meta.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let tsc2nsec = match (num("tsc_mult").filter(|&m| m != 0 && m <= u64::from(u32::MAX)), num("tsc_shift")) {
        (Some(mult), Some(shift)) => Some(hostguest::tsc2nsec_from_perf(mult as u32, shift as u16)),
        // No perf pair (no cap_user_time, as in a PVM guest): from the
        // frequency noted (cpuinfo), where trace-cmd would write none.
        _ => num("tsc_hz").filter(|&hz| hz >= 1_000_000).map(|hz| hostguest::tsc2nsec_from_khz(hz / 1000)),
    };
    if let Some(o) = tsc2nsec.filter(|_| first_clock.contains("[x86-tsc]") || first_clock == "x86-tsc") {
        w.add_option(o).map_err(write_err(out))?;
    }
    for o in &cfg.options {
        w.add_option(o.clone()).map_err(write_err(out))?;
    }

    let mut ids = Vec::new();
    for inst in &order {
        let clock = read_text_opt(&raw.join(inst).join("trace_clock"))?;
        let clock = if clock.trim().is_empty() {
            "local"
        } else {
            clock.trim()
        };
        ids.push(
            w.add_buffer(&file_name(inst), clock, cpus)
                .map_err(write_err(out))?,
        );
    }
    let mut done = Vec::new();
    for (inst, id) in order.iter().zip(ids) {
        let mut pages = 0;
        let mut dropped = 0;
        for (cpu, path) in cpu_files(&raw.join(inst))? {
            if cpu >= cpus {
                continue;
            }
            let md = fs::metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
            // A FIFO or device here would be read until it ends (never, for /dev/zero).
            safefs::refuse_special_input(&path, &md)?;
            let len = md.len();
            let whole = len - len % u64::from(page_size);
            dropped += len - whole;
            let f = fs::File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
            pages += w
                .write_cpu_data(id, cpu, std::io::BufReader::new(f).take(whole))
                .map_err(write_err(&path))?;
        }
        done.push(ToDatBuffer {
            name: file_name(inst),
            instance: inst.to_string(),
            pages,
            dropped_bytes: dropped,
        });
    }
    let bw = w.finish().map_err(write_err(out))?;
    let f = bw
        .into_inner()
        .map_err(|e| Error::io("flushing", out, e.into_error()))?;
    Ok((done, f))
}

/// The private option ids are in trace-cmd-ignored space.
const _: () = assert!(opt::RECORD_META >= option_id::PRIVATE_FIRST);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpustat_text_matches_trace_cmd_names() {
        let t = cpustat_texts("cpu1 bytes=8192 pages=2 entries=0 overrun=3 dropped_events=4 commit_overrun=5 read_events=77\n");
        assert_eq!(
            t,
            ["CPU: 1\nentries: 0\noverrun: 3\ndropped events: 4\ncommit overrun: 5\nread events: 77\n"]
        );
    }

    /// Side files that are devices or FIFOs are refused by type, naming the
    /// file, and no output (nor temporary) is left (issue 20, item 1).
    #[test]
    fn special_side_files_refused() {
        let base = std::env::temp_dir().join(format!("record-todat-special-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for (i, side) in ["meta.txt", "header_page", "printk_formats"].iter().enumerate() {
            let raw = base.join(format!("raw{i}"));
            fs::create_dir_all(&raw).unwrap();
            fs::write(raw.join("meta.txt"), "page_size=4096\nlong_size=8\ncpus=1\ninstances=\n").unwrap();
            fs::write(raw.join("header_page"), "x").unwrap();
            fs::write(raw.join("header_event"), "x").unwrap();
            let _ = fs::remove_file(raw.join(side));
            std::os::unix::fs::symlink("/dev/zero", raw.join(side)).unwrap();
            let out = base.join(format!("out{i}.dat"));
            let e = convert(&raw, &out, &ToDat::default()).unwrap_err().to_string();
            assert!(e.contains(side) && e.contains("character device"), "{e}");
            assert!(!out.exists());
        }
        let left: Vec<_> = fs::read_dir(&base).unwrap().map(|e| e.unwrap().file_name()).filter(|n| !n.to_string_lossy().starts_with("raw")).collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
