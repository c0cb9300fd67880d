//! trace.dat output (`--format dat`): version 7, zstd, for `trace-cmd
//! report` and KernelShark. The host is the top-level buffer, each guest an
//! instance named after it; every timestamp is on the host timeline (host
//! TSC, clock `x86-tsc`).
//!
//! How events are encoded:
//! - A binary record (`Body::Raw`) keeps its bytes; only `common_type` is
//!   rewritten to the id its format has in the output (ids are per file, and
//!   host and guests number their events differently). Formats are shared
//!   by (system, name) when their field layouts are equal; a record whose
//!   format clashes with one already written, or that comes from a machine
//!   of another byte order or long size, or that is `ftrace/bprint` (its
//!   text needs the source's printk table), is encoded as text (below).
//! - A text event becomes a binary record when its format is known here:
//!   `sched/sched_switch`, `sched/sched_waking` and `kvm/kvm_write_tsc_offset`,
//!   built from the `key=value` pairs with the kernel's layout (format files
//!   of Linux 6.18 on x86-64, kept in this file).
//! - Any other text event gets a format of our own in system `tscmerge`,
//!   named as the event, with one field `__data_loc char[] text` and print
//!   fmt `"%s"`: trace-cmd and KernelShark show the event under its own name
//!   with the recorder's text as body.
//! - Lost events set the missed-events flag (and count) of the next page.
//!
//! Private options (ids from `option_id::PRIVATE_FIRST`, skipped by
//! trace-cmd): `PRIVATE_FIRST` = provenance of one guest (JSON: guest name,
//! files, VM, VMM pid, offset periods per vCPU), one option per guest;
//! `PRIVATE_FIRST + 1` = the machine name of each buffer, `buffer=name` lines.
//!
//! Two writers share that encoding:
//! - [`write_pages`] (`merge --format dat`): a trace.dat keeps each CPU's
//!   events apart, so no k-way merge is needed: each output CPU is written
//!   in turn from the input CPUs that map to it, straight into the file.
//!   Binary pages that need only new event ids and one time shift are
//!   copied whole, other records in runs with one delta rewritten per run
//!   (crate::source::pages); the metadata (formats, comms),
//!   known only at the end, is written after the data (v7 sections are
//!   found through the options' offsets).
//! - [`DatSink`], fed by the merge (`merge --format dat --check`, where the
//!   check needs merged order): trace.dat wants each buffer's CPUs one after
//!   the other, so pages are spooled to one anonymous temp file per
//!   (machine, CPU) and copied into the output in [`Sink::finish`].
//!
//! Both refuse a CPU whose host times would go back (ring-buffer deltas are
//! unsigned; it means offsets or scaling that do not fit the guest). The
//! output is written under a temporary name and renamed into place once
//! complete.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ftrace::format::{EventFormat, Field, FieldKind};
use ftrace::write::{option_id, BufferId, Compression, Header, OptionData, PageBuilder, TraceDatWriter};
use ftrace::pidmap::{PidBuildHasher, PidMap};
use ftrace::Endian;
use safefs::AtomicFile;

use crate::event::{Body, EventView, Payload, Record};
use crate::merge::Sink;
use crate::{Error, Result};

/// Where a guest's times came from, recorded in the output.
#[derive(Clone, Debug)]
pub struct MachineProvenance {
    pub name: String,
    /// A JSON object (the caller decides its fields).
    pub json: String,
}

/// What a merged trace.dat says besides its events: each guest's provenance
/// (private options) and options trace-cmd knows (the host-guest ones:
/// TRACEID, GUEST, TSC2NSEC), written after VERSION in the order given.
#[derive(Clone, Debug, Default)]
pub struct DatMeta {
    pub provenance: Vec<MachineProvenance>,
    pub options: Vec<OptionData>,
}

impl From<Vec<MachineProvenance>> for DatMeta {
    fn from(provenance: Vec<MachineProvenance>) -> Self {
        DatMeta { provenance, options: Vec::new() }
    }
}

const PAGE_SIZE: usize = 4096;
const LONG_SIZE: u8 = 8;
/// Text bodies longer than this are cut (an event must fit one page).
const MAX_TEXT: usize = 3000;

/// `events/header_page` and `events/header_event` of x86-64 (Linux 6.18).
const HEADER_PAGE: &str = "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n";
const HEADER_EVENT: &str = "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n\ttime_stamp : type == 31\n\tdata max type_len  == 28\n";

const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n";

