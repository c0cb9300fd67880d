//! trace-cmd's `trace.dat`, versions 6 and 7, read from a whole mapped file.
//!
//! Pipeline position: sources stage, above [`crate::ring`]. [`TraceDat::parse`]
//! reads the metadata (headers, formats, kallsyms, printk, cmdlines, options,
//! buffers) and checks every offset; the flyrecord data stay in the file and
//! are read page by page through [`PageStream`] and [`CpuEvents`].
//!
//! Layouts (trace-cmd Documentation/trace-cmd/trace-cmd.dat.v6.5.txt and
//! .v7.5.txt; behaviour from lib/trace-cmd/trace-input.c):
//! ```text
//! v6: magic "\x17\x08\x44tracing" "6\0" endian long page_size
//!     header_info ftrace_formats event_formats kallsyms printk cmdlines
//!     u32 cpus ["options  \0" {u16 id, u32 size, data}* u16 0]
//!     "flyrecord\0" {u64 offset, u64 size}*cpus [u64 n, trace_clock text]
//! v7: magic "7\0" endian long page_size "codec\0version\0" u64 first_options
//!     sections anywhere: {u16 id, u16 flags, u32 desc, u64 size, body}
//!     options sections chained by their DONE option's u64 next offset
//! ```
//! Compressed v7 sections hold `u32 csize, u32 usize, frame`; compressed
//! flyrecord data hold `u32 chunks` then per chunk `u32 csize, u32 usize, frame`.
//! Offsets inside a decompressed section are reported as the section's file
//! offset plus the position in the decompressed bytes.

mod compress;
pub mod options;
mod stream;
pub mod time;

pub use compress::{Codec, MAX_BLOCK};
pub use options::{Guest, TimeShift, TimeShiftCpu, TimeShiftSample, TraceOption};
pub use stream::{CpuEvents, PageStream, READ_BLOCK};

use crate::budget::Reservation;
use crate::ring::PageLayout;
use crate::{Endian, Error, FileOffset, Reader, Result};
use compress::Inflater;
use options::id;
use std::borrow::Cow;
use std::ops::Range;

const MAGIC: &[u8; 10] = b"\x17\x08\x44tracing";
/// Bound on sections visited in the options chain and the strings scan, so a
/// forged chain cannot loop for long.
const MAX_SECTIONS: usize = 4096;
/// Bound on the trace_clock text following a v6 flyrecord table.
const MAX_CLOCK_TEXT: u64 = 1 << 16;
/// v7 section flag: the body is compressed.
const SEC_COMPRESSED: u16 = 1;

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Ring-buffer pages per CPU.
    Flyrecord,
    /// Latency-tracer text (`trace` file contents); one pseudo-CPU entry.
    Latency,
}

/// Where one CPU's data lives. For compressed v7 data, `size` is the
/// compressed size of the chunk stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferCpu {
    pub cpu: u32,
    pub offset: FileOffset,
    pub size: u64,
}

/// A trace buffer: the top level (`name` "") or an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub name: String,
    /// The trace clock, when the file says (TRACECLOCK option / trace_clock
    /// text for the top level; the BUFFER option or, in v6, the text after
    /// the instance's CPU table for instances).
    pub clock: Option<String>,
    pub page_size: u32,
    pub cpus: Vec<BufferCpu>,
    pub kind: BufferKind,
    /// CPU data are compressed chunks (v7).
    pub compressed: bool,
}

/// A v7 section found by scanning the file from the end of its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub id: u16,
    pub flags: u16,
    pub offset: FileOffset,
    /// Size in the file (compressed size when compressed).
    pub size: u64,
    pub description: Option<String>,
}

/// A range of one of the parsed bodies: the file itself (body 0) or a
/// decompressed section.
#[derive(Clone, Copy, Debug)]
struct Blob {
    body: usize,
    start: usize,
    end: usize,
}

/// What a metadata section gives, found with its body borrowed.
enum Found {
    Headers(Blob, Blob),
    Ftrace(Vec<Blob>),
    Events(Vec<(Blob, Blob)>),
    One(Blob),
}

/// A parsed trace.dat. Metadata are borrowed from the file or, for
/// compressed v7 sections, owned.
pub struct TraceDat<'d> {
    data: &'d [u8],
    version: u32,
    endian: Endian,
    long_size: u8,
    page_size: u32,
    compression: Option<(String, String)>,
    codec: Codec,
    bodies: Vec<Cow<'d, [u8]>>,
    /// The inflated bodies' shares of the memory budget, by body index.
    held: Vec<(usize, Reservation)>,
    header_page: Option<Blob>,
    header_event: Option<Blob>,
    ftrace: Vec<Blob>,
    events: Vec<(Blob, Blob)>,
    kallsyms: Option<Blob>,
    printk: Option<Blob>,
    cmdlines: Option<Blob>,
    options: Vec<TraceOption>,
    buffers: Vec<Buffer>,
    sections: Vec<Section>,
    /// v6: the CPU count of the header, before any CPUCOUNT option.
    header_cpus: Option<u32>,
    /// v6 with a TRACECLOCK option: the trace_clock text after the CPU
    /// table, as trace-cmd reads it (`None` when unreadable).
    v6_clock: Option<Option<String>>,
    /// v7: where the options chain ends (see [`OptionsTail`]).
    options_tail: Option<OptionsTail>,
}

