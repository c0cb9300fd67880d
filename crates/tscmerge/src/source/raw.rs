//! Raw capture directories: per-CPU `trace_pipe_raw` pages as the kernel
//! wrote them, with the tracefs files that decode them. Sources stage, beside
//! `dat` (same [`Meta`], same rendering) and `text`.
//!
//! Two layouts are accepted (the record crate's, crates/record/src/rawdir.rs,
//! and a simple one-buffer form):
//!
//! ```text
//! <dir>/header_page                  required: the page layout
//! <dir>/events/<sys>/<name>/format   event formats (ftrace/* included)
//! <dir>/saved_cmdlines, saved_tgids, printk_formats, kallsyms, meta.txt   optional
//! <dir>/<instance>/cpuN.raw + trace_clock    one buffer per instance, or
//! <dir>/cpuN.raw + <dir>/trace_clock         the top-level buffer
//! ```
//!
//! Each `cpuN.raw` is mapped and walked page by page in place: memory is the
//! page cache, whatever the capture's size. Pages are `page_size` bytes
//! (meta.txt `page_size`, else the header_page data size); a shorter last
//! page is read as far as its commit says.

use std::path::{Path, PathBuf};

use ftrace::format::{Kallsyms, PrintkFormats};
use ftrace::ring::{Page, PageEvents, PageLayout, RingEvent};
use ftrace::Endian;

use super::meta::Meta;
use crate::clock::OffsetWrite;
use crate::event::{Cursor, Detached, EventView, Payload};
use crate::{Error, Result};

/// Caps on metadata files read whole: a format file is a few KiB, kallsyms
/// a few MiB; anything far bigger is not what we expect.
const MAX_SMALL_FILE: u64 = 1 << 20;
const MAX_BIG_FILE: u64 = 256 << 20;
/// Page sizes the kernel can use (4 KiB up to the 64 KiB pages and 2 MiB
/// `buffer_subbuf_size_kb` sub-buffers of newer kernels).
const PAGE_SIZES: std::ops::RangeInclusive<u64> = 4096..=(2 << 20);
/// Bound on CPU numbers taken from file names.
const MAX_CPU: u32 = 1 << 16;

/// One CPU's capture file, mapped.
pub struct RawCpu {
    pub cpu: u32,
    pub path: PathBuf,
    /// `None` for an empty file (mmap of length 0 is refused).
    pub(crate) map: Option<memmap2::Mmap>,
    name: String,
    /// Registers the mapping: its truncation while read is an error naming
    /// the file ([`super::map_input`]).
    _guard: Option<safefs::MapGuard>,
}

impl RawCpu {
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
    /// The file's path as errors print it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One buffer (the top level or an instance).
pub struct RawBuffer {
    /// `""` for the top level (simple layout).
    pub name: String,
    /// The `trace_clock` file's current clock, when present.
    pub clock: Option<String>,
    pub cpus: Vec<RawCpu>,
}

/// An opened raw capture directory.
pub struct RawDir {
    pub dir: PathBuf,
    pub meta: Meta,
    pub layout: PageLayout,
    pub buffers: Vec<RawBuffer>,
    /// `meta.txt` entries in file order (empty without the file).
    pub info: Vec<(String, String)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Reads a whole side file of at most `cap` bytes; `Ok(None)` when it is
/// absent. FIFOs and devices are refused by type, and the cap holds for
/// files that report no size ([`safefs::read_capped`]).
fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    Ok(safefs::read_capped_opt(path, cap, "a side file of a raw capture directory")?)
}

/// The current clock in `trace_clock` text (`local [x86-tsc] ...`) or a bare name.
fn clock_name(text: &[u8]) -> Option<String> {
    let t = String::from_utf8_lossy(text);
    if let Some(a) = t.find('[') {
        let rest = &t[a + 1..];
        return rest.find(']').map(|b| rest[..b].to_string());
    }
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `cpuN.raw` → N.
fn cpu_of(name: &str) -> Option<u32> {
    let n = name.strip_prefix("cpu")?.strip_suffix(".raw")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&c| c < MAX_CPU)
}

/// The `cpuN.raw` files of a directory, by CPU; empty when there are none.
fn cpu_files(dir: &Path) -> Result<Vec<RawCpu>> {
    let mut cpus = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let Some(cpu) = e.file_name().to_str().and_then(cpu_of) else { continue };
        let path = e.path();
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        let md = f.metadata().map_err(io(&path))?;
        // A device or FIFO has no pages to map (and /dev/zero maps as 0 bytes).
        safefs::refuse_special_input(&path, &md)?;
        let len = md.len();
        // A file shrunk underneath us: an error naming it (`map_input`).
        let (map, guard) = if len == 0 { (None, None) } else { let (m, g) = super::map_input(&f, &path)?; (Some(m), Some(g)) };
        cpus.push(RawCpu { cpu, name: path.display().to_string(), path, map, _guard: guard });
    }
    cpus.sort_by_key(|c| c.cpu);
    Ok(cpus)
}

