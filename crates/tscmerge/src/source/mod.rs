//! Opening any input: recognised by content, never by name.
//!
//! - trace.dat (magic `17 08 44 "tracing"`), versions 6 and 7;
//! - a directory of raw `trace_pipe_raw` captures with their format files;
//! - ftrace text (tracefs `trace`/`trace_pipe`, `trace-cmd report`).

pub mod dat;
pub mod graph;
pub mod meta;
pub mod pages;
pub mod raw;
pub mod text;

use std::path::{Path, PathBuf};

use crate::clock::OffsetWrite;
use crate::event::Cursor;
use crate::{Error, Result};

/// trace.dat magic: `\x17\x08\x44tracing` (trace-cmd.dat.v7 documentation).
pub const TRACEDAT_MAGIC: &[u8] = b"\x17\x08\x44tracing";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    TraceDat,
    RawDir,
    Text,
}

/// One buffer of an input (a trace.dat holds several: top level and instances).
#[derive(Clone, Debug)]
pub struct BufferDesc {
    /// `""` for the top-level buffer.
    pub name: String,
    /// The trace clock by name; for text, inferred from the timestamps.
    pub clock: String,
    pub cpus: Vec<u32>,
    pub events: Option<u64>,
}

impl BufferDesc {
    /// Whether timestamps are TSC cycles (`x86-tsc`; text with integer
    /// timestamps is assumed to be `x86-tsc`, the only counter clock that
    /// a merge makes sense with).
    pub fn is_tsc(&self) -> bool {
        self.clock == "x86-tsc"
    }
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { "top level" } else { &self.name }
    }
}

/// Releases the pages of a read-only file mapping behind a reader that moves
/// forward through one region of it (text inputs, raw captures, compressed
/// trace.dat chunks; uncompressed trace.dat pages are read with pread(2)
/// instead, [`ftrace::tracedat::PageStream::read_with`]), so that peak RSS
/// stays at a few MiB per cursor instead of the whole file (mapped pages
/// count in RSS once touched).
/// `MADV_DONTNEED` on a shared file mapping only unmaps: a later read of the
/// range faults the same bytes in again from the page cache, so slices
/// handed out earlier stay valid (madvise(2)); it is never used on anything
/// but these read-only `Mmap`s.
///
/// It also maps the next [`POPULATE_STEP`] ahead of the reader in one
/// `MADV_POPULATE_READ` (Linux 5.14) instead of a page fault per 64 KiB
/// (the kernel's fault-around): in a VM each fault is an exception taken
/// and returned, ~5 µs here, 7% of a one-core merge of 3 GB. Only once the
/// reader is [`POPULATE_AFTER`] into its region: a merge opens a cursor on
/// every input at once, and hundreds of small guest files populated at the
/// start would all be resident together (a real recording with 698
/// micro-VM traces: 578 MB).
pub(crate) struct ReleaseBehind<'d> {
    map: Option<&'d memmap2::Mmap>,
    /// Where the region starts: the first position seen.
    start: Option<usize>,
    /// Released up to this offset (OS-page aligned); `None` until the first
    /// position is seen.
    done: Option<usize>,
    /// Populated up to this offset.
    ahead: usize,
    /// The first position with anything to do.
    next: usize,
}

/// Release in steps of this many bytes: one madvise per 2 MiB read.
const RELEASE_STEP: usize = 2 << 20;
/// Populate in steps of this many bytes: small beside the release step, as
/// it adds to each cursor's mapped pages (at most step + populate step,
/// 3 MiB, per cursor).
const POPULATE_STEP: usize = 1 << 20;
/// Bytes a reader reads of its region before pages are populated ahead of it.
const POPULATE_AFTER: usize = 256 << 10;
const OS_PAGE: usize = 4096;

impl<'d> ReleaseBehind<'d> {
    pub(crate) fn new(map: Option<&'d memmap2::Mmap>) -> Self {
        if let Some(m) = map {
            // Readahead tuned for a forward scan; advice only, errors do not matter.
            let _ = m.advise(memmap2::Advice::Sequential);
        }
        ReleaseBehind { map, start: None, done: None, ahead: 0, next: 0 }
    }