/// The formats this sink can build records for from text (kernel/trace and
/// include/trace/events/sched.h, arch/x86/kvm/trace.h, as tracefs prints them on 6.18).
const SCHED_SWITCH_FIELDS: &str = "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;\n";
const SCHED_SWITCH_FMT: &str = "\"prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s next_pid=%d next_prio=%d\", REC->prev_comm, REC->prev_pid, REC->prev_prio, (REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1)) ? __print_flags(REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1), \"|\", { 0x00000001, \"S\" }, { 0x00000002, \"D\" }, { 0x00000004, \"T\" }, { 0x00000008, \"t\" }, { 0x00000010, \"X\" }, { 0x00000020, \"Z\" }, { 0x00000040, \"P\" }, { 0x00000080, \"I\" }) : \"R\", REC->prev_state & (((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) ? \"+\" : \"\", REC->next_comm, REC->next_pid, REC->next_prio";
const SCHED_WAKING_FIELDS: &str = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\tfield:int target_cpu;\toffset:32;\tsize:4;\tsigned:1;\n";
const SCHED_WAKING_FMT: &str = "\"comm=%s pid=%d prio=%d target_cpu=%03d\", REC->comm, REC->pid, REC->prio, REC->target_cpu";
const WRITE_TSC_FIELDS: &str = "\tfield:unsigned int vcpu_id;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:__u64 previous_tsc_offset;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__u64 next_tsc_offset;\toffset:24;\tsize:8;\tsigned:0;\n";
const WRITE_TSC_FMT: &str = "\"vcpu=%u prev=%llu next=%llu\", REC->vcpu_id, REC->previous_tsc_offset, REC->next_tsc_offset";
const TEXT_FIELDS: &str = "\tfield:__data_loc char[] text;\toffset:8;\tsize:4;\tsigned:0;\n";
const TEXT_FMT: &str = "\"%s\", __get_str(text)";

/// A tracefs format file for `name` with `fields` after the common ones.
fn format_text(name: &str, id: u16, fields: &str, print_fmt: &str) -> String {
    format!("name: {name}\nID: {id}\nformat:\n{COMMON}\n{fields}\nprint fmt: {print_fmt}\n")
}

/// One field's declaration as a format file writes it (inverse of
/// ftrace's `parse_field_line`).
fn field_decl(f: &Field) -> String {
    match f.kind {
        FieldKind::Str => {
            if f.size == 0 {
                format!("{} {}[]", f.type_name, f.name)
            } else {
                format!("{} {}[{}]", f.type_name, f.name, f.size)
            }
        }
        FieldKind::Array { count } if count > 0 => format!("{} {}[{count}]", f.type_name, f.name),
        FieldKind::Array { .. } => format!("{} {}[]", f.type_name, f.name),
        _ => format!("{} {}", f.type_name, f.name),
    }
}

/// A format file equivalent to `f` (layout and print fmt), with id `id`.
pub fn rebuild_format(f: &EventFormat, id: u16) -> String {
    let mut common = String::new();
    let mut own = String::new();
    for fl in &f.fields {
        let line = format!(
            "\tfield:{};\toffset:{};\tsize:{};\tsigned:{};\n",
            field_decl(fl),
            fl.offset,
            fl.size,
            fl.signed as u8
        );
        if fl.is_common() { common.push_str(&line) } else { own.push_str(&line) }
    }
    format!("name: {}\nID: {id}\nformat:\n{common}\n{own}\nprint fmt: {}\n", f.name, f.print_fmt)
}

type Layout = Vec<(String, u32, u32, bool)>;

fn layout(fields: &[Field]) -> Layout {
    fields.iter().map(|f| (f.name.clone(), f.offset, f.size, f.signed)).collect()
}

/// A format written to the output.
struct OutFormat {
    system: String,
    text: String,
    layout: Layout,
}

/// Pages of one (machine, CPU), spooled to an anonymous temp file.
struct Spool {
    pages: PageBuilder,
    file: BufWriter<File>,
    count: u64,
    /// The latest time written.
    last: u64,
}

/// How records of one source format are written.
#[derive(Clone, Copy)]
enum Route {
    Raw(u16),
    AsText,
}

/// Turns events into output records: the output's formats, the route of
/// each source format, and the comms seen per machine.
struct Encoder {
    formats: Vec<OutFormat>,
    by_name: HashMap<(String, String), u16>,
    /// Source format (by address: formats live as long as their inputs) → route.
    routes: HashMap<(usize, usize), Route, PidBuildHasher>,
    comms: Vec<PidMap<String>>,
    /// [`Encoder::known`]'s answers by system and name.
    known_ids: HashMap<&'static str, HashMap<String, Option<u16>>>,
    /// The record last encoded.
    rec: Vec<u8>,
    text: Vec<u8>,
    /// Events written, and those encoded from text (for the caller's summary).
    counts: (u64, u64),
    /// Pages written by [`write_pages`].
    pages: PageCounts,
    dest: PathBuf,
    machines: Vec<String>,
}

pub struct DatSink {
    dest: PathBuf,
    machines: Vec<String>,
    provenance: DatMeta,
    compression: Compression,
    enc: Encoder,
    /// Spools in creation order, found by (machine, cpu) through `spool_at`.
    spools: Vec<((usize, u32), Spool)>,
    spool_at: HashMap<(usize, u32), usize, PidBuildHasher>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// First id given to an output format (below: none; trace-cmd takes any u16).
const FIRST_ID: u16 = 1;

impl DatSink {
    /// A sink that will write `dest` (through a temporary file) in `finish`.
    /// `machines[0]` is the host.
    pub fn create(dest: &Path, machines: Vec<String>, provenance: impl Into<DatMeta>) -> Result<DatSink> {
        let provenance = provenance.into();
        let enc = Encoder::new(dest, &machines);
        Ok(DatSink {
            dest: dest.to_path_buf(),
            machines,
            provenance,
            compression: Compression::Zstd,
            enc,
            spools: Vec::new(),
            spool_at: HashMap::default(),
        })
    }