/// The end of a v7 file's options chain: the DONE option whose next-section
/// offset is 0. Options are appended by writing a new options section and
/// pointing that offset at it, as trace-cmd appends options to a finished
/// file (trace-output.c `tracecmd_append_options`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionsTail {
    /// File offset of the DONE option's u64 (`None` when its section is
    /// compressed: the value is inside a compressed block).
    pub link_at: Option<u64>,
    /// The string id of that section's description ("options"), reusable
    /// for a section appended after it.
    pub description: u32,
}

impl std::fmt::Debug for TraceDat<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceDat")
            .field("version", &self.version)
            .field("endian", &self.endian)
            .field("long_size", &self.long_size)
            .field("page_size", &self.page_size)
            .field("compression", &self.compression)
            .field("options", &self.options.len())
            .field("buffers", &self.buffers)
            .finish()
    }
}

fn take(r: &mut Reader<'_>, n: u64, what: &'static str) -> Result<Range<usize>> {
    let s = r.pos();
    r.skip(n, what)?;
    Ok(s..r.pos())
}

fn magic_str<'a>(r: &mut Reader<'a>, want: &[u8], what: &'static str) -> Result<()> {
    let at = r.offset();
    let got = r.bytes(want.len() as u64, what)?;
    if got != want {
        return Err(Error::invalid(at, format!("expected {what} {:?}, found {:?}", String::from_utf8_lossy(want), String::from_utf8_lossy(got))));
    }
    Ok(())
}

/// Section contents, as ranges into the body they were read from.
mod content {
    use super::*;

    pub fn header_info(r: &mut Reader<'_>) -> Result<(Range<usize>, Range<usize>)> {
        magic_str(r, b"header_page\0", "header_page tag")?;
        let n = r.u64("header_page size")?;
        let page = take(r, n, "header_page")?;
        magic_str(r, b"header_event\0", "header_event tag")?;
        let n = r.u64("header_event size")?;
        let event = take(r, n, "header_event")?;
        Ok((page, event))
    }

    pub fn ftrace(r: &mut Reader<'_>) -> Result<Vec<Range<usize>>> {
        let count = r.u32("ftrace format count")?;
        let mut v = Vec::new();
        for _ in 0..count {
            let n = r.u64("ftrace format size")?;
            v.push(take(r, n, "ftrace format")?);
        }
        Ok(v)
    }

    pub fn events(r: &mut Reader<'_>) -> Result<Vec<(Range<usize>, Range<usize>)>> {
        let systems = r.u32("event system count")?;
        let mut v = Vec::new();
        for _ in 0..systems {
            let at = r.offset();
            let s0 = r.pos();
            let name = r.cstr("event system name")?;
            if std::str::from_utf8(name).is_err() {
                return Err(Error::invalid(at, "event system name is not UTF-8"));
            }
            let sys = s0..s0 + name.len();
            let count = r.u32("event format count")?;
            for _ in 0..count {
                let n = r.u64("event format size")?;
                v.push((sys.clone(), take(r, n, "event format")?));
            }
        }
        Ok(v)
    }

    pub fn sized32(r: &mut Reader<'_>, what: &'static str) -> Result<Range<usize>> {
        let n = r.u32(what)?;
        take(r, n as u64, what)
    }

    pub fn sized64(r: &mut Reader<'_>, what: &'static str) -> Result<Range<usize>> {
        let n = r.u64(what)?;
        take(r, n, what)
    }
}