    /// The reader is now at file offset `pos`: everything of its region
    /// before `pos` has been read. Called per record: all but one call in
    /// thousands return at the first comparison.
    #[inline]
    pub(crate) fn reached(&mut self, pos: u64) {
        if (pos as usize) < self.next || pos == 0 {
            return; // pos 0: no page yet (offset 0 is the file header, never event data)
        }
        self.step(pos as usize);
    }

    #[inline(never)]
    fn step(&mut self, pos: usize) {
        let Some(map) = self.map else {
            self.next = usize::MAX;
            return;
        };
        let pos = pos.min(map.len());
        let start = *self.start.get_or_insert(pos);
        // Populate once the reader is POPULATE_AFTER in, then again half a
        // step before the populated range ends.
        let first = start.saturating_add(POPULATE_AFTER);
        let populate_at = |ahead: usize| if ahead >= map.len() { usize::MAX } else { ahead.saturating_sub(POPULATE_STEP / 2).max(first) };
        if pos >= populate_at(self.ahead) {
            let from = self.ahead.max(pos / OS_PAGE * OS_PAGE);
            let to = from.saturating_add(POPULATE_STEP).min(map.len());
            if from < to {
                // Advice only: where it fails, pages fault in as before.
                let _ = map.advise_range(memmap2::Advice::PopulateRead, from, to - from);
            }
            self.ahead = to;
        }
        let done = *self.done.get_or_insert(pos.next_multiple_of(OS_PAGE));
        if pos >= done.saturating_add(RELEASE_STEP) {
            let end = pos / OS_PAGE * OS_PAGE;
            drop_pages(map, done, end);
            self.done = Some(end);
        }
        let release_at = self.done.map_or(usize::MAX, |d| d.saturating_add(RELEASE_STEP));
        self.next = release_at.min(populate_at(self.ahead)).max(pos + 1);
    }

    /// The reader is at the end of a region that runs to the end of the
    /// mapping (a text file): release the rest, however small (steps alone
    /// would keep files under 2 MiB mapped: hundreds of guest files add up).
    pub(crate) fn reached_end(&mut self) {
        let Some(map) = self.map else { return };
        drop_pages(map, self.done.unwrap_or(0), map.len());
        self.done = Some(map.len());
    }
}

/// Drops the mapped pages of `from..to` (page-aligned `from`).
fn drop_pages(map: &memmap2::Mmap, from: usize, to: usize) {
    if from >= to {
        return;
    }
    // SAFETY: `map` is a read-only MAP_SHARED file mapping (memmap2
    // `Mmap::map`); DONTNEED drops its pages, which fault back in from the
    // file if read again: no data changes under any borrower.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
}

enum Data {
    Map(memmap2::Mmap),
    /// `fd` is the mapped file, open: uncompressed pages are read from it
    /// ([`ftrace::tracedat::PageStream::read_with`]), not from the mapping.
    Dat { file: dat::DatFile, meta: meta::Meta, fd: std::fs::File },
    Raw(raw::RawDir),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Raw(_) => &[],
            Data::Dat { file, .. } => file.borrow_owner(),
        }
    }
}