    /// The output's compression (zstd unless set).
    pub fn with_compression(mut self, compression: Compression) -> DatSink {
        self.compression = compression;
        self
    }

    /// Events written, and those of them encoded from text.
    pub fn counts(&self) -> (u64, u64) {
        self.enc.counts
    }
}

impl Encoder {
    fn new(dest: &Path, machines: &[String]) -> Encoder {
        Encoder {
            formats: Vec::new(),
            by_name: HashMap::new(),
            routes: HashMap::default(),
            comms: vec![PidMap::default(); machines.len()],
            known_ids: HashMap::new(),
            rec: Vec::with_capacity(256),
            text: Vec::with_capacity(256),
            counts: (0, 0),
            pages: PageCounts::default(),
            dest: dest.to_path_buf(),
            machines: machines.to_vec(),
        }
    }

    fn id_of(&self, idx: usize) -> u16 {
        FIRST_ID + idx as u16
    }

    /// The output id for (system, name) with `layout`, registering the
    /// format made by `make(id)` if new; `None` on a layout clash.
    fn register(&mut self, system: &str, name: &str, lay: Layout, make: impl FnOnce(u16) -> String) -> Option<u16> {
        if let Some(&id) = self.by_name.get(&(system.to_string(), name.to_string())) {
            let f = &self.formats[(id - FIRST_ID) as usize];
            return (f.layout == lay).then_some(id);
        }
        if self.formats.len() >= (u16::MAX - FIRST_ID) as usize {
            return None;
        }
        let id = self.id_of(self.formats.len());
        self.formats.push(OutFormat { system: system.to_string(), text: make(id), layout: lay });
        self.by_name.insert((system.to_string(), name.to_string()), id);
        Some(id)
    }

    /// The output id of one of our own formats (`fields` and `fmt` fixed
    /// per (system, name)); looked up once, then cached.
    fn known(&mut self, system: &'static str, name: &str, fields: &str, fmt: &str) -> Option<u16> {
        if let Some(&id) = self.known_ids.get(system).and_then(|m| m.get(name)) {
            return id;
        }
        let id = self.known_uncached(system, name, fields, fmt);
        self.known_ids.entry(system).or_default().insert(name.to_string(), id);
        id
    }

    fn known_uncached(&mut self, system: &str, name: &str, fields: &str, fmt: &str) -> Option<u16> {
        // Parse our own text to get the layout exactly as a reader sees it.
        let text = format_text(name, 0, fields, fmt);
        let f = EventFormat::parse(system, text.as_bytes()).ok()?;
        self.register(system, name, layout(&f.fields), |id| format_text(name, id, fields, fmt))
    }

    fn route(&mut self, machine: usize, format: &EventFormat, ctx: &ftrace::printfmt::RenderCtx<'_>) -> Route {
        let key = (machine, format as *const EventFormat as usize);
        if let Some(&r) = self.routes.get(&key) {
            return r;
        }
        let r = if ctx.endian != Endian::Little || ctx.long_size != LONG_SIZE || (format.system == "ftrace" && format.name == "bprint") {
            Route::AsText
        } else {
            match self.register(&format.system, &format.name, layout(&format.fields), |id| rebuild_format(format, id)) {
                Some(id) => Route::Raw(id),
                None => Route::AsText,
            }
        };
        self.routes.insert(key, r);
        r
    }

    /// Common header of a record we build: type, flags 0, preempt 0, pid.
    fn start_rec(&mut self, id: u16, pid: i32) {
        self.rec.clear();
        self.rec.extend_from_slice(&id.to_le_bytes());
        self.rec.extend_from_slice(&[0, 0]);
        self.rec.extend_from_slice(&pid.to_le_bytes());
    }

    fn put_comm(&mut self, s: &str) {
        let mut b = [0u8; 16];
        let n = s.len().min(15);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.rec.extend_from_slice(&b);
    }

    /// Builds a binary record for a text event of a known format.
    fn encode_known_text(&mut self, r: &Record<'_>, body: &str) -> Option<()> {
        use ftrace::text::field;
        let int = |k: &str| field(body, k).and_then(|v| v.parse::<i64>().ok());
        match r.name {
            "sched_switch" => {
                let (pc, nc) = (field(body, "prev_comm")?, field(body, "next_comm")?);
                let (pp, pr, np, nr) = (int("prev_pid")?, int("prev_prio")?, int("next_pid")?, int("next_prio")?);
                let st = super::prev_state_bits(field(body, "prev_state")?);
                let id = self.known("sched", "sched_switch", SCHED_SWITCH_FIELDS, SCHED_SWITCH_FMT)?;
                self.start_rec(id, r.pid);
                self.put_comm(pc);
                self.rec.extend_from_slice(&(pp as i32).to_le_bytes());
                self.rec.extend_from_slice(&(pr as i32).to_le_bytes());
                self.rec.extend_from_slice(&st.to_le_bytes());
                self.put_comm(nc);
                self.rec.extend_from_slice(&(np as i32).to_le_bytes());
                self.rec.extend_from_slice(&(nr as i32).to_le_bytes());
            }
            "sched_waking" => {
                let c = field(body, "comm")?;
                let (p, pr, t) = (int("pid")?, int("prio")?, int("target_cpu")?);
                let id = self.known("sched", "sched_waking", SCHED_WAKING_FIELDS, SCHED_WAKING_FMT)?;
                self.start_rec(id, r.pid);
                self.put_comm(c);
                for v in [p, pr, t] {
                    self.rec.extend_from_slice(&(v as i32).to_le_bytes());
                }
            }
            "kvm_write_tsc_offset" => {
                let w = ftrace::text::parse_write_tsc_offset(body)?;
                let id = self.known("kvm", "kvm_write_tsc_offset", WRITE_TSC_FIELDS, WRITE_TSC_FMT)?;
                self.start_rec(id, r.pid);
                self.rec.extend_from_slice(&w.vcpu.to_le_bytes());
                self.rec.extend_from_slice(&[0; 4]);
                self.rec.extend_from_slice(&w.prev.to_le_bytes());
                self.rec.extend_from_slice(&w.next.to_le_bytes());
            }
            _ => return None,
        }
        Some(())
    }