fn parse_info(text: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())))
        .collect()
}

/// Whether `dir` looks like a raw capture directory (has `header_page`).
pub fn is_raw_dir(dir: &Path) -> bool {
    dir.join("header_page").is_file()
}

/// Opens a raw capture directory: page layout, formats, tables and the
/// mapped CPU files. Events are not read here.
pub fn open(dir: &Path) -> Result<RawDir> {
    let d = dir.display();
    let info = read_capped(&dir.join("meta.txt"), MAX_SMALL_FILE)?.map(|t| parse_info(&t)).unwrap_or_default();
    let get = |k: &str| info.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.trim());

    let endian = match get("endian") {
        Some("little") => Endian::Little,
        Some("big") => Endian::Big,
        Some(other) => return Err(Error::Usage(format!("{d}/meta.txt: endian={other}: expected little or big"))),
        // trace_pipe_raw pages are in the kernel's byte order: this machine's.
        None if cfg!(target_endian = "big") => Endian::Big,
        None => Endian::Little,
    };
    let hp_path = dir.join("header_page");
    let Some(header_page) = read_capped(&hp_path, MAX_SMALL_FILE)? else {
        return Err(Error::Usage(format!(
            "{d}: no header_page file: a raw capture directory needs header_page (the page layout, from tracefs events/header_page) beside its cpuN.raw files"
        )));
    };
    let mut layout = match PageLayout::from_header_page(&header_page, endian) {
        Ok(l) => l,
        // A header_page cut short (tracefs returns nothing at a non-zero
        // offset, so a reader whose first read is small keeps 32 bytes):
        // with meta.txt's page size and long size, the layout every kernel
        // since 2.6.31 uses, as `TraceDat::page_layout` falls back to.
        Err(_) if get("page_size").is_some() => {
            let long = get("long_size").and_then(|l| l.parse().ok()).unwrap_or(8);
            PageLayout::new(endian, long, 4096)
        }
        Err(e) => return Err(Error::Parse(e.in_file(hp_path.clone()))),
    };
    if let Some(ps) = get("page_size") {
        let ps: u64 = ps.parse().map_err(|_| Error::Usage(format!("{d}/meta.txt: page_size={ps}: not a number")))?;
        if !PAGE_SIZES.contains(&ps) || ps <= layout.data_offset as u64 {
            return Err(Error::Usage(format!("{d}/meta.txt: page_size={ps}: outside {PAGE_SIZES:?}")));
        }
        layout.page_size = ps as u32;
    } else if !PAGE_SIZES.contains(&(layout.page_size as u64)) {
        return Err(Error::Usage(format!("{}: page size {} outside {PAGE_SIZES:?}", hp_path.display(), layout.page_size)));
    }
    let long_size = match get("long_size").map(str::parse::<u8>) {
        Some(Ok(l @ (4 | 8))) => l,
        Some(_) => return Err(Error::Usage(format!("{d}/meta.txt: long_size: expected 4 or 8"))),
        None => layout.commit_size,
    };

    let mut meta = Meta::new(endian, long_size);
    let events_dir = dir.join("events");
    if let Ok(systems) = std::fs::read_dir(&events_dir) {
        let mut formats = Vec::new();
        for s in systems.flatten() {
            let Ok(names) = std::fs::read_dir(s.path()) else { continue };
            for n in names.flatten() {
                formats.push((s.file_name().to_string_lossy().into_owned(), n.path().join("format")));
            }
        }
        formats.sort();
        for (system, path) in formats {
            if let Some(text) = read_capped(&path, MAX_SMALL_FILE)? {
                meta.add_format(&system, &text);
            }
        }
    }
    if let Some(t) = read_capped(&dir.join("saved_cmdlines"), MAX_BIG_FILE)? {
        meta.add_cmdlines(&t);
    }
    if let Some(t) = read_capped(&dir.join("saved_tgids"), MAX_BIG_FILE)? {
        meta.add_tgids(&t);
    }
    if let Some(t) = read_capped(&dir.join("kallsyms"), MAX_BIG_FILE)? {
        meta.kallsyms = Some(Kallsyms::parse(&t));
    }
    if let Some(t) = read_capped(&dir.join("printk_formats"), MAX_BIG_FILE)? {
        meta.printk = Some(PrintkFormats::parse(&t));
    }

    let clock_of = |p: &Path| -> Result<Option<String>> {
        Ok(read_capped(&p.join("trace_clock"), MAX_SMALL_FILE)?.and_then(|t| clock_name(&t)))
    };
    let mut buffers = Vec::new();
    let top = cpu_files(dir)?;
    if !top.is_empty() {
        buffers.push(RawBuffer { name: String::new(), clock: clock_of(dir)?, cpus: top });
    }
    // Instances: meta.txt's order first, then any other subdirectory with
    // cpuN.raw files, by name.
    let mut names: Vec<String> =
        get("instances").map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let mut others = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "events" && e.path().is_dir() && !names.contains(&name) {
            others.push(name);
        }
    }
    others.sort();
    names.extend(others);
    for name in names {
        let sub = dir.join(&name);
        if !sub.is_dir() {
            continue;
        }
        let cpus = cpu_files(&sub)?;
        if !cpus.is_empty() {
            buffers.push(RawBuffer { clock: clock_of(&sub)?, name, cpus });
        }
    }
    if buffers.is_empty() {
        return Err(Error::Usage(format!("{d}: no cpuN.raw files, neither in the directory nor in instance subdirectories")));
    }
    Ok(RawDir { dir: dir.to_path_buf(), meta, layout, buffers, info })
}