/// One CPU of an input as a page-copying writer reads it.
pub enum PageFeed<'a> {
    Pages(pages::PageSource<'a>),
    /// Text: event by event (guest cursors already placed on the host timeline).
    Events(Box<dyn Cursor + 'a>),
}

/// An opened input.
pub struct Input {
    pub path: PathBuf,
    pub kind: InputKind,
    data: Data,
    buffers: Vec<BufferDesc>,
    offset_writes: Vec<OffsetWrite>,
    /// For a host with trace-cmd GUEST options: each vCPU thread they
    /// name, with how many events of it the recording holds.
    guest_thread_events: Vec<(i32, u64)>,
    /// A trace.dat's lost-events marks only where libtraceevent reports
    /// them ([`set_kbuffer_marks`](Self::set_kbuffer_marks)).
    kbuffer_marks: bool,
    /// The mapping of a text or trace.dat input, registered so that its
    /// truncation while read is an error naming the file ([`map_input`]).
    _guard: Option<safefs::MapGuard>,
}

/// Maps an input read-only, registered with [`safefs::MapGuard`]: another
/// process truncating the file while we read it makes the read fault
/// (SIGBUS); the process then ends with an error naming the file and the
/// byte offset (exit 2), removing its temporary outputs, instead of dying
/// of the signal without a word.
pub(crate) fn map_input(file: &std::fs::File, path: &Path) -> Result<(memmap2::Mmap, safefs::MapGuard)> {
    // SAFETY: the mapping is read-only and never written through; a file
    // truncated underneath us faults, and the guard turns that fault into
    // an error naming the file.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(io_err(path))?;
    let guard = safefs::MapGuard::new(map.as_ptr(), map.len(), path);
    Ok((map, guard))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

impl Input {
    pub fn open(path: &Path) -> Result<Input> {
        Self::open_threads(path, 1)
    }

    /// [`open`](Self::open), scanning a trace.dat's CPUs for offset writes
    /// on up to `threads` threads.
    pub fn open_threads(path: &Path, threads: usize) -> Result<Input> {
        Self::open_scanning(path, threads, true)
    }

    /// [`open`](Self::open) for a reader that needs no offset timeline and
    /// no event counts (`report`): a trace.dat is not scanned ahead for
    /// kvm_write_tsc_offset events and GUEST threads. That pass reads, and
    /// for a compressed file inflates, every page once more before the
    /// first event is out: on a zstd recording of this machine with the kvm
    /// formats listed (trace-cmd extract lists every format), a fifth of a
    /// one-thread report.
    /// With `threads` > 1, a trace.dat's kallsyms are parsed on a second
    /// thread while its formats are.
    pub fn open_unscanned(path: &Path, threads: usize) -> Result<Input> {
        Self::open_scanning(path, threads, false)
    }

    fn open_scanning(path: &Path, threads: usize, scan: bool) -> Result<Input> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.is_dir() {
            return Self::open_raw(path);
        }
        // A pipe or device would map as 0 bytes ("empty file") or not at all.
        safefs::refuse_special_input(path, &meta)?;
        if meta.len() == 0 {
            return Err(Error::Usage(format!(
                "{}: empty file (0 bytes): neither a trace.dat nor ftrace text",
                path.display()
            )));
        }
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        let (map, guard) = map_input(&file, path)?;
        let data = Data::Map(map);
        let name = path.display().to_string();
        if let Data::Map(m) = &data {
            if m.starts_with(TRACEDAT_MAGIC) {
                let Data::Map(m) = data else { unreachable!() };
                return Self::open_dat(path, m, guard, file, threads, scan);
            }
        }
        let bytes = data.bytes();
        if !bytes.is_empty() && !ftrace::text::sniff(&bytes[..bytes.len().min(4096)]) {
            return Err(Error::Usage(format!(
                "{name}: not a trace.dat file (no magic 17 08 44 'tracing' at byte 0), not a raw capture directory, and not ftrace text"
            )));
        }
        let map = match &data {
            Data::Map(m) => Some(m),
            _ => None,
        };
        let scan = text::scan(bytes, map, &name)?;
        let clock = match scan.counter_ts {
            Some(false) => "a nanosecond clock (sec.usec timestamps)".to_string(),
            _ => "x86-tsc".to_string(),
        };
        let buffers = vec![BufferDesc { name: String::new(), clock, cpus: scan.cpus, events: Some(scan.events) }];
        Ok(Input { path: path.to_path_buf(), kind: InputKind::Text, data, buffers, offset_writes: scan.offset_writes, guest_thread_events: Vec::new(), kbuffer_marks: false, _guard: Some(guard) })
    }

    fn open_dat(path: &Path, map: memmap2::Mmap, guard: safefs::MapGuard, fd: std::fs::File, threads: usize, wanted: bool) -> Result<Input> {
        let name = path.display().to_string();
        let file = dat::parse(map, &name)?;
        let dat = file.borrow_dependent();
        let meta = dat::meta(dat, threads);
        // The offset timeline needs every kvm_write_tsc_offset before the
        // merge: a pass over the file, skipped when the file has no such
        // event type (guests' files): it would touch every page twice.
        let scan = meta.has_offset_writes();
        // A trace-cmd host names its guests' vCPU threads (GUEST options):
        // the same pass counts their events, so that a map naming threads
        // the recording never saw is found before the merge.
        let mut watch: Vec<i32> = dat.guests().flat_map(|g| g.vcpus.iter().map(|&(_, p)| p as i32)).collect();
        watch.sort_unstable();
        watch.dedup();
        let scan = wanted && (scan || !watch.is_empty());
        // One job per (buffer, CPU), taken in turn by `threads` threads;
        // results kept in job order, so the outcome does not depend on them.
        // Buffers the recording says hold no such event are not scanned
        // either (their events are then not counted).
        let scanned: Vec<bool> = dat.buffers().iter().map(|b| scan && (!watch.is_empty() || !meta.lacks_offset_writes(&b.name))).collect();
        let jobs: Vec<(usize, usize)> =
            dat.buffers().iter().enumerate().filter(|(bi, _)| scanned[*bi]).flat_map(|(bi, b)| (0..b.cpus.len()).map(move |ci| (bi, ci))).collect();
        let scan_cpu = |(bi, ci): (usize, usize)| -> Result<(u64, Vec<OffsetWrite>, Vec<u64>)> {
            let mut ev = dat.cpu_events(bi, ci).map_err(|e| e.in_file(&name))?.read_with(&fd);
            let cpu = ev.cpu();
            let mut release = ReleaseBehind::new(ev.borrows_mapping().then(|| file.borrow_owner()));
            let (mut events, mut writes) = (0u64, Vec::new());
            let mut seen = vec![0u64; watch.len()];
            loop {
                release.reached(ev.page_offset().0);
                let Some(r) = ev.next_event().map_err(|e| e.in_file(&name))? else { break };
                if let ftrace::ring::RingEvent::Event { ts, data } = r {
                    events += 1;
                    writes.extend(meta.offset_write(data, ts, cpu));
                    if !watch.is_empty() {
                        if let Some(i) = meta.record_pid(data).and_then(|p| watch.binary_search(&p).ok()) {
                            seen[i] += 1;
                        }
                    }
                }
            }
            // Growth slack freed: at 10 GB the writes are tens of MB.
            writes.shrink_to_fit();
            Ok((events, writes, seen))
        };
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || -> Result<Vec<(usize, (u64, Vec<OffsetWrite>, Vec<u64>))>> {
            let mut done = Vec::new();
            loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&job) = jobs.get(j) else { return Ok(done) };
                done.push((j, scan_cpu(job)?));
            }
        };
        let mut results = std::thread::scope(|s| -> Result<Vec<_>> {
            let helpers: Vec<_> = (1..threads.clamp(1, jobs.len().max(1))).map(|_| s.spawn(work)).collect();
            let mut all = work()?;
            for h in helpers {
                all.extend(h.join().map_err(|_| Error::Usage(format!("{name}: a scanning thread panicked")))??);
            }
            Ok(all)
        })?;
        results.sort_by_key(|(j, _)| *j);
        let mut per_buffer = vec![0u64; dat.buffers().len()];
        let total = results.iter().map(|(_, (_, w, _))| w.len()).sum::<usize>();
        let mut offset_writes: Vec<OffsetWrite> = Vec::new();
        let mut seen = vec![0u64; watch.len()];
        for (j, (events, writes, s)) in results {
            per_buffer[jobs[j].0] += events;
            seen.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            // The first CPU's writes become the list (no copy of them);
            // the others join it once it holds room for all.
            if offset_writes.capacity() == 0 {
                offset_writes = writes;
                offset_writes.reserve_exact(total - offset_writes.len());
            } else {
                offset_writes.extend(writes);
            }
        }
        let buffers = dat
            .buffers()
            .iter()
            .zip(per_buffer)
            .zip(scanned)
            .map(|((b, events), scanned)| BufferDesc {
                name: b.name.clone(),
                clock: b.clock.clone().unwrap_or_else(|| "unknown (the file does not say)".into()),
                cpus: b.cpus.iter().map(|c| c.cpu).collect(),
                events: scanned.then_some(events),
            })
            .collect();
        let guest_thread_events = watch.into_iter().zip(seen).collect();
        Ok(Input { path: path.to_path_buf(), kind: InputKind::TraceDat, data: Data::Dat { file, meta, fd }, buffers, offset_writes, guest_thread_events, kbuffer_marks: false, _guard: Some(guard) })
    }

    fn open_raw(path: &Path) -> Result<Input> {
        let dir = raw::open(path)?;
        let scan = raw::scan(&dir)?;
        let buffers = dir
            .buffers
            .iter()
            .zip(&scan.events)
            .map(|(b, &n)| BufferDesc {
                name: b.name.clone(),
                clock: b.clock.clone().unwrap_or_else(|| "unknown (no trace_clock file)".into()),
                cpus: b.cpus.iter().map(|c| c.cpu).collect(),
                events: Some(n),
            })
            .collect();
        Ok(Input { path: path.to_path_buf(), kind: InputKind::RawDir, data: Data::Raw(dir), buffers, offset_writes: scan.offset_writes, guest_thread_events: Vec::new(), kbuffer_marks: false, _guard: None })
    }

    /// The decoding tables of a binary input (trace.dat, raw directory).
    pub fn meta(&self) -> Option<&meta::Meta> {
        match &self.data {
            Data::Dat { meta, .. } => Some(meta),
            Data::Raw(r) => Some(&r.meta),
            Data::Map(_) => None,
        }
    }

    /// Whether trace-cmd's plugins render this input's events (`report -N`
    /// turns them off).
    pub fn set_plugins(&mut self, on: bool) {
        match &mut self.data {
            Data::Dat { meta, .. } => meta.plugins = on,
            Data::Raw(r) => r.meta.plugins = on,
            Data::Map(_) => {}
        }
    }

    /// A trace.dat's lost-events marks as `trace-cmd report` shows them:
    /// only where libtraceevent reports them
    /// ([`ftrace::tracedat::CpuEvents::kbuffer_marks`]). Other inputs keep
    /// every mark (trace-cmd reads only trace.dat).
    pub fn set_kbuffer_marks(&mut self, on: bool) {
        self.kbuffer_marks = on;
    }

    /// The opened raw capture directory, for `info`.
    pub fn rawdir(&self) -> Option<&raw::RawDir> {
        match &self.data {
            Data::Raw(r) => Some(r),
            _ => None,
        }
    }

    /// The parsed trace.dat, for `info`.
    pub fn tracedat(&self) -> Option<&ftrace::tracedat::TraceDat<'_>> {
        match &self.data {
            Data::Dat { file, .. } => Some(file.borrow_dependent()),
            _ => None,
        }
    }

    /// What `tscmerge record` stored in this trace.dat beside the events
    /// (debugfs snapshots, TSC frequency); None for other inputs.
    pub fn recorded_facts(&self) -> Option<&meta::RecordedFacts> {
        match &self.data {
            Data::Dat { meta, .. } => meta.recorded.as_ref(),
            _ => None,
        }
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    pub fn buffers(&self) -> &[BufferDesc] {
        &self.buffers
    }

    /// Each vCPU thread this input's GUEST options name, with its events in
    /// the recording (empty without GUEST options).
    pub fn guest_thread_events(&self) -> &[(i32, u64)] {
        &self.guest_thread_events
    }

    /// Every `kvm_write_tsc_offset` in any buffer of this input.
    pub fn offset_writes(&self) -> &[OffsetWrite] {
        &self.offset_writes
    }

    /// The offset writes, moved out (the input keeps none): a busy host's
    /// run up to tens of MB, which the timeline built from them replaces.
    pub fn take_offset_writes(&mut self) -> Vec<OffsetWrite> {
        std::mem::take(&mut self.offset_writes)
    }

    /// One buffer by CPU for a page-copying writer: binary inputs give page
    /// sources, text gives a cursor per CPU. `clock` makes a CPU's guest
    /// clock (`None` for the host); `cursors(buffer, per_cpu)` numbers the
    /// same CPUs in the same order.
    pub fn page_sources<'a>(&'a self, buffer: usize, mut clock: impl FnMut(u32) -> Option<pages::GuestClock<'a>>) -> Result<Vec<(u32, PageFeed<'a>)>> {
        let name = self.name();
        let desc = self.buffers.get(buffer).ok_or_else(|| Error::Usage(format!("{name}: no buffer #{buffer}")))?;
        match &self.data {
            Data::Dat { file, meta, fd } => {
                let dat = file.borrow_dependent();
                let path = self.path.to_str().unwrap_or("trace.dat");
                (0..desc.cpus.len())
                    .map(|ci| {
                        let stream = dat.pages(buffer, ci).map_err(|e| e.in_file(path))?.read_with(fd);
                        let cpu = stream.cpu();
                        let release = ReleaseBehind::new(stream.borrows_mapping().then(|| file.borrow_owner()));
                        Ok((cpu, PageFeed::Pages(pages::PageSource::dat(stream, dat.page_layout(), meta, release, path, clock(cpu)))))
                    })
                    .collect()
            }
            Data::Raw(dir) => {
                let b = dir.buffers.get(buffer).ok_or_else(|| Error::Usage(format!("{name}: no buffer #{buffer}")))?;
                Ok(b.cpus
                    .iter()
                    .map(|c| {
                        let release = ReleaseBehind::new(c.map.as_ref());
                        let src = pages::PageSource::raw(c.bytes(), dir.layout, &dir.meta, c.cpu, release, c.name(), clock(c.cpu));
                        (c.cpu, PageFeed::Pages(src))
                    })
                    .collect())
            }
            Data::Map(_) => Ok(self.cursors(buffer, true)?.into_iter().map(|(cpu, c)| (cpu.unwrap_or(0), PageFeed::Events(c))).collect()),
        }
    }

    /// Cursors over one buffer: one per CPU when `per_cpu` (needed for guests),
    /// else as few as the input allows. Each comes with its CPU when per CPU.
    pub fn cursors(&self, buffer: usize, per_cpu: bool) -> Result<Vec<(Option<u32>, Box<dyn Cursor + '_>)>> {
        Ok(self.any_cursors(buffer, per_cpu)?.into_iter().map(|(cpu, c)| (cpu, c.boxed())).collect())
    }

    /// [`cursors`](Self::cursors) as their concrete types, for readers that
    /// call them once per record and gain from static dispatch (the
    /// run-window pass, [`crate::runs`]).
    pub fn any_cursors(&self, buffer: usize, per_cpu: bool) -> Result<Vec<(Option<u32>, AnyCursor<'_>)>> {
        let name = self.name();
        let desc = self.buffers.get(buffer).ok_or_else(|| Error::Usage(format!("{name}: no buffer #{buffer}")))?;
        match self.kind {
            InputKind::Text => {
                let bytes = self.data.bytes();
                let map = match &self.data {
                    Data::Map(m) => Some(m),
                    _ => None,
                };
                if per_cpu {
                    desc.cpus
                        .iter()
                        .map(|&cpu| Ok((Some(cpu), AnyCursor::Text(text::TextCursor::new(bytes, map, Some(cpu), &name)?))))
                        .collect()
                } else {
                    Ok(vec![(None, AnyCursor::Text(text::TextCursor::new(bytes, map, None, &name)?))])
                }
            }
            InputKind::TraceDat => {
                let Data::Dat { file, meta, fd } = &self.data else { unreachable!("a TraceDat input holds Data::Dat") };
                let dat = file.borrow_dependent();
                let path = self.path.to_str().unwrap_or("trace.dat");
                (0..desc.cpus.len())
                    .map(|ci| {
                        let ev = dat.cpu_events(buffer, ci).map_err(|e| e.in_file(path))?.read_with(fd).kbuffer_marks(self.kbuffer_marks);
                        let cpu = ev.cpu();
                        let release = ReleaseBehind::new(ev.borrows_mapping().then(|| file.borrow_owner()));
                        Ok((Some(cpu), AnyCursor::Dat(dat::DatCursor::new(ev, meta, release, path)?)))
                    })
                    .collect()
            }
            InputKind::RawDir => {
                let Data::Raw(dir) = &self.data else { unreachable!("a RawDir input holds Data::Raw") };
                let b = dir.buffers.get(buffer).ok_or_else(|| Error::Usage(format!("{name}: no buffer #{buffer}")))?;
                b.cpus.iter().map(|c| Ok((Some(c.cpu), AnyCursor::Raw(raw::RawCursor::new(dir, c)?)))).collect()
            }
        }
    }
}