    /// A record of our `tscmerge` text format carrying `self.text`.
    fn encode_text(&mut self, r: &Record<'_>) -> Result<()> {
        let name = if r.name.is_empty() { "unknown" } else { r.name };
        let id = self
            .known("tscmerge", name, TEXT_FIELDS, TEXT_FMT)
            .ok_or_else(|| Error::Usage(format!("{}: more than 65000 event types", self.dest.display())))?;
        let cut = self.text.len().min(MAX_TEXT);
        // Cut on a character boundary.
        let len = match std::str::from_utf8(&self.text[..cut]) {
            Ok(_) => cut,
            Err(e) => e.valid_up_to(),
        };
        self.start_rec(id, r.pid);
        // __data_loc: (length << 16) | offset, the length counting the NUL.
        let loc = (((len + 1) as u32) << 16) | 12;
        self.rec.extend_from_slice(&loc.to_le_bytes());
        self.rec.extend_from_slice(&self.text[..len]);
        self.rec.push(0);
        Ok(())
    }

    /// Notes `pid`'s comm for `machine` (the first one seen stays).
    fn note_comm(&mut self, machine: usize, pid: i32, comm: &str) {
        if comm.is_empty() || comm == "<...>" {
            return;
        }
        if let Some(c) = self.comms.get_mut(machine) {
            c.entry(pid).or_insert_with(|| comm.to_string());
        }
    }

    /// Encodes one event's record into `self.rec`.
    fn encode(&mut self, machine: usize, r: &Record<'_>) -> Result<()> {
        self.note_comm(machine, r.pid, r.comm);
        let mut as_text = true;
        match r.body {
            Body::Raw { format, data, ctx } => {
                if let Route::Raw(id) = self.route(machine, format, ctx) {
                    as_text = !self.raw_record(data, id);
                }
                if as_text {
                    self.text.clear();
                    r.body.render(ftrace::printfmt::Style::TraceCmd, &mut self.text);
                }
            }
            Body::Rendered(b) => {
                self.text.clear();
                self.text.extend_from_slice(b);
            }
            Body::Text(t) => {
                if self.encode_known_text(r, t).is_some() {
                    as_text = false;
                } else {
                    self.text.clear();
                    self.text.extend_from_slice(t.as_bytes());
                }
            }
        }
        if as_text {
            self.encode_text(r)?;
            self.counts.1 += 1;
        }
        self.counts.0 += 1;
        Ok(())
    }

    /// A binary record kept as it is but for its output id, into `self.rec`;
    /// false for a record too short to hold `common_type`.
    fn raw_record(&mut self, data: &[u8], id: u16) -> bool {
        if data.len() < 2 {
            return false;
        }
        self.rec.clear();
        self.rec.extend_from_slice(data);
        self.rec[..2].copy_from_slice(&id.to_le_bytes());
        true
    }

    /// Moves `machine`'s `cpu` forward to `ts` (`last`: the latest time
    /// written to it), refusing a step back: a trace.dat CPU holds
    /// non-decreasing times (ring-buffer deltas are unsigned).
    fn forward(&self, machine: usize, cpu: u32, last: &mut u64, ts: u64) -> Result<()> {
        if ts < *last {
            let name = self.machines.get(machine).map_or("?", String::as_str);
            return Err(Error::Usage(format!(
                "{}: {name} cpu {cpu}: host time {ts} comes after {} in that CPU's order: the offsets (or the TSC scaling) do not fit this guest (tscmerge check shows where); a trace.dat CPU cannot go back in time",
                self.dest.display(),
                *last
            )));
        }
        *last = ts;
        Ok(())
    }

    /// The comms of every machine as a saved_cmdlines table: the host's
    /// win where a guest reuses a pid (one table per file).
    fn cmdlines(&self) -> String {
        let mut cmdlines = String::new();
        let mut seen = std::collections::HashSet::new();
        for comms in &self.comms {
            let mut v: Vec<_> = comms.iter().collect();
            v.sort();
            for (pid, comm) in v {
                if seen.insert(*pid) {
                    cmdlines.push_str(&format!("{pid} {comm}\n"));
                }
            }
        }
        cmdlines
    }

