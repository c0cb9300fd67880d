//! Streaming trace.dat writer, file versions 6 and 7.
//!
//! Layout follows trace-cmd Documentation/trace-cmd/trace-cmd.dat.v6.5.txt and
//! .v7.5.txt, and what lib/trace-cmd/trace-output.c writes in practice:
//!
//! ```text
//! v6: magic "6\0" endian long page_size | header_page/header_event | ftrace formats
//!     | event formats | kallsyms | printk | cmdlines | u32 cpus | "options  \0"
//!     options... u16 0 | top "flyrecord\0" (off,size)*cpus clock | pages...
//!     | per instance: "flyrecord\0" (off,size)*cpus clock | pages...
//!       (BUFFER options point at each instance's "flyrecord")
//! v7: magic "7\0" endian long page_size "codec\0version\0" u64 first_options
//!     | sections: headers, ftrace events, event formats, kallsyms, printk, cmdlines
//!     | options (section offsets, user options) | per buffer: flyrecord section,
//!       then an options section with its BUFFER option | [late options] | strings
//! ```
//!
//! trace-cmd's v7 reader walks every section header from the start of the file
//! to find the strings (trace-input.c `read_metadata_strings`), so sections are
//! written back to back with exact sizes. CPU data starts page-aligned. With
//! compression, each CPU's pages are compressed in chunks of
//! [`TraceDatWriter::set_chunk_pages`] pages (trace-output.c uses 10), so memory
//! is bounded by one chunk whatever the trace size.

use std::io::{Read, Seek, SeekFrom, Write};

use super::compress::{Codec, Compression};
use crate::{Endian, Error, Result};

/// trace.dat option / section ids: the reader's table, plus the range for
/// our own options.
pub mod option_id {
    pub use crate::tracedat::options::id::*;
    /// First id of the range we use for our own options. trace-cmd numbers its
    /// options upward from 0 (25 in 2026), skips unknown ids when reading
    /// (silently in `report`; `--debug` logs "unknown option N") and copies
    /// them in `convert`.
    pub const PRIVATE_FIRST: u16 = 0x7f00;
}

/// Section flag: the section's data is compressed (trace-cmd.dat.v7.5.txt).
pub const SECTION_FLAG_COMPRESSED: u16 = 1;

/// One compressed block as a v7 file stores it (trace-compress.c
/// `tracecmd_compress_block`): u32 compressed size, u32 original size, then
/// the codec's output, in the file's byte order. `at` names the place for errors.
fn compress_block(codec: &mut Codec, e: Endian, at: u64, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let u32len = |n: usize, what: &'static str| {
        u32::try_from(n).map_err(|_| Error::invalid(at, format!("{what} of {n} bytes exceeds a u32 block size")))
    };
    let raw = u32len(data.len(), "compressed block input")?;
    out.clear();
    out.extend_from_slice(&[0; 8]);
    codec.compress(data, out)?;
    let csize = u32len(out.len() - 8, "compressed block")?;
    out[..4].copy_from_slice(&e.put_u32(csize));
    out[4..8].copy_from_slice(&e.put_u32(raw));
    Ok(())
}

/// Compresses chunks of pages for [`TraceDatWriter::write_chunk`], so that
/// compression can run on the thread that makes the pages.
pub struct ChunkCompressor {
    codec: Codec,
    endian: Endian,
}

impl ChunkCompressor {
    /// The block for `pages` (whole pages of one CPU), into `out`.
    pub fn compress(&mut self, pages: &[u8], out: &mut Vec<u8>) -> Result<()> {
        compress_block(&mut self.codec, self.endian, 0, pages, out)
    }
}

/// Pages per compressed chunk by default (trace-output.c `PAGES_IN_CHUNK`).
pub const DEFAULT_CHUNK_PAGES: usize = 10;

const MAGIC: &[u8] = b"\x17\x08\x44tracing";

/// The metadata every trace.dat carries, as read from tracefs.
#[derive(Clone, Debug)]
pub struct Header<'a> {
    pub endian: Endian,
    /// Long size written in the file header (4 or 8).
    pub long_size: u8,
    pub page_size: u32,
    /// `events/header_page`.
    pub header_page: &'a [u8],
    /// `events/header_event`.
    pub header_event: &'a [u8],
    /// `events/ftrace/*/format`.
    pub ftrace_formats: Vec<&'a [u8]>,
    /// `(system, events/<system>/<event>/format)`; grouped by system on write,
    /// systems in order of first appearance.
    pub event_formats: Vec<(&'a str, &'a [u8])>,
    /// `/proc/kallsyms`.
    pub kallsyms: Option<&'a [u8]>,
    /// `printk_formats`.
    pub printk: Option<&'a [u8]>,
    /// `saved_cmdlines`.
    pub cmdlines: &'a [u8],
}

/// One TIME_SHIFT sample (trace-input.c `struct ts_offset_sample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsyncSample {
    pub time: u64,
    /// Stored as given; trace-cmd stores the offset negated (see FACTS.md).
    pub offset: i64,
    pub scaling: u64,
    pub fraction: u64,
}