/// A cursor of one of the input kinds, dispatched by `match` instead of a
/// vtable: the run-window pass ([`crate::runs`]) reads every host record a
/// second time, where calls that cannot be inlined cost as much as the
/// reading. `Boxed` holds any other cursor (tests, adapters).
pub enum AnyCursor<'a> {
    Dat(dat::DatCursor<'a>),
    Raw(raw::RawCursor<'a>),
    Text(text::TextCursor<'a>),
    Boxed(Box<dyn Cursor + 'a>),
}

impl<'a> AnyCursor<'a> {
    /// As a trait object, without a second layer of dispatch.
    pub fn boxed(self) -> Box<dyn Cursor + 'a> {
        match self {
            AnyCursor::Dat(c) => Box::new(c),
            AnyCursor::Raw(c) => Box::new(c),
            AnyCursor::Text(c) => Box::new(c),
            AnyCursor::Boxed(c) => c,
        }
    }
}

impl<'a> From<Box<dyn Cursor + 'a>> for AnyCursor<'a> {
    fn from(c: Box<dyn Cursor + 'a>) -> Self {
        AnyCursor::Boxed(c)
    }
}

macro_rules! any_cursor {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            AnyCursor::Dat($c) => $e,
            AnyCursor::Raw($c) => $e,
            AnyCursor::Text($c) => $e,
            AnyCursor::Boxed($c) => $e,
        }
    };
}

