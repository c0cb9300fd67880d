//! What decoding binary records needs, owned per input: event formats, the
//! pid → comm table, kallsyms and the printk format table.


use std::cell::Cell;

use ftrace::format::{EventFormat, Events, FieldKind, FieldValue, Kallsyms, PrintkFormats};
use ftrace::printfmt::RenderCtx;
use ftrace::Endian;

use crate::clock::OffsetWrite;
use crate::event::{Body, Record};
use crate::time::{HostTsc, VcpuId};

pub use ftrace::pidmap::{PidHasher, PidMap};

/// What [`Meta::record`] found for a pid.
#[derive(Clone, Copy, Debug, Default)]
struct PidInfo<'a> {
    pid: i32,
    tgid: Option<i32>,
    /// `None` until the comm is known: then it is looked up again.
    comm: Option<&'a str>,
}

/// Pids a cursor's records lately had, direct-mapped by the low bits: a
/// CPU runs a few tasks in turn (a guest vCPU's tasks switch every few
/// events), and each lookup of tgid and comm costs two or three hash
/// probes. A comm once known never changes ([`Meta::comm`]), so an entry
/// with its comm stays true.
#[derive(Debug, Default)]
pub struct PidCache<'a>([Cell<PidInfo<'a>>; PID_SLOTS]);

const PID_SLOTS: usize = 16;

/// Where `common_pid` sits in the records of one event id.
#[derive(Clone, Copy)]
struct PidField {
    offset: u32,
    size: u8,
    signed: bool,
}

pub struct Meta {
    pub events: Events,
    pub comms: PidMap<String>,
    pub tgids: PidMap<i32>,
    pub kallsyms: Option<Kallsyms>,
    pub printk: Option<PrintkFormats>,
    pub endian: Endian,
    pub long_size: u8,
    /// What trace-cmd's plugins learn while rendering (function indents, comms).
    pub tracecmd: ftrace::printfmt::TraceCmdState,
    /// trace-cmd's plugins apply (default); `false` renders as `trace-cmd
    /// report -N`.
    pub plugins: bool,
    /// The id of kvm/kvm_write_tsc_offset in this input, when it has the format.
    pub write_tsc_offset: Option<u16>,
    /// What `tscmerge record` stored beside the events (its private options).
    pub recorded: Option<RecordedFacts>,
    /// `common_pid` per event id (dense), filled by `add_format`.
    pid_fields: Vec<Option<PidField>>,
}

/// Private trace.dat option ids written by `tscmerge record`
/// (crates/record/src/todat.rs documents them; trace-cmd skips them).
pub mod record_opt {
    pub const RECORD_META: u16 = 0x7f00;
    pub const PROCESSES: u16 = 0x7f01;
    pub const KVM_DEBUGFS: u16 = 0x7f02;
    pub const TSC_HZ: u16 = 0x7f03;
}

/// Facts `tscmerge record` wrote into a trace.dat as private options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedFacts {
    /// `kvm_debugfs.txt` lines (`taken_at_tsc reason vm_dir pid vcpu tsc_offset ratio|- frac|-`).
    pub kvm_debugfs: Vec<String>,
    /// TSC frequency in Hz, and where the recorder got it (`perf_mmap`, `cpuinfo_mhz`).
    pub tsc_hz: Option<u64>,
    pub tsc_hz_source: Option<String>,
    /// The recording's `meta.txt` (`key=value`): date, uname, start/stop TSC, ...
    pub meta: Vec<(String, String)>,
}

impl RecordedFacts {
    /// The debugfs lines as one `kvm_debugfs.txt` text.
    pub fn kvm_debugfs_text(&self) -> String {
        self.kvm_debugfs.iter().map(|l| format!("{l}\n")).collect()
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn option_text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end])
}

impl Meta {
    pub fn new(endian: Endian, long_size: u8) -> Meta {
        Meta {
            events: Events::new(),
            comms: PidMap::default(),
            tgids: PidMap::default(),
            kallsyms: None,
            printk: None,
            endian,
            long_size,
            tracecmd: Default::default(),
            plugins: true,
            write_tsc_offset: None,
            recorded: None,
            pid_fields: Vec::new(),
        }
    }