impl<'d> TraceDat<'d> {
    /// Parses a whole trace.dat held in memory (usually a mapping).
    pub fn parse(data: &'d [u8]) -> Result<TraceDat<'d>> {
        let mut r = Reader::new(data, Endian::Little, 0);
        let magic = r.bytes(10, "trace.dat magic")?;
        if magic != MAGIC {
            return Err(Error::invalid(0, "not a trace.dat file (bad magic)"));
        }
        let vat = r.offset();
        let vstr = r.cstr("trace.dat version")?;
        let version: u32 = std::str::from_utf8(vstr)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::invalid(vat, format!("trace.dat version {:?} is not a number", String::from_utf8_lossy(vstr))))?;
        if version != 6 && version != 7 {
            return Err(Error::invalid(vat, format!("unsupported trace.dat version {version} (expected 6 or 7)")));
        }
        let eat = r.offset();
        let endian = match r.u8("endian flag")? {
            0 => Endian::Little,
            1 => Endian::Big,
            e => return Err(Error::invalid(eat, format!("endian flag {e} (expected 0 or 1)"))),
        };
        r.set_endian(endian);
        let lat = r.offset();
        let long_size = r.u8("long size")?;
        if long_size != 4 && long_size != 8 {
            return Err(Error::invalid(lat, format!("long size {long_size} (expected 4 or 8)")));
        }
        let pat = r.offset();
        let page_size = r.u32("page size")?;
        if !(64..=(1 << 24)).contains(&page_size) {
            return Err(Error::invalid(pat, format!("page size {page_size} out of range")));
        }
        let mut t = TraceDat {
            data,
            version,
            endian,
            long_size,
            page_size,
            compression: None,
            codec: Codec::None,
            bodies: vec![Cow::Borrowed(data)],
            held: Vec::new(),
            header_page: None,
            header_event: None,
            ftrace: Vec::new(),
            events: Vec::new(),
            kallsyms: None,
            printk: None,
            cmdlines: None,
            options: Vec::new(),
            buffers: Vec::new(),
            sections: Vec::new(),
            header_cpus: None,
            v6_clock: None,
            options_tail: None,
        };
        if version == 6 {
            t.parse_v6(r)?;
        } else {
            t.parse_v7(r)?;
        }
        Ok(t)
    }

    fn file_blob(r: Range<usize>) -> Blob {
        Blob { body: 0, start: r.start, end: r.end }
    }

    fn v6_options(&mut self, r: &mut Reader<'d>) -> Result<()> {
        loop {
            let opt = r.u16("option id")?;
            if opt == id::DONE {
                return Ok(());
            }
            let size = r.u32("option size")?;
            let data_at = r.offset();
            let data = r.bytes(size as u64, "option data")?;
            self.options.push(options::parse(opt, data, self.endian, data_at)?);
        }
    }

    /// A v6 flyrecord/latency block at `r`: the 10-byte tag, then the CPU
    /// table and the optional trace_clock text.
    fn v6_buffer(&self, r: &mut Reader<'d>, name: String, cpus: u32, with_clock: bool) -> Result<Buffer> {
        self.v6_buffer_clock(r, name, cpus, with_clock).map(|(b, _)| b)
    }

    /// [`Self::v6_buffer`] and the trace_clock text read after it.
    fn v6_buffer_clock(&self, r: &mut Reader<'d>, name: String, cpus: u32, with_clock: bool) -> Result<(Buffer, Option<String>)> {
        let at = r.offset();
        let tag = r.bytes(10, "flyrecord/latency tag")?;
        if tag.starts_with(b"latency") {
            let off = r.offset();
            let size = r.remaining() as u64;
            let b = Buffer {
                name,
                clock: None,
                page_size: self.page_size,
                cpus: vec![BufferCpu { cpu: 0, offset: FileOffset(off), size }],
                kind: BufferKind::Latency,
                compressed: false,
            };
            return Ok((b, None));
        }
        if tag != b"flyrecord\0" {
            return Err(Error::invalid(at, format!("expected \"flyrecord\\0\" or \"latency  \\0\", found {:?}", String::from_utf8_lossy(tag))));
        }
        if cpus as u64 * 16 > r.remaining() as u64 {
            return Err(Error::Truncated { offset: r.offset(), needed: cpus as u64 * 16, what: "flyrecord CPU table" });
        }
        let mut v = Vec::with_capacity(cpus as usize);
        for cpu in 0..cpus {
            let e = r.offset();
            let offset = r.u64("CPU data offset")?;
            let size = r.u64("CPU data size")?;
            let offset = self.check_range(e, offset, size)?;
            v.push(BufferCpu { cpu, offset: FileOffset(offset), size });
        }
        // trace-input.c `init_data_v6`: the trace_clock file follows when the
        // TRACECLOCK option was given; a bad one means "unknown", not an error.
        let mut clock = None;
        let mut text = None;
        if with_clock {
            let mut c = r.clone();
            if let Ok(n) = c.u64("trace_clock size") {
                if n <= MAX_CLOCK_TEXT {
                    if let Ok(b) = c.bytes(n, "trace_clock") {
                        let t = options::text(b);
                        clock = options::current_clock(&t);
                        text = Some(t);
                    }
                }
            }
        }
        Ok((Buffer { name, clock, page_size: self.page_size, cpus: v, kind: BufferKind::Flyrecord, compressed: false }, text))
    }