/// A typed trace.dat option. Text options get their NUL terminator here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionData {
    /// DATE: difference between timestamps and gettimeofday, e.g. `"0x1a2b"`
    /// (microseconds, trace-input.c `handle_options`).
    Date(String),
    /// UNAME: `uname -a`-like text.
    Uname(String),
    /// TRACECLOCK: the `trace_clock` file, current clock in brackets. A bare
    /// name is bracketed for you.
    TraceClock(String),
    CpuCount(u32),
    /// VERSION: the recording program's version string.
    Version(String),
    TraceId(u64),
    Tsc2Nsec {
        mult: u32,
        shift: u32,
        offset: u64,
    },
    /// TIME_SHIFT: peer trace id, protocol flags, per CPU samples.
    TimeShift {
        peer_trace_id: u64,
        flags: u32,
        cpus: Vec<Vec<TsyncSample>>,
    },
    /// GUEST: name, trace id, (vcpu, host pid) pairs.
    Guest {
        name: String,
        trace_id: u64,
        vcpus: Vec<(u32, u32)>,
    },
    /// CPUSTAT: one CPU's `per_cpu/cpuN/stats` text (trace-cmd prefixes "CPU: N\n").
    CpuStat(String),
    /// OFFSET: a fixed time added to every timestamp on reading.
    Offset(i64),
    /// Any option, bytes as given; for our own data use ids from
    /// [`option_id::PRIVATE_FIRST`] on.
    Raw {
        id: u16,
        data: Vec<u8>,
    },
}

impl OptionData {
    pub(crate) fn encode(&self, e: Endian) -> (u16, Vec<u8>) {
        fn text(s: &str) -> Vec<u8> {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        }
        use option_id as id;
        match self {
            OptionData::Date(s) => (id::DATE, text(s)),
            OptionData::Uname(s) => (id::UNAME, text(s)),
            OptionData::TraceClock(s) => {
                if s.contains('[') {
                    (id::TRACECLOCK, text(s))
                } else {
                    (id::TRACECLOCK, text(&format!("[{s}]")))
                }
            }
            OptionData::CpuCount(n) => (id::CPUCOUNT, e.put_u32(*n).to_vec()),
            OptionData::Version(s) => (id::VERSION, text(s)),
            OptionData::TraceId(v) => (id::TRACEID, e.put_u64(*v).to_vec()),
            OptionData::Tsc2Nsec {
                mult,
                shift,
                offset,
            } => {
                let mut v = e.put_u32(*mult).to_vec();
                v.extend_from_slice(&e.put_u32(*shift));
                v.extend_from_slice(&e.put_u64(*offset));
                (id::TSC2NSEC, v)
            }
            OptionData::TimeShift {
                peer_trace_id,
                flags,
                cpus,
            } => {
                // trace-input.c tsync_cpu_offsets_load: per CPU count, times,
                // offsets, scalings; then per CPU the fraction bits.
                let mut v = e.put_u64(*peer_trace_id).to_vec();
                v.extend_from_slice(&e.put_u32(*flags));
                v.extend_from_slice(&e.put_u32(cpus.len() as u32));
                for samples in cpus {
                    v.extend_from_slice(&e.put_u32(samples.len() as u32));
                    samples
                        .iter()
                        .for_each(|s| v.extend_from_slice(&e.put_u64(s.time)));
                    samples
                        .iter()
                        .for_each(|s| v.extend_from_slice(&e.put_u64(s.offset as u64)));
                    samples
                        .iter()
                        .for_each(|s| v.extend_from_slice(&e.put_u64(s.scaling)));
                }
                for samples in cpus {
                    samples
                        .iter()
                        .for_each(|s| v.extend_from_slice(&e.put_u64(s.fraction)));
                }
                (id::TIME_SHIFT, v)
            }
            OptionData::Guest {
                name,
                trace_id,
                vcpus,
            } => {
                let mut v = text(name);
                v.extend_from_slice(&e.put_u64(*trace_id));
                v.extend_from_slice(&e.put_u32(vcpus.len() as u32));
                for (cpu, pid) in vcpus {
                    v.extend_from_slice(&e.put_u32(*cpu));
                    v.extend_from_slice(&e.put_u32(*pid));
                }
                (id::GUEST, v)
            }
            OptionData::CpuStat(s) => (id::CPUSTAT, text(s)),
            OptionData::Offset(o) => (id::OFFSET, text(&o.to_string())),
            OptionData::Raw { id, data } => (*id, data.clone()),
        }
    }
}

/// A buffer (tracefs instance) declared with [`TraceDatWriter::add_buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

#[derive(Debug)]
struct Buffer {
    name: String,
    clock: String,
    cpus: u32,
    /// v6, instances: where the BUFFER option's u64 offset is, to patch.
    v6_option_at: Option<u64>,
}