    /// The output's metadata, with `cmdlines` from [`cmdlines`](Self::cmdlines).
    fn header<'a>(&'a self, cmdlines: &'a str) -> Header<'a> {
        let ftrace_formats: Vec<&[u8]> = self.formats.iter().filter(|f| f.system == "ftrace").map(|f| f.text.as_bytes()).collect();
        let event_formats: Vec<(&str, &[u8])> =
            self.formats.iter().filter(|f| f.system != "ftrace").map(|f| (f.system.as_str(), f.text.as_bytes())).collect();
        Header {
            endian: Endian::Little,
            long_size: LONG_SIZE,
            page_size: PAGE_SIZE as u32,
            header_page: HEADER_PAGE.as_bytes(),
            header_event: HEADER_EVENT.as_bytes(),
            ftrace_formats,
            event_formats,
            kallsyms: None,
            printk: None,
            cmdlines: cmdlines.as_bytes(),
        }
    }
}

/// The output file under construction: written under an unguessable
/// temporary name beside `dest` ([`safefs::AtomicFile`], removed if never
/// committed), metadata last, renamed into place by [`Output::commit`].
struct Output {
    w: TraceDatWriter<BufWriter<AtomicFile>>,
    bufs: Vec<BufferId>,
}

impl Output {
    /// Creates the file with its options and one buffer per machine
    /// (`cpus[m]` CPUs each).
    fn create(dest: &Path, machines: &[String], meta: &DatMeta, cpus: &[u32], compression: Compression) -> Result<Output> {
        let f = AtomicFile::create(dest)?;
        let mut bufs = Vec::new();
        let mut w = TraceDatWriter::new_deferred(BufWriter::with_capacity(1 << 20, f), compression, Endian::Little, LONG_SIZE, PAGE_SIZE as u32)?;
        // One chunk = one zstd block (ZSTD_BLOCKSIZE_MAX, 128 KiB): fewer
        // per-block table builds than trace-cmd's 10 pages, a file no larger
        // (bench/README), and trace-cmd reads chunks of any size.
        w.set_chunk_pages(CHUNK_PAGES);
        w.add_option(OptionData::Version(format!("tscmerge {}", env!("CARGO_PKG_VERSION"))))?;
        for o in &meta.options {
            w.add_option(o.clone())?;
        }
        for p in &meta.provenance {
            let mut data = p.json.clone().into_bytes();
            data.push(0);
            w.add_option(OptionData::Raw { id: option_id::PRIVATE_FIRST, data })?;
        }
        let mut names = String::new();
        for (i, m) in machines.iter().enumerate() {
            names.push_str(&format!("{}={m}\n", if i == 0 { "" } else { m }));
        }
        names.push('\0');
        w.add_option(OptionData::Raw { id: option_id::PRIVATE_FIRST + 1, data: names.into_bytes() })?;
        for (m, name) in machines.iter().enumerate() {
            let b = w.add_buffer(if m == 0 { "" } else { name }, "x86-tsc", cpus.get(m).copied().unwrap_or(1).max(1))?;
            bufs.push(b);
        }
        Ok(Output { w, bufs })
    }

    fn writer(&mut self) -> &mut TraceDatWriter<BufWriter<AtomicFile>> {
        &mut self.w
    }

    fn writer_and_bufs(&mut self) -> (&mut TraceDatWriter<BufWriter<AtomicFile>>, &[BufferId]) {
        (&mut self.w, &self.bufs)
    }

    /// Writes the metadata, syncs and renames the file into place.
    fn commit(self, enc: &Encoder) -> Result<()> {
        let cmdlines = enc.cmdlines();
        let out = self.w.finish_with_metadata(&enc.header(&cmdlines))?;
        let path = out.get_ref().tmp_path().to_path_buf();
        let f = out.into_inner().map_err(|e| Error::Io { path, source: e.into_error() })?;
        Ok(f.commit()?)
    }
}

impl DatSink {
    /// The index in `spools` of (machine, cpu)'s spool, made on first use.
    fn spool(&mut self, machine: usize, cpu: u32) -> Result<usize> {
        let i = match self.spool_at.get(&(machine, cpu)) {
            Some(&i) => i,
            None => {
                let f = tempfile::tempfile().map_err(io_err(&self.dest))?;
                let pages = PageBuilder::new(Endian::Little, LONG_SIZE, PAGE_SIZE)?;
                self.spools.push(((machine, cpu), Spool { pages, file: BufWriter::with_capacity(1 << 16, f), count: 0, last: 0 }));
                self.spool_at.insert((machine, cpu), self.spools.len() - 1);
                self.spools.len() - 1
            }
        };
        Ok(i)
    }