    /// Checks a CPU's data range; returns the offset to keep. A CPU with no
    /// data may point anywhere, even past the end of the file: trace-cmd
    /// reads such a file (a v6 CPU with 0 bytes at an offset beyond the
    /// end: `cpus=1`, no events), so its offset is clamped, not refused.
    fn check_range(&self, at: u64, offset: u64, size: u64) -> Result<u64> {
        let len = self.data.len() as u64;
        match offset.checked_add(size) {
            _ if size == 0 => Ok(offset.min(len)),
            Some(end) if end <= len => Ok(offset),
            _ => Err(Error::invalid(at, format!("CPU data at {offset} of {size} bytes runs past the end of the file ({len} bytes)"))),
        }
    }

    fn parse_v6(&mut self, mut r: Reader<'d>) -> Result<()> {
        let (p, e) = content::header_info(&mut r)?;
        self.header_page = Some(Self::file_blob(p));
        self.header_event = Some(Self::file_blob(e));
        self.ftrace = content::ftrace(&mut r)?.into_iter().map(Self::file_blob).collect();
        self.events = content::events(&mut r)?.into_iter().map(|(s, f)| (Self::file_blob(s), Self::file_blob(f))).collect();
        self.kallsyms = Some(Self::file_blob(content::sized32(&mut r, "kallsyms")?));
        self.printk = Some(Self::file_blob(content::sized32(&mut r, "printk formats")?));
        self.cmdlines = Some(Self::file_blob(content::sized64(&mut r, "saved cmdlines")?));
        let mut cpus = r.u32("CPU count")?;
        self.header_cpus = Some(cpus);
        let at = r.offset();
        let tag = r.bytes(10, "options/flyrecord tag")?;
        if tag == b"options  \0" {
            self.v6_options(&mut r)?;
        } else {
            r.seek(at, "options/flyrecord tag")?;
        }
        // A CPUCOUNT option overrides the header count (trace-input.c).
        for o in &self.options {
            if let TraceOption::CpuCount(n) = o {
                cpus = *n;
            }
        }
        let with_clock = self.options.iter().any(|o| matches!(o, TraceOption::TraceClock(_)));
        let (mut top, text) = self.v6_buffer_clock(&mut r, String::new(), cpus, with_clock)?;
        if with_clock {
            self.v6_clock = Some(text);
        }
        if let Some(c) = self.option_clock() {
            top.clock = Some(c);
        }
        self.buffers.push(top);
        let instances: Vec<(String, FileOffset)> = self
            .options
            .iter()
            .filter_map(|o| match o {
                TraceOption::Buffer { name, offset } => Some((name.clone(), *offset)),
                _ => None,
            })
            .collect();
        for (name, off) in instances {
            let mut br = Reader::new(self.data, self.endian, 0);
            br.seek(off.0, "BUFFER option offset")?;
            let b = self.v6_buffer(&mut br, name, cpus, with_clock)?;
            self.buffers.push(b);
        }
        Ok(())
    }

    fn option_clock(&self) -> Option<String> {
        self.options.iter().rev().find_map(|o| match o {
            TraceOption::TraceClock(t) => options::current_clock(t),
            _ => None,
        })
    }

    /// Reads a v7 section header at `off`; returns (id, flags, desc, size,
    /// body file range).
    fn section_header(&self, off: u64, what: &'static str) -> Result<(u16, u16, u32, u64, Range<usize>)> {
        let mut r = Reader::new(self.data, self.endian, 0);
        r.seek(off, what)?;
        let id = r.u16("section id")?;
        let flags = r.u16("section flags")?;
        let desc = r.u32("section description id")?;
        let size_at = r.offset();
        let size = r.u64("section size")?;
        if size > r.remaining() as u64 {
            return Err(Error::invalid(
                size_at,
                format!("section size {size} runs past the end of the file ({} bytes left)", r.remaining()),
            ));
        }
        let start = r.pos();
        Ok((id, flags, desc, size, start..start + size as usize))
    }

    /// Inflates a compressed section body (`u32 csize, u32 usize, frame`);
    /// the bytes come with their share of the memory budget.
    fn inflate_body(&self, inf: &mut Inflater, body: Range<usize>) -> Result<(Vec<u8>, Reservation)> {
        let mut r = Reader::new(&self.data[body.clone()], self.endian, body.start as u64);
        let at = r.offset();
        let csize = r.u32("compressed size")?;
        let usize_ = r.u32("uncompressed size")?;
        let frame = r.bytes(csize as u64, "compressed section data")?;
        let mut out = Vec::new();
        let mut res = Reservation::default();
        inf.inflate(self.codec, frame, usize_, at, &mut out, &mut res)?;
        Ok((out, res))
    }