/// The buffer whose data is being written.
#[derive(Debug)]
struct OpenBuffer {
    idx: usize,
    /// v7: offset of the section header; v6: offset of "flyrecord".
    start: u64,
    /// v7: offset of the section's size field.
    size_at: u64,
    /// v6: offset of the (offset, size) pairs.
    pairs_at: u64,
    /// (cpu, data offset, bytes in file) of CPUs that have data.
    cpus: Vec<(u32, u64, u64)>,
}

#[derive(Debug)]
struct OpenCpu {
    cpu: u32,
    /// Offset of the first byte (page-aligned) once a page came.
    data_at: Option<u64>,
    chunk: Vec<u8>,
    chunks: u32,
    raw_bytes: u64,
}

/// Writes a trace.dat file to any `Write + Seek`, one CPU's pages at a time.
///
/// Order of calls: [`new`](Self::new) (writes the metadata), then
/// [`add_option`](Self::add_option) / [`add_buffer`](Self::add_buffer), then per
/// buffer in the order added, per CPU: [`write_cpu_pages`](Self::write_cpu_pages)
/// (or `start_cpu` / `write_page` / `end_cpu`), then [`finish`](Self::finish).
/// Version 6 wants every buffer and option known before the first page (its
/// options precede the data) and the top buffer (name "") added first.
pub struct TraceDatWriter<W: Write + Seek> {
    out: W,
    pos: u64,
    version: u32,
    compression: Compression,
    codec: Codec,
    endian: Endian,
    page_size: u32,
    chunk_pages: usize,
    strings: Vec<u8>,
    pending: Vec<(u16, Vec<u8>)>,
    has_clock: bool,
    has_cpucount: bool,
    /// Header/first options written (v6: no more options or buffers).
    sealed: bool,
    /// v7: the u64 to patch with the next options section's offset.
    options_link: u64,
    /// v6: CPU count in the header; every flyrecord lists this many CPUs.
    v6_cpus: u32,
    buffers: Vec<Buffer>,
    /// Buffers before this index are written (or skipped: then empty).
    next_buffer: usize,
    open: Option<OpenBuffer>,
    cpu: Option<OpenCpu>,
    scratch: Vec<u8>,
    /// Metadata comes last (`new_deferred`).
    deferred: bool,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

impl<W: Write + Seek> TraceDatWriter<W> {
    /// Checks the parameters, writes the file header (`write_init`) and
    /// returns the writer, metadata not yet written.
    fn start(mut out: W, version: u32, compression: Compression, endian: Endian, long_size: u8, page_size: u32) -> Result<Self> {
        if version != 6 && version != 7 {
            return Err(Error::invalid(
                0,
                format!("trace.dat version {version}: only 6 and 7 are written"),
            ));
        }
        if version == 6 && compression.is_compressed() {
            return Err(Error::invalid(
                0,
                "trace.dat version 6 cannot be compressed",
            ));
        }
        if long_size != 4 && long_size != 8 {
            return Err(Error::invalid(
                0,
                format!("long size {long_size}: expected 4 or 8"),
            ));
        }
        if !page_size.is_power_of_two() || page_size < 64 {
            return Err(Error::invalid(
                0,
                format!("page size {page_size}: expected a power of two"),
            ));
        }
        let pos = out
            .stream_position()
            .map_err(io("finding the output position"))?;
        let mut w = TraceDatWriter {
            out,
            pos,
            version,
            compression,
            codec: Codec::new(compression)?,
            endian,
            page_size,
            chunk_pages: DEFAULT_CHUNK_PAGES,
            strings: Vec::new(),
            pending: Vec::new(),
            has_clock: false,
            has_cpucount: false,
            sealed: false,
            options_link: 0,
            v6_cpus: 0,
            buffers: Vec::new(),
            next_buffer: 0,
            open: None,
            cpu: None,
            scratch: Vec::new(),
            deferred: false,
        };
        w.write_init(long_size)?;
        Ok(w)
    }

    /// Writes the file header and all metadata. `out` should be positioned at 0
    /// (offsets in the file are absolute).
    pub fn new(out: W, version: u32, compression: Compression, header: &Header) -> Result<Self> {
        let mut w = Self::start(out, version, compression, header.endian, header.long_size, header.page_size)?;
        w.write_metadata(header)?;
        Ok(w)
    }

    /// A v7 writer that writes the metadata (formats, cmdlines, ...) last,
    /// in [`finish_with_metadata`](Self::finish_with_metadata): for writers
    /// that learn which formats and comms they need while writing pages.
    /// v7 readers find every section through the options' offsets
    /// (trace-input.c `handle_options`, `handle_section`), and trace-cmd's
    /// strings scan walks sections back to back from the header, which holds
    /// wherever they sit.
    pub fn new_deferred(out: W, compression: Compression, endian: Endian, long_size: u8, page_size: u32) -> Result<Self> {
        let mut w = Self::start(out, 7, compression, endian, long_size, page_size)?;
        w.deferred = true;
        Ok(w)
    }