    fn write_file(&mut self) -> Result<()> {
        // Per machine: CPUs seen (a buffer lists 0..=max).
        let mut cpus = vec![0u32; self.machines.len()];
        // Buffers list their CPUs in order.
        self.spools.sort_by_key(|(key, _)| *key);
        self.spool_at.clear();
        for &((m, c), _) in &self.spools {
            if let Some(n) = cpus.get_mut(m) {
                *n = (*n).max(c + 1);
            }
        }
        let mut out = Output::create(&self.dest, &self.machines, &self.provenance, &cpus, self.compression)?;
        for ((m, cpu), spool) in self.spools.iter_mut() {
            let (m, cpu) = (*m, *cpu);
            let file = spool.file.get_mut();
            file.seek(SeekFrom::Start(0)).map_err(io_err(&self.dest))?;
            let b = out.bufs[m];
            out.writer().write_cpu_data(b, cpu, &*file)?;
        }
        out.commit(&self.enc)
    }
}

/// `merge --format dat` without the k-way merge: a trace.dat keeps each
/// CPU's events apart, so each output CPU is written from the input CPUs that
/// map to it alone, straight into the output (no spool). Pages of binary
/// inputs that need no re-encoding are copied whole or in runs of records
/// ([`crate::source::pages`]); the rest is encoded event by event as the
/// merge-fed [`DatSink`] does. Within a CPU, several inputs (a host's
/// buffers) are interleaved by time with the merge's tie rule, so each CPU's
/// records come out as the merge would order them.
///
/// With `threads` ≥ 2 and a compressed output a second thread writes, and
/// both compress (the pages' thread takes a chunk when the writer lags).
/// Returns the events per merge cursor, as the merge counts them.
pub fn write_pages(
    dest: &Path,
    machines: Vec<String>,
    provenance: impl Into<DatMeta>,
    groups: Vec<crate::plan::PageGroup<'_>>,
    cursors: usize,
    threads: usize,
    compression: Compression,
) -> Result<(crate::merge::MergeStats, PageCounts)> {
    let mut cpus = vec![0u32; machines.len()];
    for g in &groups {
        if let Some(n) = cpus.get_mut(g.machine) {
            *n = (*n).max(g.cpu + 1);
        }
    }
    let mut out = Output::create(dest, &machines, &provenance.into(), &cpus, compression)?;
    let mut enc = Encoder::new(dest, &machines);
    let mut stats = crate::merge::MergeStats { per_input: vec![0; cursors], total: 0 };
    // Uncompressed, there is no work to share: pages go straight out.
    if threads < 2 || !compression.is_compressed() {
        let (w, bufs) = out.writer_and_bufs();
        let mut sink = |m: PageMsg<'_>| -> Result<()> {
            match m {
                PageMsg::Start(machine, cpu) => w.start_cpu(bufs[machine], cpu)?,
                PageMsg::Page(p) => w.write_page(p)?,
            }
            Ok(())
        };
        for g in groups {
            write_group(g, &mut enc, &mut stats, &mut sink)?;
        }
    } else {
        let (w, bufs) = out.writer_and_bufs();
        let bufs = bufs.to_vec();
        let chunk_bytes = w.chunk_bytes();
        let Some(mut zc) = w.chunk_compressor()? else {
            return Err(Error::Usage("the dat writer compresses".into()));
        };
        // Each CPU's pages are cut into the writer's chunks here and cross
        // to the writer thread raw, to be compressed there; when the writer
        // lags (the channel is full) this thread compresses the chunk
        // itself, so both cores compress as much as they must. Chunks are
        // cut as write_page cuts them: the file is the same either way.
        enum Msg {
            Start(usize, u32),
            Raw(Vec<u8>),
            Block(usize, Vec<u8>),
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(4);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|s| -> Result<()> {
            let writer = s.spawn(move || -> Result<()> {
                let mut zc = w.chunk_compressor()?.ok_or_else(|| Error::Usage("the dat writer compresses".into()))?;
                let mut z = Vec::new();
                for m in rx {
                    match m {
                        Msg::Start(machine, cpu) => w.start_cpu(bufs[machine], cpu)?,
                        Msg::Raw(chunk) => {
                            zc.compress(&chunk, &mut z)?;
                            w.write_chunk(chunk.len(), &z)?;
                            let _ = back_tx.send(chunk);
                        }
                        Msg::Block(raw, block) => {
                            w.write_chunk(raw, &block)?;
                            let _ = back_tx.send(block);
                        }
                    }
                }
                Ok(())
            });
            let mut chunk: Vec<u8> = Vec::with_capacity(chunk_bytes);
            let gone = || Error::Usage("the dat writer thread stopped".into());
            // Sends the filled chunk, raw or (writer busy) compressed here;
            // a returned buffer (or a new one) takes its place.
            let mut ship = |chunk: &mut Vec<u8>| -> Result<()> {
                match tx.try_send(Msg::Raw(std::mem::take(chunk))) {
                    Ok(()) => {
                        *chunk = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(chunk_bytes));
                        chunk.clear();
                        Ok(())
                    }
                    Err(std::sync::mpsc::TrySendError::Full(Msg::Raw(mut raw))) => {
                        let mut block = back_rx.try_recv().unwrap_or_default();
                        zc.compress(&raw, &mut block)?;
                        let n = raw.len();
                        raw.clear();
                        *chunk = raw;
                        tx.send(Msg::Block(n, block)).map_err(|_| gone())
                    }
                    Err(_) => Err(gone()),
                }
            };
            let produced = (|| -> Result<()> {
                for g in groups {
                    let mut sink = |m: PageMsg<'_>| -> Result<()> {
                        match m {
                            PageMsg::Start(machine, cpu) => {
                                if !chunk.is_empty() {
                                    ship(&mut chunk)?;
                                }
                                tx.send(Msg::Start(machine, cpu)).map_err(|_| gone())?;
                            }
                            PageMsg::Page(p) => {
                                chunk.extend_from_slice(p);
                                if chunk.len() >= chunk_bytes {
                                    ship(&mut chunk)?;
                                }
                            }
                        }
                        Ok(())
                    };
                    write_group(g, &mut enc, &mut stats, &mut sink)?;
                }
                if !chunk.is_empty() {
                    ship(&mut chunk)?;
                }
                Ok(())
            })();
            drop(tx);
            let written = writer.join().unwrap_or_else(|_| Err(gone()));
            // The writer's own error explains a producer's "stopped".
            written.and(produced)
        })?;
    }
    out.commit(&enc)?;
    Ok((stats, enc.pages))
}