    /// Reads the section at `off`, which must have id `want`, as a body
    /// (borrowed or inflated); returns its index and the base offset for errors.
    /// A section is read once: options that point at one already read (a
    /// crafted file can point many KALLSYMS options at one 512 MiB section)
    /// share its body, found in `loaded` by file offset.
    fn load_section(&mut self, inf: &mut Inflater, loaded: &mut Vec<(u64, usize, u64)>, off: u64, want: u16) -> Result<(usize, u64)> {
        let (sid, flags, _, _, body) = self.section_header(off, "section offset")?;
        if sid != want {
            return Err(Error::invalid(off, format!("expected section id {want}, found {sid}")));
        }
        if let Some(&(_, bi, base)) = loaded.iter().find(|(o, _, _)| *o == off) {
            return Ok((bi, base));
        }
        let r = self.load_section_body(inf, flags, body)?;
        loaded.push((off, r.0, r.1));
        Ok(r)
    }

    fn load_section_body(&mut self, inf: &mut Inflater, flags: u16, body: Range<usize>) -> Result<(usize, u64)> {
        if flags & SEC_COMPRESSED != 0 {
            let (v, res) = self.inflate_body(inf, body.clone())?;
            self.bodies.push(Cow::Owned(v));
            self.held.push((self.bodies.len() - 1, res));
        } else {
            self.bodies.push(Cow::Borrowed(&self.data[body.clone()]));
        }
        Ok((self.bodies.len() - 1, body.start as u64))
    }

    fn parse_v7(&mut self, mut r: Reader<'d>) -> Result<()> {
        let name = String::from_utf8_lossy(r.cstr("compression name")?).into_owned();
        let ver = String::from_utf8_lossy(r.cstr("compression version")?).into_owned();
        self.codec = Codec::from_name(&name);
        self.compression = Some((name, ver));
        let first_at = r.offset();
        let first = r.u64("first options offset")?;
        let sections_start = r.offset();
        let mut inf = Inflater::default();
        let mut loaded = Vec::new();

        // The options chain. A visited list catches loops; MAX_SECTIONS
        // bounds the walk.
        let mut visited: Vec<u64> = Vec::new();
        let mut next = first;
        let mut next_at = first_at;
        let mut buffer_opts: Vec<(u16, Vec<u8>, u64)> = Vec::new();
        while next != 0 {
            if visited.contains(&next) {
                return Err(Error::invalid(next_at, format!("options chain loops back to the section at byte {next}")));
            }
            if visited.len() >= MAX_SECTIONS {
                return Err(Error::invalid(next_at, format!("options chain longer than {MAX_SECTIONS} sections")));
            }
            visited.push(next);
            let (bi, base) = self.load_section(&mut inf, &mut loaded, next, 0).map_err(|e| match e {
                Error::Invalid { offset, what } if offset == next => Error::invalid(next_at, format!("options section at byte {next}: {what}")),
                e => e,
            })?;
            // Options are parsed into owned values: the section's body
            // (borrowed or inflated) is read in place, not copied, and an
            // inflated one freed once read (nothing else refers to it:
            // another reference to this offset wants another section id).
            let body = std::mem::take(&mut self.bodies[bi]);
            self.held.retain(|(b, _)| *b != bi);
            let mut o = Reader::new(&body, self.endian, base);
            loop {
                if o.is_empty() {
                    return Err(Error::Truncated { offset: o.offset(), needed: 2, what: "DONE option ending the options section" });
                }
                let opt = o.u16("option id")?;
                let size = o.u32("option size")?;
                let data_at = o.offset();
                let data = o.bytes(size as u64, "option data")?;
                if opt == id::DONE {
                    let mut d = Reader::new(data, self.endian, data_at);
                    next = d.u64("DONE option: next options offset")?;
                    next_at = data_at;
                    if next == 0 {
                        // The section header at `visited.last()`: u16 id, u16 flags, u32 description.
                        let at = *visited.last().unwrap_or(&0) as usize;
                        let field = |o: usize, n: usize| self.data.get(at + o..at + o + n);
                        let flags = field(2, 2).and_then(|b| b.try_into().ok()).map(|b| self.endian.u16(b)).unwrap_or(0);
                        let desc = field(4, 4).and_then(|b| b.try_into().ok()).map(|b| self.endian.u32(b)).unwrap_or(0);
                        let link_at = (flags & 1 == 0).then_some(data_at);
                        self.options_tail = Some(OptionsTail { link_at, description: desc });
                    }
                    break;
                }
                if opt == id::BUFFER || opt == id::BUFFER_TEXT {
                    buffer_opts.push((opt, data.to_vec(), data_at));
                }
                self.options.push(options::parse(opt, data, self.endian, data_at)?);
            }
        }

        self.scan_sections(&mut inf, sections_start)?;

        let refs: Vec<(u16, u64)> = self
            .options
            .iter()
            .filter_map(|o| match o {
                TraceOption::Section { id, offset } => Some((*id, offset.0)),
                _ => None,
            })
            .collect();
        for (sid, off) in refs {
            let what = match sid {
                id::HEADER_INFO => "header info",
                id::FTRACE_EVENTS => "ftrace formats",
                id::EVENT_FORMATS => "event formats",
                id::KALLSYMS => "kallsyms",
                id::PRINTK => "printk formats",
                id::CMDLINES => "saved cmdlines",
                _ => continue, // BTF and modules: not needed here
            };
            let (bi, base) = self.load_section(&mut inf, &mut loaded, off, sid)?;
            // Ranges are found with the body borrowed, then stored: no copy
            // of an inflated body (a Cow clone of an owned one copies it).
            let b = |rg: Range<usize>| Blob { body: bi, start: rg.start, end: rg.end };
            let found = {
                let body = self.bodies.get(bi).map(|c| &**c).unwrap_or_default();
                let mut r = Reader::new(body, self.endian, base);
                match sid {
                    id::HEADER_INFO => {
                        let (p, e) = content::header_info(&mut r)?;
                        Found::Headers(b(p), b(e))
                    }
                    id::FTRACE_EVENTS => Found::Ftrace(content::ftrace(&mut r)?.into_iter().map(b).collect()),
                    id::EVENT_FORMATS => Found::Events(content::events(&mut r)?.into_iter().map(|(s, f)| (b(s), b(f))).collect()),
                    id::KALLSYMS | id::PRINTK => Found::One(b(content::sized32(&mut r, what)?)),
                    _ => Found::One(b(content::sized64(&mut r, what)?)),
                }
            };
            match (sid, found) {
                (_, Found::Headers(p, e)) => {
                    self.header_page = Some(p);
                    self.header_event = Some(e);
                }
                (_, Found::Ftrace(v)) => self.ftrace = v,
                (_, Found::Events(v)) => self.events = v,
                (id::KALLSYMS, Found::One(x)) => self.kallsyms = Some(x),
                (id::PRINTK, Found::One(x)) => self.printk = Some(x),
                (_, Found::One(x)) => self.cmdlines = Some(x),
            }
        }
        if self.header_page.is_none() {
            return Err(Error::invalid(first_at, "no HEADER_INFO section in the options"));
        }

        let top_clock = self.option_clock();
        for (opt, data, at) in buffer_opts {
            let b = self.v7_buffer(opt, &data, at)?;
            self.buffers.push(b);
        }
        // The top level first, as trace-cmd keeps it apart from instances.
        if let Some(i) = self.buffers.iter().position(|b| b.name.is_empty()) {
            let mut top = self.buffers.remove(i);
            if top_clock.is_some() {
                top.clock = top_clock;
            }
            self.buffers.insert(0, top);
        }
        Ok(())
    }