    /// Pages per compressed chunk (v7 with compression); memory use is about
    /// twice this many pages.
    pub fn set_chunk_pages(&mut self, pages: usize) {
        self.chunk_pages = pages.max(1);
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Queues an option. v7 writes it in the next options section (at the end
    /// of the current buffer, or in [`finish`](Self::finish)); v6 needs it
    /// before the first page.
    pub fn add_option(&mut self, opt: OptionData) -> Result<()> {
        if self.version == 6 && self.sealed {
            return Err(Error::invalid(
                self.pos,
                "trace.dat v6: options must be added before the first page",
            ));
        }
        let (id, data) = opt.encode(self.endian);
        match id {
            option_id::TRACECLOCK => self.has_clock = true,
            option_id::CPUCOUNT => self.has_cpucount = true,
            _ => {}
        }
        if self.version == 6 && id == option_id::CPUCOUNT {
            // v6 readers take the last CPUCOUNT as the number of (offset, size)
            // pairs of every flyrecord: we write the right one at sealing.
            return Ok(());
        }
        self.pending.push((id, data));
        Ok(())
    }

    /// Declares a buffer: `name` "" is the top-level buffer, others are tracefs
    /// instances; `clock` is its trace clock (e.g. "x86-tsc"); `cpus` the number
    /// of CPUs it may have data for.
    pub fn add_buffer(&mut self, name: &str, clock: &str, cpus: u32) -> Result<BufferId> {
        if self.buffers.iter().any(|b| b.name == name) {
            return Err(Error::invalid(
                self.pos,
                format!("buffer {name:?} added twice"),
            ));
        }
        if name.contains('\0') || clock.contains('\0') {
            return Err(Error::invalid(
                self.pos,
                "buffer name or clock contains NUL",
            ));
        }
        if self.version == 6 {
            if self.sealed {
                return Err(Error::invalid(
                    self.pos,
                    "trace.dat v6: buffers must be added before the first page",
                ));
            }
            if name.is_empty() && !self.buffers.is_empty() {
                return Err(Error::invalid(
                    self.pos,
                    "trace.dat v6: add the top buffer (\"\") first",
                ));
            }
        }
        self.buffers.push(Buffer {
            name: name.into(),
            clock: clock.into(),
            cpus,
            v6_option_at: None,
        });
        Ok(BufferId(self.buffers.len() - 1))
    }

    /// Starts one CPU's data. Buffers must be written in the order they were
    /// added; skipped buffers and CPUs are recorded as empty.
    pub fn start_cpu(&mut self, buf: BufferId, cpu: u32) -> Result<()> {
        self.end_cpu()?;
        let b = self
            .buffers
            .get(buf.0)
            .ok_or_else(|| Error::invalid(self.pos, format!("no buffer {}", buf.0)))?;
        if cpu >= b.cpus {
            return Err(Error::invalid(
                self.pos,
                format!("cpu {cpu} of buffer {:?} which has {} cpus", b.name, b.cpus),
            ));
        }
        match &self.open {
            Some(o) if o.idx == buf.0 => {
                if o.cpus.iter().any(|c| c.0 == cpu) {
                    return Err(Error::invalid(
                        self.pos,
                        format!("cpu {cpu} of buffer {:?} written twice", b.name),
                    ));
                }
            }
            _ => {
                if buf.0 < self.next_buffer {
                    return Err(Error::invalid(
                        self.pos,
                        format!(
                            "buffer {:?} is already written: write buffers in the order added",
                            b.name
                        ),
                    ));
                }
                self.close_buffer()?;
                while self.next_buffer < buf.0 {
                    self.open_buffer()?;
                    self.close_buffer()?;
                }
                self.open_buffer()?;
            }
        }
        self.cpu = Some(OpenCpu {
            cpu,
            data_at: None,
            chunk: Vec::new(),
            chunks: 0,
            raw_bytes: 0,
        });
        Ok(())
    }

    /// Appends one ring-buffer page (exactly `page_size` bytes, in the file's
    /// byte order) to the CPU started with [`start_cpu`](Self::start_cpu).
    pub fn write_page(&mut self, page: &[u8]) -> Result<()> {
        if page.len() != self.page_size as usize {
            return Err(Error::invalid(
                self.pos,
                format!("page of {} bytes, expected {}", page.len(), self.page_size),
            ));
        }
        let Some(mut c) = self.cpu.take() else {
            return Err(Error::invalid(self.pos, "write_page without start_cpu"));
        };
        let r = self.write_page_inner(&mut c, page);
        self.cpu = Some(c);
        r
    }

    /// Where a CPU's data starts: page-aligned, after the chunk count of a
    /// compressed file (patched in end_cpu).
    fn start_data(&mut self, c: &mut OpenCpu) -> Result<()> {
        if c.data_at.is_none() {
            self.pad_to_page()?;
            c.data_at = Some(self.pos);
            if self.compression.is_compressed() {
                self.put(&[0; 4])?;
            }
        }
        Ok(())
    }

    fn write_page_inner(&mut self, c: &mut OpenCpu, page: &[u8]) -> Result<()> {
        self.start_data(c)?;
        c.raw_bytes += page.len() as u64;
        if !self.compression.is_compressed() {
            return self.put(page);
        }
        c.chunk.extend_from_slice(page);
        if c.chunk.len() >= self.chunk_pages * self.page_size as usize {
            self.flush_chunk(c)?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self, c: &mut OpenCpu) -> Result<()> {
        if c.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut c.chunk);
        let r = self.block(&chunk, false);
        c.chunk = chunk;
        c.chunk.clear();
        r?;
        c.chunks += 1;
        Ok(())
    }

    /// Ends the CPU started with [`start_cpu`](Self::start_cpu) (no-op if none).
    pub fn end_cpu(&mut self) -> Result<()> {
        let Some(mut c) = self.cpu.take() else {
            return Ok(());
        };
        let Some(at) = c.data_at else { return Ok(()) };
        if self.compression.is_compressed() {
            self.flush_chunk(&mut c)?;
            let n = self.endian.put_u32(c.chunks);
            self.patch(at, &n)?;
        }
        let size = self.pos - at;
        let open = self
            .open
            .as_mut()
            .expect("a CPU is open only inside a buffer");
        open.cpus.push((c.cpu, at, size));
        Ok(())
    }

    /// Writes one CPU's pages from an iterator.
    pub fn write_cpu_pages<'p>(
        &mut self,
        buf: BufferId,
        cpu: u32,
        pages: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<()> {
        self.start_cpu(buf, cpu)?;
        for p in pages {
            self.write_page(p)?;
        }
        self.end_cpu()
    }

    /// Writes one CPU's pages from a reader of whole pages (a `trace_pipe_raw`
    /// capture file). Returns the number of pages.
    pub fn write_cpu_data(&mut self, buf: BufferId, cpu: u32, mut r: impl Read) -> Result<u64> {
        self.start_cpu(buf, cpu)?;
        let mut page = vec![0u8; self.page_size as usize];
        let mut n = 0;
        loop {
            let mut got = 0;
            while got < page.len() {
                match r.read(&mut page[got..]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::Io {
                            what: format!("reading cpu {cpu} pages"),
                            source: e,
                        })
                    }
                }
            }
            if got == 0 {
                break;
            }
            if got < page.len() {
                return Err(Error::Truncated {
                    offset: n * self.page_size as u64 + got as u64,
                    needed: (page.len() - got) as u64,
                    what: "a whole ring-buffer page",
                });
            }
            self.write_page(&page)?;
            n += 1;
        }
        self.end_cpu()?;
        Ok(n)
    }