/// Pages of a [`write_pages`] output: copied whole from an input, or built
/// (from runs of copied records and re-encoded events); and the events
/// re-encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub copied: u64,
    pub built: u64,
    pub encoded: u64,
}

/// Pages per compressed chunk of a merged trace.dat.
const CHUNK_PAGES: usize = 32;

/// What [`write_group`] hands on: a CPU starts, or one finished page.
enum PageMsg<'p> {
    Start(usize, u32),
    Page(&'p [u8]),
}

/// Writes one output CPU from its sources.
fn write_group(
    g: crate::plan::PageGroup<'_>,
    enc: &mut Encoder,
    stats: &mut crate::merge::MergeStats,
    out: &mut dyn FnMut(PageMsg<'_>) -> Result<()>,
) -> Result<()> {
    use crate::source::PageFeed;
    let machine = g.machine;
    out(PageMsg::Start(machine, g.cpu))?;
    let mut sources = g.sources;
    let mut pb = PageBuilder::new(Endian::Little, LONG_SIZE, PAGE_SIZE)?;
    // Pages handed on, and those of them copied whole.
    let mut emitted = 0u64;
    let mut copied = 0u64;
    // Events (and lost marks) that went through the encoder.
    let mut encoded = 0u64;
    let mut emit = |p: &[u8]| {
        emitted += 1;
        out(PageMsg::Page(p))
    };
    // The route of a source format for whole-page copies (raw records only).
    let route = |enc: &mut Encoder, f: &EventFormat, ctx: &ftrace::printfmt::RenderCtx<'_>| match enc.route(machine, f, ctx) {
        Route::Raw(id) => Some(id),
        Route::AsText => None,
    };
    for (_, feed) in sources.iter_mut() {
        if let PageFeed::Pages(p) = feed {
            p.start(&mut |f, ctx| route(enc, f, ctx))?;
        }
    }
    // The latest time written to this CPU.
    let mut last_out = 0u64;
    let ts = |f: &PageFeed<'_>| match f {
        PageFeed::Pages(p) => p.ts(),
        PageFeed::Events(c) => c.ts(),
    };
    loop {
        // The earliest source; ties to the first, as in the merge.
        let mut best: Option<(u64, usize)> = None;
        for (i, (_, f)) in sources.iter().enumerate() {
            if let Some(t) = ts(f) {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        // What source i may write before another source's next event: up
        // to it (ties go to the first source, as in the merge).
        let limit = sources
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(j, (_, f))| ts(f).map(|t| if j < i { t.saturating_sub(1) } else { t }))
            .min()
            .unwrap_or(u64::MAX);
        // A page goes whole when no other source has an event due inside it.
        // Times within a copied page rise (one shift); what comes next must
        // not go back before what is written.
        let whole = match &sources[i].1 {
            PageFeed::Pages(p) if !pb.missed_pending() => p.whole_page().is_some_and(|max| max <= limit),
            _ => false,
        };
        let (stat, feed) = &mut sources[i];
        let n = match feed {
            PageFeed::Pages(p) if whole => {
                // The page's first time must not go back; its last is where the CPU stands after.
                let first = p.ts().unwrap_or(last_out);
                enc.forward(machine, g.cpu, &mut last_out, first)?;
                flush(&mut pb, &mut emit)?;
                last_out = p.whole_page().unwrap_or(last_out);
                let marks = p.whole_page_marked() as u64;
                let n = p.take_whole(&mut |pid, c| enc.note_comm(machine, pid, c), &mut emit)?;
                enc.counts.0 += n;
                copied += 1;
                p.next_page(&mut |f, ctx| route(enc, f, ctx))?;
                n + marks
            }
            PageFeed::Pages(p) => {
                if let Some(first) = p.ts() {
                    enc.forward(machine, g.cpu, &mut last_out, first)?;
                }
                // Records that only need their ids, copied in runs: no decoding.
                let (n, last) = p.take_run(
                    limit,
                    &mut pb,
                    &mut |pid, c| enc.note_comm(machine, pid, c),
                    &mut emit,
                )?;
                if n > 0 {
                    p.refill(&mut |f, ctx| route(enc, f, ctx))?;
                    last_out = last;
                    enc.counts.0 += n;
                    n
                } else {
                    let Some(ev) = p.current() else { break };
                    let n = put_event(enc, machine, g.cpu, &ev, &mut last_out, &mut pb, &mut emit)?;
                    encoded += n;
                    p.advance(&mut |f, ctx| route(enc, f, ctx))?;
                    n
                }
            }
            PageFeed::Events(c) => {
                let Some(ev) = c.current() else { break };
                let n = put_event(enc, machine, g.cpu, &ev, &mut last_out, &mut pb, &mut emit)?;
                encoded += n;
                c.advance()?;
                n
            }
        };
        stats.per_input[*stat] += n;
        stats.total += n;
    }
    flush(&mut pb, &mut emit)?;
    enc.pages.copied += copied;
    enc.pages.built += emitted - copied;
    enc.pages.encoded += encoded;
    Ok(())
}