/// The records of one CPU file, page after page. Payloads borrow the mapping.
pub struct RawPages<'d> {
    file: &'d [u8],
    layout: PageLayout,
    next: usize,
    walk: Option<PageEvents<'d>>,
    release: super::ReleaseBehind<'d>,
    path: &'d str,
}

impl<'d> RawPages<'d> {
    pub fn new(cpu: &'d RawCpu, layout: PageLayout) -> Self {
        RawPages { file: cpu.bytes(), layout, next: 0, walk: None, release: super::ReleaseBehind::new(cpu.map.as_ref()), path: &cpu.name }
    }

    /// The next record; errors name the file and the byte offset in it.
    pub fn next_event(&mut self) -> Result<Option<RingEvent<'d>>> {
        loop {
            if let Some(w) = self.walk.as_mut() {
                match w.next() {
                    Some(Ok(ev)) => return Ok(Some(ev)),
                    Some(Err(e)) => {
                        self.walk = None;
                        self.next = self.file.len();
                        return Err(Error::Parse(e.in_file(self.path)));
                    }
                    None => self.walk = None,
                }
            }
            if self.next >= self.file.len() {
                return Ok(None);
            }
            let start = self.next;
            self.release.reached(start as u64);
            let end = start.saturating_add(self.layout.page_size as usize).min(self.file.len());
            self.next = end;
            let page = self.file.get(start..end).unwrap_or(&[]);
            let p = Page::parse(&self.layout, page, start as u64).map_err(|e| {
                self.next = self.file.len();
                Error::Parse(e.in_file(self.path))
            })?;
            self.walk = Some(p.events());
        }
    }
}