    /// Ends the last buffer, writes any buffers not yet written (empty), the
    /// remaining options and (v7) the strings section; returns the output.
    pub fn finish(self) -> Result<W> {
        if self.deferred {
            return Err(Error::invalid(self.pos, "a writer made with new_deferred ends with finish_with_metadata"));
        }
        self.finish_inner(None)
    }

    /// [`finish`](Self::finish) for a writer made with
    /// [`new_deferred`](Self::new_deferred): writes `header`'s metadata
    /// sections after the data. Byte order, long and page size must be
    /// those given to `new_deferred`.
    pub fn finish_with_metadata(self, header: &Header) -> Result<W> {
        if !self.deferred {
            return Err(Error::invalid(self.pos, "finish_with_metadata needs a writer made with new_deferred"));
        }
        if header.endian != self.endian || header.page_size != self.page_size {
            return Err(Error::invalid(self.pos, "metadata header disagrees with the file header (byte order or page size)"));
        }
        self.finish_inner(Some(header))
    }

    fn finish_inner(mut self, metadata: Option<&Header>) -> Result<W> {
        self.end_cpu()?;
        self.close_buffer()?;
        while self.next_buffer < self.buffers.len() {
            self.open_buffer()?;
            self.close_buffer()?;
        }
        if !self.sealed {
            self.seal()?;
        }
        if let Some(h) = metadata {
            self.write_metadata(h)?;
        }
        if self.version == 7 {
            if !self.pending.is_empty() {
                self.write_options_section()?;
            }
            self.write_strings()?;
        }
        self.out
            .flush()
            .map_err(io("flushing the trace.dat output"))?;
        Ok(self.out)
    }

    // ---- low level ----

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(io("writing trace.dat"))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn put_u16(&mut self, v: u16) -> Result<()> {
        self.put(&self.endian.put_u16(v))
    }
    fn put_u32(&mut self, v: u32) -> Result<()> {
        self.put(&self.endian.put_u32(v))
    }
    fn put_u64(&mut self, v: u64) -> Result<()> {
        self.put(&self.endian.put_u64(v))
    }

    /// Overwrites bytes at `at` and returns to the end.
    fn patch(&mut self, at: u64, b: &[u8]) -> Result<()> {
        self.out
            .seek(SeekFrom::Start(at))
            .map_err(io("seeking back in trace.dat"))?;
        self.out.write_all(b).map_err(io("patching trace.dat"))?;
        self.out
            .seek(SeekFrom::Start(self.pos))
            .map_err(io("seeking in trace.dat"))?;
        Ok(())
    }