    /// BUFFER / BUFFER_TEXT option body (trace-input.c `handle_buffer_option`).
    fn v7_buffer(&self, opt: u16, data: &[u8], at: u64) -> Result<Buffer> {
        let mut r = Reader::new(data, self.endian, at);
        let off = r.u64("buffer section offset")?;
        let name = String::from_utf8_lossy(r.cstr("buffer name")?).into_owned();
        let clock = String::from_utf8_lossy(r.cstr("buffer clock")?).into_owned();
        let clock = (!clock.is_empty()).then_some(clock);
        let want = if opt == id::BUFFER { id::BUFFER } else { id::BUFFER_TEXT };
        let (sid, flags, _, size, body) = self.section_header(off, "buffer section offset")?;
        if sid != want {
            return Err(Error::invalid(at, format!("buffer {name:?}: section at byte {off} has id {sid}, expected {want}")));
        }
        let compressed = flags & SEC_COMPRESSED != 0;
        if opt == id::BUFFER_TEXT {
            return Ok(Buffer {
                name,
                clock,
                page_size: self.page_size,
                cpus: vec![BufferCpu { cpu: 0, offset: FileOffset(body.start as u64), size }],
                kind: BufferKind::Latency,
                compressed,
            });
        }
        let page_size = r.u32("buffer page size")?;
        if !(64..=(1 << 24)).contains(&page_size) {
            return Err(Error::invalid(r.offset() - 4, format!("buffer page size {page_size} out of range")));
        }
        let n = r.u32("buffer CPU count")?;
        if n as u64 * 20 > r.remaining() as u64 {
            return Err(Error::Truncated { offset: r.offset(), needed: n as u64 * 20, what: "buffer CPU table" });
        }
        let mut cpus = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let e = r.offset();
            let cpu = r.u32("buffer CPU id")?;
            let offset = r.u64("buffer CPU data offset")?;
            let size = r.u64("buffer CPU data size")?;
            let offset = self.check_range(e, offset, size)?;
            cpus.push(BufferCpu { cpu, offset: FileOffset(offset), size });
        }
        Ok(Buffer { name, clock, page_size, cpus, kind: BufferKind::Flyrecord, compressed })
    }

    /// Walks sections one after the other from the end of the header, as
    /// trace-input.c `read_metadata_strings` does, to collect the strings
    /// sections and list all sections. trace-cmd writes sections back to
    /// back up to the end of the file, so a header or body cut short by the
    /// end of the file means a truncated file.
    fn scan_sections(&mut self, inf: &mut Inflater, start: u64) -> Result<()> {
        let mut strings: Vec<u8> = Vec::new();
        let mut strings_res = Reservation::default();
        let mut off = start;
        let mut found = Vec::new();
        while found.len() < MAX_SECTIONS && off < self.data.len() as u64 {
            let (sid, flags, desc, size, body) = self.section_header(off, "section")?;
            if sid == id::STRINGS {
                // Every STRINGS section is kept (their offsets are one
                // space), so their sum is checked against the budget.
                let (v, _res) = if flags & SEC_COMPRESSED != 0 {
                    let (v, res) = self.inflate_body(inf, body.clone())?;
                    (Cow::Owned(v), res)
                } else {
                    (Cow::Borrowed(&self.data[body.clone()]), Reservation::default())
                };
                let want = strings.len() as u64 + v.len() as u64;
                strings_res.set(want).map_err(|e| Error::Budget { offset: off, what: "the STRINGS sections", want: e.want, others: e.others, limit: e.limit })?;
                strings.extend_from_slice(&v);
            }
            found.push((sid, flags, desc, off, size));
            off = body.end as u64;
        }
        self.sections = found
            .into_iter()
            .map(|(id, flags, desc, off, size)| {
                let description = strings.get(desc as usize..).map(options::text).filter(|_| (desc as usize) < strings.len());
                Section { id, flags, offset: FileOffset(off), size, description }
            })
            .collect();
        Ok(())
    }

    fn blob(&self, b: Blob) -> &[u8] {
        self.bodies.get(b.body).and_then(|v| v.get(b.start..b.end)).unwrap_or(&[])
    }

    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn endian(&self) -> Endian {
        self.endian
    }
    /// The traced user space's long size (trace.dat header).
    pub fn long_size(&self) -> u8 {
        self.long_size
    }
    pub fn page_size(&self) -> u32 {
        self.page_size
    }
    /// `(name, version)` from the v7 header (`("none", "")` when
    /// uncompressed); `None` for v6.
    pub fn compression(&self) -> Option<(&str, &str)> {
        self.compression.as_ref().map(|(a, b)| (a.as_str(), b.as_str()))
    }
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// The `events/header_page` file.
    pub fn header_page(&self) -> &[u8] {
        self.header_page.map(|b| self.blob(b)).unwrap_or(&[])
    }
    /// The `events/header_event` file.
    pub fn header_event(&self) -> &[u8] {
        self.header_event.map(|b| self.blob(b)).unwrap_or(&[])
    }
    /// The page layout: from header_page, or the default for the file's
    /// long size when that does not parse.
    pub fn page_layout(&self) -> PageLayout {
        PageLayout::from_header_page(self.header_page(), self.endian)
            .unwrap_or_else(|_| PageLayout::new(self.endian, self.long_size, self.page_size))
    }
    /// `("ftrace", format)` for each ftrace-internal event format.
    pub fn ftrace_formats(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.ftrace.iter().map(move |&b| ("ftrace", self.blob(b)))
    }
    /// `(system, format)` for each event format.
    pub fn event_formats(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.events.iter().map(move |&(s, f)| (std::str::from_utf8(self.blob(s)).unwrap_or(""), self.blob(f)))
    }
    pub fn kallsyms(&self) -> Option<&[u8]> {
        self.kallsyms.map(|b| self.blob(b))
    }
    pub fn printk(&self) -> Option<&[u8]> {
        self.printk.map(|b| self.blob(b))
    }
    /// `saved_cmdlines` text; empty when absent.
    pub fn cmdlines(&self) -> &[u8] {
        self.cmdlines.map(|b| self.blob(b)).unwrap_or(&[])
    }
    /// All options, in file order (across chained v7 options sections).
    /// v6: the CPU count of the file's header (a CPUCOUNT option may say
    /// more); `None` for v7, which has none.
    pub fn header_cpus(&self) -> Option<u32> {
        self.header_cpus
    }

    /// v6 files with a TRACECLOCK option: the trace_clock text that follows
    /// the CPU table, as trace-input.c `init_data_v6` reads it ("[local]"
    /// when it cannot be read: the "trace_clock bug" fallback). `None`
    /// otherwise.
    pub fn v6_clock_text(&self) -> Option<String> {
        self.v6_clock.as_ref().map(|t| t.clone().unwrap_or_else(|| "[local]".to_string()))
    }

    pub fn options(&self) -> &[TraceOption] {
        &self.options
    }

    /// TRACEID: this recording's trace id (trace-cmd host-guest tracing:
    /// a guest's equals the trace id its host's GUEST option names). The
    /// last one wins, as trace-input.c reads them in order.
    pub fn trace_id(&self) -> Option<u64> {
        self.options.iter().rev().find_map(|o| match o {
            TraceOption::TraceId(v) => Some(*v),
            _ => None,
        })
    }

    /// GUEST options: the guests a host recording traced with trace-cmd.
    pub fn guests(&self) -> impl Iterator<Item = &Guest> + '_ {
        self.options.iter().filter_map(|o| match o {
            TraceOption::Guest(g) => Some(g),
            _ => None,
        })
    }

    /// TIME_SHIFT: a guest recording's offsets to its host (the last one,
    /// as trace-input.c keeps it).
    pub fn time_shift(&self) -> Option<&TimeShift> {
        self.options.iter().rev().find_map(|o| match o {
            TraceOption::TimeShift(t) => Some(t),
            _ => None,
        })
    }

    /// TSC2NSEC `(mult, shift, offset)`: nanoseconds = `(tsc * mult) >> shift`.
    pub fn tsc2nsec(&self) -> Option<(u32, u32, u64)> {
        self.options.iter().rev().find_map(|o| match o {
            TraceOption::Tsc2Nsec { mult, shift, offset } => Some((*mult, *shift, *offset)),
            _ => None,
        })
    }
    /// v7: where the options chain ends, for appending options.
    pub fn options_tail(&self) -> Option<OptionsTail> {
        self.options_tail
    }

    /// The top level first, then instances in file order.
    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }
    /// v7 sections in file order (empty for v6).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }
    /// The whole file.
    pub fn file(&self) -> &'d [u8] {
        self.data
    }

    fn buffer_cpu(&self, buffer: usize, cpu_index: usize) -> Result<(&Buffer, BufferCpu)> {
        let b = self
            .buffers
            .get(buffer)
            .ok_or_else(|| Error::invalid(0, format!("no buffer {buffer} ({} buffers)", self.buffers.len())))?;
        let c = *b
            .cpus
            .get(cpu_index)
            .ok_or_else(|| Error::invalid(0, format!("buffer {:?} has no CPU index {cpu_index} ({} CPUs)", b.name, b.cpus.len())))?;
        Ok((b, c))
    }

    /// The pages of one CPU of a flyrecord buffer.
    pub fn pages(&self, buffer: usize, cpu_index: usize) -> Result<PageStream<'d>> {
        let (b, c) = self.buffer_cpu(buffer, cpu_index)?;
        if b.kind != BufferKind::Flyrecord {
            return Err(Error::invalid(c.offset.0, format!("buffer {:?} holds latency text, not pages", b.name)));
        }
        PageStream::new(self.data, self.endian, b.page_size, c, b.compressed.then_some(self.codec))
    }

    /// Decoded events of one CPU of a flyrecord buffer.
    pub fn cpu_events(&self, buffer: usize, cpu_index: usize) -> Result<CpuEvents<'d>> {
        let layout = PageLayout { page_size: self.buffers.get(buffer).map_or(self.page_size, |b| b.page_size), ..self.page_layout() };
        Ok(CpuEvents::new(self.pages(buffer, cpu_index)?, layout))
    }

    /// The text of a latency buffer (inflated when compressed).
    pub fn latency_text(&self, buffer: usize) -> Result<Cow<'d, [u8]>> {
        let (b, c) = self.buffer_cpu(buffer, 0)?;
        if b.kind != BufferKind::Latency {
            return Err(Error::invalid(c.offset.0, format!("buffer {:?} holds pages, not text", b.name)));
        }
        let start = c.offset.0 as usize;
        let end = start.saturating_add(c.size as usize).min(self.data.len());
        let raw = self.data.get(start..end).unwrap_or(&[]);
        if !b.compressed {
            return Ok(Cow::Borrowed(raw));
        }
        let mut s = PageStream::new(self.data, self.endian, u32::MAX, c, Some(self.codec))?;
        let mut out = Vec::new();
        while let Some((_, chunk)) = s.next_page()? {
            out.try_reserve(chunk.len()).map_err(|_| Error::invalid(c.offset.0, "latency text too large"))?;
            out.extend_from_slice(chunk);
        }
        Ok(Cow::Owned(out))
    }
}