/// What a first pass over a raw directory learns.
#[derive(Debug, Default)]
pub struct RawScan {
    /// Events per buffer.
    pub events: Vec<u64>,
    pub offset_writes: Vec<OffsetWrite>,
}

/// Counts events and collects every `kvm_write_tsc_offset` (with tgids from
/// saved_tgids).
pub fn scan(raw: &RawDir) -> Result<RawScan> {
    let mut s = RawScan::default();
    for b in &raw.buffers {
        let mut n = 0;
        for c in &b.cpus {
            let mut pages = RawPages::new(c, raw.layout);
            while let Some(ev) = pages.next_event()? {
                if let RingEvent::Event { ts, data } = ev {
                    n += 1;
                    s.offset_writes.extend(raw.meta.offset_write(data, ts, c.cpu));
                }
            }
        }
        s.events.push(n);
    }
    Ok(s)
}

/// Cursor over one CPU of one buffer of a raw directory.
pub struct RawCursor<'d> {
    pages: RawPages<'d>,
    meta: &'d Meta,
    ctx: ftrace::printfmt::RenderCtx<'d>,
    pids: super::meta::PidCache<'d>,
    cpu: u32,
    cur: Option<RingEvent<'d>>,
}

impl<'d> RawCursor<'d> {
    pub fn new(raw: &'d RawDir, cpu: &'d RawCpu) -> Result<Self> {
        let mut c = RawCursor { pages: RawPages::new(cpu, raw.layout), meta: &raw.meta, ctx: raw.meta.ctx(cpu.cpu), pids: Default::default(), cpu: cpu.cpu, cur: None };
        c.advance()?;
        Ok(c)
    }
}

impl Cursor for RawCursor<'_> {
    fn current(&self) -> Option<EventView<'_>> {
        let (ts, payload) = match self.cur? {
            // A lost marker comes first in its page, at that page's time.
            RingEvent::Lost { count } => (None, Payload::Lost { count }),
            RingEvent::Event { ts, data } => (
                Some(ts),
                Payload::Event(self.meta.record(data, &self.ctx, &self.pids)),
            ),
        };
        Some(EventView { ts: ts.unwrap_or(self.last_ts()), orig_ts: None, placed: Default::default(), cpu: self.cpu, payload })
    }

    fn ts(&self) -> Option<u64> {
        Some(match self.cur? {
            RingEvent::Lost { .. } => self.last_ts(),
            RingEvent::Event { ts, .. } => ts,
        })
    }

    fn advance(&mut self) -> Result<()> {
        self.cur = self.pages.next_event()?;
        Ok(())
    }

    fn detached(&self) -> Option<Detached<'_>> {
        Some(match self.cur? {
            RingEvent::Event { ts, data } => Detached::Raw { ts, orig_ts: None, placed: Default::default(), cpu: self.cpu, data },
            RingEvent::Lost { .. } => Detached::View(self.current()?),
        })
    }
}

impl RawCursor<'_> {
    /// Hands `f` the records from the current one to the end of its page,
    /// each with the time [`Cursor::ts`] gives it, and moves to the next
    /// page's first record, as that many [`Cursor::advance`] calls would
    /// (an error after the records before it).
    pub(crate) fn take_page(&mut self, mut f: impl FnMut(u64, RingEvent<'_>)) -> Result<()> {
        while let Some(cur) = self.cur {
            f(self.ts().unwrap_or_default(), cur);
            // A page is loaded when the walk of the last one ends: the
            // record it yields first belongs to the next call.
            let page = self.pages.next;
            self.advance()?;
            if self.pages.next != page {
                break;
            }
        }
        Ok(())
    }
}

impl RawCursor<'_> {
    /// The timestamp a lost-events marker sorts at: the page's base time
    /// (the walk's running timestamp before its first record).
    fn last_ts(&self) -> u64 {
        match &self.pages.walk {
            Some(PageEvents::Le(w)) => w.timestamp(),
            Some(PageEvents::Be(w)) => w.timestamp(),
            None => 0,
        }
    }
}