    /// Zero padding up to the next page boundary (trace-cmd seeks, leaving a
    /// hole; zeros read the same and work on non-sparse outputs).
    fn pad_to_page(&mut self) -> Result<()> {
        let ps = self.page_size as u64;
        let pad = (ps - self.pos % ps) % ps;
        if pad > 0 {
            self.put(&vec![0; pad as usize])?;
        }
        Ok(())
    }

    fn add_string(&mut self, s: &str) -> u32 {
        let id = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        id
    }

    /// v7 section header with a zero size; returns the size field's offset.
    fn section_header(&mut self, id: u16, flags: u16, desc: &str) -> Result<u64> {
        let sid = self.add_string(desc);
        self.put_u16(id)?;
        self.put_u16(flags)?;
        self.put_u32(sid)?;
        let at = self.pos;
        self.put_u64(0)?;
        Ok(at)
    }

    fn end_section(&mut self, size_at: u64) -> Result<()> {
        let size = self.pos - (size_at + 8);
        let b = self.endian.put_u64(size);
        self.patch(size_at, &b)
    }

    /// Writes `data` compressed as one block (u32 compressed size, u32 size,
    /// frame), or as is when `plain` or the file is uncompressed.
    fn block(&mut self, data: &[u8], plain: bool) -> Result<()> {
        if plain || !self.compression.is_compressed() {
            return self.put(data);
        }
        let mut z = std::mem::take(&mut self.scratch);
        let r = compress_block(&mut self.codec, self.endian, self.pos, data, &mut z).and_then(|()| self.put(&z));
        self.scratch = z;
        r
    }

    /// A compressor that makes the blocks of [`write_chunk`](Self::write_chunk)
    /// on another thread: `None` when the file is not compressed.
    pub fn chunk_compressor(&self) -> Result<Option<ChunkCompressor>> {
        if !self.compression.is_compressed() {
            return Ok(None);
        }
        Ok(Some(ChunkCompressor { codec: Codec::new(self.compression)?, endian: self.endian }))
    }

    /// Bytes of pages in one compressed chunk.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_pages * self.page_size as usize
    }

    /// Appends one chunk of whole pages (`raw_len` bytes, at most
    /// [`chunk_bytes`](Self::chunk_bytes)) to the open CPU of a compressed
    /// file, as `block` from [`ChunkCompressor::compress`]. A caller that
    /// cuts a CPU's pages into chunks of `chunk_bytes` (the last one
    /// shorter) writes what [`write_page`](Self::write_page) would.
    pub fn write_chunk(&mut self, raw_len: usize, block: &[u8]) -> Result<()> {
        let Some(mut c) = self.cpu.take() else {
            return Err(Error::invalid(self.pos, "write_chunk without start_cpu"));
        };
        let r = (|| {
            if !self.compression.is_compressed() || !c.chunk.is_empty() {
                return Err(Error::invalid(self.pos, "write_chunk needs a compressed file and no pages pending"));
            }
            if raw_len == 0 || raw_len > self.chunk_bytes() || !raw_len.is_multiple_of(self.page_size as usize) {
                return Err(Error::invalid(self.pos, format!("chunk of {raw_len} bytes: expected whole pages, at most {}", self.chunk_bytes())));
            }
            self.start_data(&mut c)?;
            c.raw_bytes += raw_len as u64;
            self.put(block)?;
            c.chunks += 1;
            Ok(())
        })();
        self.cpu = Some(c);
        r
    }

    // ---- metadata ----

    /// Magic, version, byte order, long and page size; v7: the codec and
    /// the u64 that will point at the first options section.
    fn write_init(&mut self, long_size: u8) -> Result<()> {
        self.put(MAGIC)?;
        self.put(if self.version == 6 { b"6\0" } else { b"7\0" })?;
        self.put(&[if self.endian == Endian::Big { 1 } else { 0 }, long_size])?;
        self.put_u32(self.page_size)?;
        if self.version == 7 {
            self.put(self.compression.name().as_bytes())?;
            self.put(&[0])?;
            self.put(self.compression.version().as_bytes())?;
            self.put(&[0])?;
            self.options_link = self.pos;
            self.put_u64(0)?;
        }
        Ok(())
    }