impl Cursor for AnyCursor<'_> {
    #[inline]
    fn current(&self) -> Option<crate::EventView<'_>> {
        any_cursor!(self, c => c.current())
    }
    #[inline]
    fn ts(&self) -> Option<u64> {
        any_cursor!(self, c => c.ts())
    }
    #[inline]
    fn advance(&mut self) -> Result<()> {
        any_cursor!(self, c => c.advance())
    }
    #[inline]
    fn detached(&self) -> Option<crate::event::Detached<'_>> {
        any_cursor!(self, c => c.detached())
    }
    #[inline]
    fn own_ts(&self) -> Option<Option<u64>> {
        any_cursor!(self, c => c.own_ts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of the mapping of `path` in this process (/proc/self/smaps).
    fn rss_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut lines = smaps.lines().skip_while(|l| !l.ends_with(name));
        lines.next().expect("the mapping");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn pages_are_populated_ahead_only_once_the_reader_is_in() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 4 << 20]).unwrap();
        let map = unsafe { memmap2::Mmap::map(f.as_file()) }.unwrap();
        let mut r = ReleaseBehind::new(Some(&map));
        // Many cursors open at once: the first position maps nothing ahead.
        r.reached(4096);
        assert!(rss_kib(f.path()) < 128, "populated at the start: {} KiB", rss_kib(f.path()));
        // A reader well into its region gets the next MiB in one go.
        r.reached(300 << 10);
        assert!(rss_kib(f.path()) >= 1024, "not populated ahead: {} KiB", rss_kib(f.path()));
        // And pages behind it are released as it moves on.
        r.reached(3 << 20);
        let after = rss_kib(f.path());
        assert!(after < 3 << 10, "not released: {after} KiB");
    }
}