/// Hands the page being built to `emit` if it holds an event, and starts a
/// new one ([`PageBuilder::flush`] with this crate's errors).
fn flush(pb: &mut PageBuilder, emit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    if !pb.is_empty() {
        emit(pb.page())?;
    }
    pb.clear();
    Ok(())
}

/// Encodes one event (or a lost mark) into the page being built; returns 1
/// (the merge counts marks as events out too).
/// `last` is the latest time written to the CPU: an event before it is refused.
fn put_event(
    enc: &mut Encoder,
    machine: usize,
    cpu: u32,
    ev: &EventView<'_>,
    last: &mut u64,
    pb: &mut PageBuilder,
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    match &ev.payload {
        Payload::Lost { count } => {
            flush(pb, emit)?;
            pb.set_missed_events(*count);
            Ok(1)
        }
        Payload::Event(r) => {
            enc.forward(machine, cpu, last, ev.ts)?;
            enc.encode(machine, r)?;
            push(pb, ev.ts, &enc.rec, &enc.dest, emit)?;
            Ok(1)
        }
    }
}

/// Adds a record to the page being built, handing a full page to `emit`
/// first ([`PageBuilder::push`] with this crate's errors).
fn push(pb: &mut PageBuilder, ts: u64, rec: &[u8], dest: &Path, emit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    if !pb.try_push(ts, rec)? {
        emit(pb.page())?;
        pb.clear();
        if !pb.try_push(ts, rec)? {
            return Err(Error::Usage(format!("{}: an event does not fit an empty page", dest.display())));
        }
    }
    Ok(())
}

impl Sink for DatSink {
    fn event(&mut self, machine: usize, ev: &EventView<'_>) -> Result<()> {
        let r = match ev.payload {
            Payload::Lost { count } => {
                let i = self.spool(machine, ev.cpu)?;
                let Spool { pages, file, count: n, .. } = &mut self.spools[i].1;
                pages.flush(|p| {
                    *n += 1;
                    file.write_all(p).map_err(|e| ftrace::Error::Io { what: "spooling pages".into(), source: e })
                })?;
                pages.set_missed_events(count);
                return Ok(());
            }
            Payload::Event(r) => r,
        };
        self.enc.encode(machine, &r)?;
        let i = self.spool(machine, ev.cpu)?;
        let Spool { pages, file, count, last } = &mut self.spools[i].1;
        self.enc.forward(machine, ev.cpu, last, ev.ts)?;
        let rec = std::mem::take(&mut self.enc.rec);
        let res = pages.push(ev.ts, &rec, |p| {
            *count += 1;
            file.write_all(p).map_err(|e| ftrace::Error::Io { what: "spooling pages".into(), source: e })
        });
        self.enc.rec = rec;
        res.map_err(Error::from)
    }

    fn finish(&mut self) -> Result<()> {
        for (_, sp) in self.spools.iter_mut() {
            let Spool { pages, file, count, .. } = sp;
            pages.flush(|p| {
                *count += 1;
                file.write_all(p).map_err(|e| ftrace::Error::Io { what: "spooling pages".into(), source: e })
            })?;
            file.flush().map_err(|source| Error::Io { path: "spool".into(), source })?;
        }
        self.write_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_formats_parse_and_rebuild() {
        for (sys, name, fields, fmt) in [
            ("sched", "sched_switch", SCHED_SWITCH_FIELDS, SCHED_SWITCH_FMT),
            ("sched", "sched_waking", SCHED_WAKING_FIELDS, SCHED_WAKING_FMT),
            ("kvm", "kvm_write_tsc_offset", WRITE_TSC_FIELDS, WRITE_TSC_FMT),
            ("tscmerge", "x", TEXT_FIELDS, TEXT_FMT),
        ] {
            let text = format_text(name, 7, fields, fmt);
            let f = EventFormat::parse(sys, text.as_bytes()).unwrap();
            assert_eq!(f.id, 7);
            assert!(f.fields.len() > 4, "{name}");
            let again = EventFormat::parse(sys, rebuild_format(&f, 7).as_bytes()).unwrap();
            assert_eq!(again.fields, f.fields);
            assert_eq!(again.print_fmt, f.print_fmt);
        }
    }

    #[test]
    fn real_formats_rebuild_to_the_same_layout() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ftrace/tests/data/formats");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("format") {
                continue;
            }
            let f = EventFormat::parse("x", &std::fs::read(&p).unwrap()).unwrap();
            let again = EventFormat::parse("x", rebuild_format(&f, f.id).as_bytes()).unwrap();
            assert_eq!(again.fields, f.fields, "{}", p.display());
            assert_eq!(again.print_fmt, f.print_fmt, "{}", p.display());
            n += 1;
        }
        assert!(n > 3);
    }
}