    /// The metadata: v6 in its fixed place, v7 as sections whose offsets go
    /// into the next options section.
    fn write_metadata(&mut self, h: &Header) -> Result<()> {
        let e = self.endian;

        let mut headers = Vec::new();
        headers.extend_from_slice(b"header_page\0");
        headers.extend_from_slice(&e.put_u64(h.header_page.len() as u64));
        headers.extend_from_slice(h.header_page);
        headers.extend_from_slice(b"header_event\0");
        headers.extend_from_slice(&e.put_u64(h.header_event.len() as u64));
        headers.extend_from_slice(h.header_event);

        let mut ftrace = e.put_u32(h.ftrace_formats.len() as u32).to_vec();
        for f in &h.ftrace_formats {
            ftrace.extend_from_slice(&e.put_u64(f.len() as u64));
            ftrace.extend_from_slice(f);
        }

        let mut systems: Vec<&str> = Vec::new();
        for (s, _) in &h.event_formats {
            if s.contains('\0') {
                return Err(Error::invalid(
                    0,
                    format!("event system name {s:?} contains NUL"),
                ));
            }
            if !systems.contains(s) {
                systems.push(s);
            }
        }
        let mut events = e.put_u32(systems.len() as u32).to_vec();
        for s in &systems {
            events.extend_from_slice(s.as_bytes());
            events.push(0);
            let fmts: Vec<&[u8]> = h
                .event_formats
                .iter()
                .filter(|(n, _)| n == s)
                .map(|(_, f)| *f)
                .collect();
            events.extend_from_slice(&e.put_u32(fmts.len() as u32));
            for f in fmts {
                events.extend_from_slice(&e.put_u64(f.len() as u64));
                events.extend_from_slice(f);
            }
        }

        let sized32 = |d: &[u8], what: &str| -> Result<Vec<u8>> {
            let n = u32::try_from(d.len())
                .map_err(|_| Error::invalid(0, format!("{what} larger than 4 GiB")))?;
            let mut v = e.put_u32(n).to_vec();
            v.extend_from_slice(d);
            Ok(v)
        };
        let kallsyms = h.kallsyms.map(|k| sized32(k, "kallsyms")).transpose()?;
        let printk = h.printk.map(|p| sized32(p, "printk formats")).transpose()?;
        let mut cmdlines = e.put_u64(h.cmdlines.len() as u64).to_vec();
        cmdlines.extend_from_slice(h.cmdlines);

        if self.version == 6 {
            // v6 has every part, empty ones with size 0.
            self.put(&headers)?;
            self.put(&ftrace)?;
            self.put(&events)?;
            self.put(kallsyms.as_deref().unwrap_or(&[0; 4]))?;
            self.put(printk.as_deref().unwrap_or(&[0; 4]))?;
            self.put(&cmdlines)?;
            return Ok(());
        }

        let flags = if self.compression.is_compressed() {
            SECTION_FLAG_COMPRESSED
        } else {
            0
        };
        // Section descriptions as trace-output.c names them.
        let parts: [(u16, &str, Option<&[u8]>); 6] = [
            (option_id::HEADER_INFO, "headers", Some(&headers)),
            (option_id::FTRACE_EVENTS, "ftrace events", Some(&ftrace)),
            (option_id::EVENT_FORMATS, "events format", Some(&events)),
            (option_id::KALLSYMS, "kallsyms", kallsyms.as_deref()),
            (option_id::PRINTK, "printk", printk.as_deref()),
            (option_id::CMDLINES, "command lines", Some(&cmdlines)),
        ];
        for (id, desc, data) in parts {
            let Some(data) = data else { continue };
            let start = self.pos;
            let size_at = self.section_header(id, flags, desc)?;
            self.block(data, false)?;
            self.end_section(size_at)?;
            self.pending.push((id, e.put_u64(start).to_vec()));
        }
        Ok(())
    }

    /// Adds the options trace-cmd always writes when the caller did not.
    fn default_options(&mut self) {
        let top = self
            .buffers
            .iter()
            .find(|b| b.name.is_empty())
            .or(self.buffers.first());
        if !self.has_clock {
            if let Some(b) = top {
                let (id, d) = OptionData::TraceClock(b.clock.clone()).encode(self.endian);
                self.pending.push((id, d));
                self.has_clock = true;
            }
        }
        if self.version == 7 && !self.has_cpucount {
            if let Some(n) = self.buffers.iter().map(|b| b.cpus).max() {
                self.pending
                    .push((option_id::CPUCOUNT, self.endian.put_u32(n).to_vec()));
                self.has_cpucount = true;
            }
        }
    }

    /// Writes what must precede the first buffer: v6 the CPU count, options and
    /// (without a top buffer) an empty top flyrecord; v7 the first options section.
    fn seal(&mut self) -> Result<()> {
        self.sealed = true;
        self.default_options();
        if self.version == 7 {
            return self.write_options_section();
        }
        let cpus = self.buffers.iter().map(|b| b.cpus).max().unwrap_or(0);
        self.v6_cpus = cpus;
        self.put_u32(cpus)?;
        self.put(b"options  \0")?;
        let pending = std::mem::take(&mut self.pending);
        for (id, data) in &pending {
            self.put_option(*id, data)?;
        }
        self.put_option(option_id::CPUCOUNT, &self.endian.put_u32(cpus))?;
        // v6 BUFFER option: u64 offset of the instance's "flyrecord", name
        // (trace-output.c add_buffer_option_v6); the offset is patched later.
        for i in 0..self.buffers.len() {
            if self.buffers[i].name.is_empty() {
                continue;
            }
            let mut d = vec![0u8; 8];
            d.extend_from_slice(self.buffers[i].name.as_bytes());
            d.push(0);
            self.put_u16(option_id::BUFFER)?;
            self.put_u32(d.len() as u32)?;
            self.buffers[i].v6_option_at = Some(self.pos);
            self.put(&d)?;
        }
        self.put_u16(option_id::DONE)?;
        if !matches!(self.buffers.first(), Some(b) if b.name.is_empty()) {
            // No top buffer: the reader still expects its flyrecord here.
            self.put(b"flyrecord\0")?;
            for _ in 0..cpus {
                self.put(&[0; 16])?;
            }
            let clock = self
                .buffers
                .first()
                .map(|b| b.clock.clone())
                .unwrap_or_else(|| "local".into());
            self.put_v6_clock(&clock)?;
        }
        Ok(())
    }