    /// Reads one of `tscmerge record`'s private options; other ids are ignored.
    /// `processes.txt` fills pid → tgid (so offsets group by VMM process) and
    /// comms the cmdlines lack.
    pub fn add_record_option(&mut self, id: u16, data: &[u8]) {
        let text = option_text(data);
        let facts = match id {
            record_opt::RECORD_META..=record_opt::TSC_HZ => self.recorded.get_or_insert_with(RecordedFacts::default),
            _ => return,
        };
        match id {
            record_opt::RECORD_META => {
                facts.meta = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .collect();
            }
            record_opt::KVM_DEBUGFS => {
                facts.kvm_debugfs = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
            }
            record_opt::TSC_HZ => {
                let mut it = text.split_whitespace();
                facts.tsc_hz = it.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v >= 1.0 && *v < 1e13).map(|v| v as u64);
                facts.tsc_hz_source = it.next().map(str::to_string);
            }
            _ => {
                // PROCESSES: `pid tgid|- comm|-`.
                for line in text.lines() {
                    let mut it = line.split_whitespace();
                    let Some(Ok(pid)) = it.next().map(str::parse::<i32>) else { continue };
                    if let Some(Ok(tgid)) = it.next().map(str::parse::<i32>) {
                        self.tgids.entry(pid).or_insert(tgid);
                    }
                    if let Some(comm) = it.next().filter(|c| *c != "-") {
                        self.comms.entry(pid).or_insert_with(|| comm.to_string());
                    }
                }
            }
        }
    }

    /// Adds one format file; a malformed one is skipped (its events then
    /// print as unknown), since one bad format must not hide the others.
    pub fn add_format(&mut self, system: &str, text: &[u8]) {
        if let Ok(f) = EventFormat::parse(system, text) {
            if f.system == "kvm" && f.name == "kvm_write_tsc_offset" {
                self.write_tsc_offset = Some(f.id);
            }
            let id = f.id as usize;
            if self.pid_fields.len() <= id {
                self.pid_fields.resize(id + 1, None);
            }
            self.pid_fields[id] = f.field("common_pid").filter(|p| p.kind == FieldKind::Int && matches!(p.size, 1 | 2 | 4 | 8)).map(|p| PidField {
                offset: p.offset,
                size: p.size as u8,
                signed: p.signed,
            });
            self.events.add(f);
        }
    }

    /// `saved_cmdlines` text: `pid comm` per line.
    pub fn add_cmdlines(&mut self, text: &[u8]) {
        for line in String::from_utf8_lossy(text).lines() {
            if let Some((pid, comm)) = line.trim_start().split_once(' ') {
                if let Ok(pid) = pid.parse() {
                    self.comms.insert(pid, comm.trim_end().to_string());
                }
            }
        }
    }

    /// `saved_tgids` text: `pid tgid` per line.
    pub fn add_tgids(&mut self, text: &[u8]) {
        for line in String::from_utf8_lossy(text).lines() {
            let mut it = line.split_whitespace();
            if let (Some(Ok(pid)), Some(Ok(tgid))) = (it.next().map(str::parse), it.next().map(str::parse)) {
                self.tgids.insert(pid, tgid);
            }
        }
    }

    pub fn ctx(&self, cpu: u32) -> RenderCtx<'_> {
        RenderCtx {
            endian: self.endian,
            long_size: self.long_size,
            cpu,
            kallsyms: self.kallsyms.as_ref(),
            printk: self.printk.as_ref(),
            state: Some(&self.tracecmd),
            plugins: self.plugins,
        }
    }

    /// `common_pid` of a record (offset 4 in every format since 2.6.x, but
    /// read through the format to stay honest).
    pub fn pid(&self, format: &EventFormat, rec: &[u8]) -> i32 {
        if let Some(&Some(p)) = self.pid_fields.get(format.id as usize) {
            return self.pid_in(p, rec);
        }
        match format.field("common_pid").and_then(|f| f.value(rec, self.endian)) {
            Some(FieldValue::Signed(v)) => v as i32,
            Some(FieldValue::Unsigned(v)) => v as i32,
            _ => -1,
        }
    }

    /// `common_pid` of a record of a known format (by its `common_type`),
    /// as [`pid`](Self::pid) reads it; `None` for an unknown type.
    pub fn record_pid(&self, rec: &[u8]) -> Option<i32> {
        self.record_type_pid(rec).map(|(_, pid)| pid)
    }

    /// The record's `common_type` and [`record_pid`](Self::record_pid), the
    /// type read once.
    #[inline]
    pub fn record_type_pid(&self, rec: &[u8]) -> Option<(u16, i32)> {
        let id = Events::common_type(rec, self.endian)?;
        let pid = match self.pid_fields.get(id as usize) {
            Some(&Some(p)) => self.pid_in(p, rec),
            _ => self.pid(self.events.by_id(id)?, rec),
        };
        Some((id, pid))
    }

    /// Per type id (from 0), where [`record_pid`](Self::record_pid) reads
    /// `common_pid` as the 32 bits of the kernel's `int pid`: its offset in
    /// the record (a record too short to hold it reads pid -1); `None`
    /// where it reads otherwise. Ids past the end have no such field.
    pub fn pid_offsets(&self) -> impl Iterator<Item = Option<u32>> + '_ {
        self.pid_fields.iter().map(|p| p.filter(|p| p.size == 4).map(|p| p.offset))
    }

    #[inline]
    fn pid_in(&self, p: PidField, rec: &[u8]) -> i32 {
        let at = p.offset as usize;
        if p.size == 4 {
            // The kernel's `int pid` (struct trace_entry): 32 bits need no
            // sign extension to become an i32, whatever `signed` says.
            return match rec.get(at..at + 4) {
                Some(&[a, b, c, d]) => self.endian.u32([a, b, c, d]) as i32,
                _ => -1,
            };
        }
        let Some(b) = rec.get(at..at + p.size as usize) else { return -1 };
        let Some(v) = self.endian.uint(b) else { return -1 };
        let bits = 8 * p.size as u32;
        // As FieldValue: sign-extended when signed, else zero-extended; then `as i32`.
        if p.signed && bits < 64 {
            (((v << (64 - bits)) as i64) >> (64 - bits)) as i32
        } else {
            v as i32
        }
    }

    pub fn comm(&self, pid: i32) -> &str {
        self.known_comm(pid).unwrap_or("<...>")
    }

    /// The comm of `pid` when known. Once known it never changes: cmdlines
    /// are fixed and learned comms are never overwritten.
    fn known_comm(&self, pid: i32) -> Option<&str> {
        if pid == 0 {
            return Some("<idle>");
        }
        match self.comms.get(&pid) {
            Some(c) => Some(c),
            None => self.tracecmd.comm(pid),
        }
    }

    /// The record of one event as sinks see it: format, pid, tgid, comm and
    /// the undecoded body; a record of an unknown type prints as such.
    /// `cache` keeps the tgid and comm of the cursor's recent pids, so they
    /// are looked up once per pid, not per record.
    pub fn record<'a, 'm: 'a>(&'m self, data: &'a [u8], ctx: &'a RenderCtx<'a>, cache: &PidCache<'m>) -> Record<'a> {
        match Events::common_type(data, self.endian).and_then(|id| self.events.by_id(id)) {
            Some(f) => {
                let pid = self.pid(f, data);
                let slot = &cache.0[pid as u32 as usize % PID_SLOTS];
                let mut info = slot.get();
                if info.comm.is_none() || info.pid != pid {
                    info = PidInfo { pid, tgid: self.tgids.get(&pid).copied(), comm: self.known_comm(pid) };
                    slot.set(info);
                }
                Record {
                    pid,
                    tgid: info.tgid,
                    comm: info.comm.unwrap_or("<...>"),
                    system: &f.system,
                    name: &f.name,
                    body: Body::Raw { format: f, data, ctx },
                }
            }
            None => Record { pid: -1, tgid: None, comm: "<...>", system: "", name: "unknown", body: Body::Text("[record of unknown type]") },
        }
    }

    fn uint(&self, format: &EventFormat, rec: &[u8], name: &str) -> Option<u64> {
        match format.field(name)?.value(rec, self.endian)? {
            FieldValue::Unsigned(v) => Some(v),
            FieldValue::Signed(v) => Some(v as u64),
            _ => None,
        }
    }

    /// Whether the input defines kvm:kvm_write_tsc_offset at all.
    pub fn has_offset_writes(&self) -> bool {
        self.write_tsc_offset.is_some()
    }

    /// Whether the file says buffer `name` (`""`: the top level) traced no
    /// kvm:kvm_write_tsc_offset: `tscmerge record` lists each buffer's
    /// events (`buffer_events.NAME`, globs expanded). Files that do not
    /// say, and lists with anything but plain `system:event` names, may
    /// hold some.
    pub fn lacks_offset_writes(&self, buffer: &str) -> bool {
        let key = format!("buffer_events.{buffer}");
        let Some(list) = self.recorded.as_ref().and_then(|f| f.meta(&key)) else { return false };
        !list.split(',').map(str::trim).any(|e| e == "kvm:kvm_write_tsc_offset" || e.contains(['*', '?', '[']) || !e.contains(':'))
    }

    /// Decodes a kvm_write_tsc_offset record.
    pub fn offset_write(&self, rec: &[u8], ts: u64, cpu: u32) -> Option<OffsetWrite> {
        let id = self.write_tsc_offset?;
        if Events::common_type(rec, self.endian)? != id {
            return None;
        }
        let f = self.events.by_id(id)?;
        let pid = self.pid(f, rec);
        Some(OffsetWrite {
            ts: HostTsc(ts),
            host_cpu: cpu,
            pid,
            tgid: self.tgids.get(&pid).copied(),
            vcpu: VcpuId(self.uint(f, rec, "vcpu_id")? as u32),
            prev: self.uint(f, rec, "previous_tsc_offset")?,
            next: self.uint(f, rec, "next_tsc_offset")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_meta(text: &str) -> Meta {
        let mut m = Meta::new(Endian::Little, 8);
        m.add_record_option(record_opt::RECORD_META, text.as_bytes());
        m
    }

    #[test]
    fn only_plain_lists_without_the_event_skip_a_buffer() {
        let m = with_meta("format=tscmerge-raw 1\nbuffer_events.=sched:sched_switch,kvm:kvm_exit\nbuffer_events.tsc_offset=kvm:kvm_write_tsc_offset\nbuffer_events.a=kvm:*\nbuffer_events.b=kvm\nbuffer_events.c=\n");
        assert!(m.lacks_offset_writes(""));
        assert!(!m.lacks_offset_writes("tsc_offset"));
        assert!(!m.lacks_offset_writes("a"), "a glob may hold it");
        assert!(!m.lacks_offset_writes("b"), "a whole system may hold it");
        assert!(!m.lacks_offset_writes("c"), "an empty name says nothing");
        assert!(!m.lacks_offset_writes("other"), "no list: scan");
        assert!(!Meta::new(Endian::Little, 8).lacks_offset_writes(""), "no record option: scan");
    }
}