    fn put_option(&mut self, id: u16, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| Error::invalid(self.pos, "option larger than 4 GiB"))?;
        self.put_u16(id)?;
        self.put_u32(len)?;
        self.put(data)
    }

    /// v6 trace clock after the flyrecord pairs: u64 size, "[clock]"
    /// (trace-output.c save_clock; read by trace-input.c init_data_v6).
    fn put_v6_clock(&mut self, clock: &str) -> Result<()> {
        let s = format!("[{clock}]");
        self.put_u64(s.len() as u64)?;
        self.put(s.as_bytes())
    }

    /// v7 options section with all pending options, linked from the previous one.
    fn write_options_section(&mut self) -> Result<()> {
        let start = self.pos;
        let b = self.endian.put_u64(start);
        self.patch(self.options_link, &b)?;
        let size_at = self.section_header(option_id::DONE, 0, "options")?;
        let pending = std::mem::take(&mut self.pending);
        for (id, data) in &pending {
            self.put_option(*id, data)?;
        }
        self.put_u16(option_id::DONE)?;
        self.put_u32(8)?;
        self.options_link = self.pos;
        self.put_u64(0)?;
        self.end_section(size_at)
    }

    fn write_strings(&mut self) -> Result<()> {
        let flags = if self.compression.is_compressed() {
            SECTION_FLAG_COMPRESSED
        } else {
            0
        };
        let size_at = self.section_header(option_id::STRINGS, flags, "strings")?;
        let s = std::mem::take(&mut self.strings);
        self.block(&s, false)?;
        self.end_section(size_at)
    }

    // ---- buffers ----

    fn open_buffer(&mut self) -> Result<()> {
        if !self.sealed {
            self.seal()?;
        }
        let idx = self.next_buffer;
        self.next_buffer += 1;
        let start = self.pos;
        let mut ob = OpenBuffer {
            idx,
            start,
            size_at: 0,
            pairs_at: 0,
            cpus: Vec::new(),
        };
        if self.version == 7 {
            let flags = if self.compression.is_compressed() {
                SECTION_FLAG_COMPRESSED
            } else {
                0
            };
            let desc = format!("buffer flyrecord {}", self.buffers[idx].name);
            ob.size_at = self.section_header(option_id::BUFFER, flags, &desc)?;
        } else {
            if let Some(at) = self.buffers[idx].v6_option_at {
                let b = self.endian.put_u64(start);
                self.patch(at, &b)?;
            }
            self.put(b"flyrecord\0")?;
            ob.pairs_at = self.pos;
            for _ in 0..self.v6_cpus {
                self.put(&[0; 16])?;
            }
            let clock = self.buffers[idx].clock.clone();
            self.put_v6_clock(&clock)?;
        }
        self.open = Some(ob);
        Ok(())
    }

    fn close_buffer(&mut self) -> Result<()> {
        self.end_cpu()?;
        let Some(mut ob) = self.open.take() else {
            return Ok(());
        };
        ob.cpus.sort_by_key(|c| c.0);
        if self.version == 6 {
            for &(cpu, off, size) in &ob.cpus {
                let mut b = self.endian.put_u64(off).to_vec();
                b.extend_from_slice(&self.endian.put_u64(size));
                self.patch(ob.pairs_at + 16 * cpu as u64, &b)?;
            }
            return Ok(());
        }
        self.end_section(ob.size_at)?;
        // v7 BUFFER option (trace-output.c tcmd_out_add_buffer_option): section
        // offset, name, clock, page size, then the CPUs that have data.
        let e = self.endian;
        let b = &self.buffers[ob.idx];
        let mut d = e.put_u64(ob.start).to_vec();
        d.extend_from_slice(b.name.as_bytes());
        d.push(0);
        d.extend_from_slice(b.clock.as_bytes());
        d.push(0);
        d.extend_from_slice(&e.put_u32(self.page_size));
        d.extend_from_slice(&e.put_u32(ob.cpus.len() as u32));
        for &(cpu, off, size) in &ob.cpus {
            d.extend_from_slice(&e.put_u32(cpu));
            d.extend_from_slice(&e.put_u64(off));
            d.extend_from_slice(&e.put_u64(size));
        }
        self.pending.push((option_id::BUFFER, d));
        self.write_options_section()
    }
}
