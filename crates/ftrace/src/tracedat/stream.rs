//! Page streams over one CPU's flyrecord data, and the event walk on top.
//! Uncompressed data are slices of the mapped file; compressed v7 data are
//! inflated one chunk at a time into a recycled buffer, so memory stays at
//! one chunk whatever the file size.

use super::compress::{Codec, Inflater};
use crate::budget::Reservation;
use super::BufferCpu;
use crate::ring::{Be, ByteOrder, Le, Page, PageLayout, RingEvent};
use crate::{Endian, Error, FileOffset, Reader, Result};
use std::ops::Range;

enum Source<'d> {
    Plain { pos: usize, end: usize },
    /// Uncompressed data read with pread(2) into a recycled block instead
    /// of borrowed from the mapping: see [`PageStream::read_with`].
    Read { file: &'d std::fs::File, pos: usize, end: usize, block: usize, buf: Vec<u8>, buf_pos: usize, buf_at: u64 },
    /// `res`: `buf`'s share of the memory budget.
    Chunked { pos: usize, end: usize, left: u32, codec: Codec, inf: Inflater, buf: Vec<u8>, res: Reservation, buf_pos: usize, chunk_at: u64 },
}

/// Bytes per pread(2) of [`PageStream::read_with`]: few calls, and small
/// enough to stay in the L2 cache while its pages are walked.
pub const READ_BLOCK: usize = 256 << 10;

/// The pages of one CPU, in file order. A lending stream: each page borrows
/// the stream until the next call.
pub struct PageStream<'d> {
    file: &'d [u8],
    endian: Endian,
    page_size: usize,
    cpu: u32,
    src: Source<'d>,
    cur: Range<usize>,
    cur_at: u64,
}

impl<'d> PageStream<'d> {
    /// `codec` is `Some` when the data are chunk-compressed.
    pub(crate) fn new(file: &'d [u8], endian: Endian, page_size: u32, c: BufferCpu, codec: Option<Codec>) -> Result<PageStream<'d>> {
        let start = usize::try_from(c.offset.0).map_err(|_| Error::invalid(c.offset.0, "CPU data offset too large"))?;
        let end = start
            .checked_add(usize::try_from(c.size).unwrap_or(usize::MAX))
            .filter(|&e| e <= file.len())
            .ok_or_else(|| Error::invalid(c.offset.0, format!("CPU data of {} bytes runs past the end of the file", c.size)))?;
        let src = match codec {
            None => Source::Plain { pos: start, end },
            Some(codec) => {
                // The recorded size leaves out the leading u32 chunk count
                // (seen in trace-cmd 3.1.6 files; trace-input.c never bounds
                // chunk reads by it), so the stream may run 4 bytes past it.
                let end = end.saturating_add(4).min(file.len());
                let mut left = 0;
                let mut pos = start;
                if c.size > 0 {
                    let mut r = Reader::new(&file[start..end], endian, start as u64);
                    left = r.u32("compressed chunk count")?;
                    pos = start + 4;
                }
                Source::Chunked { pos, end, left, codec, inf: Inflater::default(), buf: Vec::new(), res: Reservation::default(), buf_pos: 0, chunk_at: start as u64 }
            }
        };
        Ok(PageStream { file, endian, page_size: page_size.max(1) as usize, cpu: c.cpu, src, cur: 0..0, cur_at: 0 })
    }

    /// Reads uncompressed pages from `file` (the file `data` maps) with
    /// pread(2) into one recycled block of [`READ_BLOCK`] bytes instead of
    /// borrowing them from the mapping; compressed data are unchanged.
    ///
    /// Why: every page of a mapping a reader touches is a new page-table
    /// entry, and in a VM each one is also filled by the hypervisor on the
    /// first access (shadow or nested paging): measured on this project's
    /// PVM guest, ~2 µs per 4 KiB page, invisible to the guest's profilers
    /// as anything but a slow first load. pread(2) copies from the page
    /// cache through the kernel's own mapping into a block that stays
    /// mapped: ~0.17 s per GB here.
    pub fn read_with(self, file: &'d std::fs::File) -> PageStream<'d> {
        self.read_with_block(file, READ_BLOCK)
    }

    /// [`read_with`](Self::read_with) in blocks of `block` bytes (rounded
    /// down to whole pages, at least one): for tests of block boundaries.
    #[doc(hidden)]
    pub fn read_with_block(mut self, file: &'d std::fs::File, block: usize) -> PageStream<'d> {
        if let Source::Plain { pos, end } = self.src {
            // A page is at most 16 MiB (TraceDat::parse): so is a block.
            let block = (block / self.page_size).max(1) * self.page_size;
            self.src = Source::Read { file, pos, end, block, buf: Vec::new(), buf_pos: 0, buf_at: pos as u64 };
        }
        self
    }

    /// Whether the pages (or compressed chunks) are read from the mapping:
    /// false once [`read_with`](Self::read_with) took over.
    pub fn borrows_mapping(&self) -> bool {
        !matches!(self.src, Source::Read { .. })
    }

    /// The CPU these pages belong to.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// The next page and its file offset (for compressed data: the offset of
    /// the chunk holding it). The last page may be short.
    pub fn next_page(&mut self) -> Result<Option<(FileOffset, &[u8])>> {
        if !self.advance()? {
            return Ok(None);
        }
        Ok(Some((FileOffset(self.cur_at), self.current())))
    }

    /// The page last returned by [`next_page`](Self::next_page).
    pub fn current(&self) -> &[u8] {
        let src = match &self.src {
            Source::Plain { .. } => self.file,
            Source::Chunked { buf, .. } | Source::Read { buf, .. } => buf.as_slice(),
        };
        src.get(self.cur.clone()).unwrap_or(&[])
    }

    pub fn current_offset(&self) -> FileOffset {
        FileOffset(self.cur_at)
    }

    fn advance(&mut self) -> Result<bool> {
        let ps = self.page_size;
        match &mut self.src {
            Source::Plain { pos, end } => {
                if *pos >= *end {
                    return Ok(false);
                }
                let n = ps.min(*end - *pos);
                self.cur = *pos..*pos + n;
                self.cur_at = *pos as u64;
                *pos += n;
                Ok(true)
            }
            Source::Read { file, pos, end, block, buf, buf_pos, buf_at } => {
                if *buf_pos >= buf.len() {
                    if *pos >= *end {
                        return Ok(false);
                    }
                    let n = (*block).min(*end - *pos);
                    buf.resize(n, 0);
                    use std::os::unix::fs::FileExt;
                    file.read_exact_at(buf, *pos as u64)
                        .map_err(|source| Error::Io { what: format!("reading {n} bytes of CPU data at byte {pos}"), source })?;
                    *buf_at = *pos as u64;
                    *pos += n;
                    *buf_pos = 0;
                }
                let n = ps.min(buf.len() - *buf_pos);
                self.cur = *buf_pos..*buf_pos + n;
                self.cur_at = *buf_at + *buf_pos as u64;
                *buf_pos += n;
                Ok(true)
            }
            Source::Chunked { pos, end, left, codec, inf, buf, res, buf_pos, chunk_at } => loop {
                if *buf_pos < buf.len() {
                    let n = ps.min(buf.len() - *buf_pos);
                    self.cur = *buf_pos..*buf_pos + n;
                    self.cur_at = *chunk_at;
                    *buf_pos += n;
                    return Ok(true);
                }
                if *left == 0 {
                    return Ok(false);
                }
                let mut r = Reader::new(self.file.get(*pos..*end).unwrap_or(&[]), self.endian, *pos as u64);
                let at = r.offset();
                let csize = r.u32("chunk compressed size")?;
                let usize_ = r.u32("chunk uncompressed size")?;
                let frame = r.bytes(csize as u64, "compressed chunk")?;
                inf.inflate(*codec, frame, usize_, at, buf, res)?;
                *pos += r.pos();
                *left -= 1;
                *buf_pos = 0;
                *chunk_at = at;
            },
        }
    }
}

/// Events of one CPU: [`PageStream`] plus the page decoder. Lending, like
/// the stream: `next_event` borrows until the next call.
///
/// Each page's records are found in one pass when the page is loaded (a
/// tight loop in the stream's byte order) and kept as ranges into the page:
/// moving to the next record is then an index step, and the memory is one
/// entry per record of one page.
pub struct CpuEvents<'d> {
    stream: PageStream<'d>,
    layout: PageLayout,
    /// The current page's records.
    found: Vec<Found>,
    /// Index of the current record in `found`; `found.len()` when none.
    at: usize,
    /// The error that ended the current page's walk early, reported once
    /// the records before it have been handed out (as a walk record by
    /// record would).
    failed: Option<Error>,
    /// Lost-events marks only where libtraceevent reports them
    /// ([`kbuffer_marks`](CpuEvents::kbuffer_marks)).
    kbuffer_marks: bool,
}

#[derive(Clone, Debug)]
enum Found {
    /// An event's time and where its payload is in the page.
    Event(u64, u32, u32),
    Lost(Option<u64>),
}

/// Finds the records of `p` (whose data start `base` bytes into its page).
/// With `kbuffer_marks`, the page's lost-events mark is kept only when its
/// first event's record starts the data (see [`CpuEvents::kbuffer_marks`]).
fn find_all<O: ByteOrder>(p: &Page<'_>, base: usize, out: &mut Vec<Found>, kbuffer_marks: bool) -> Option<Error> {
    let data = p.data();
    let mut walk = p.events_as::<O>();
    // Index of the mark in `out` until the first event decides on it.
    let mut mark = None;
    while let Some(r) = walk.next() {
        match r {
            Ok(RingEvent::Event { ts, data: d }) => {
                if let Some(at) = mark.take() {
                    if walk.last_header().0 != 0 {
                        out.remove(at);
                    }
                }
                // A page is at most a few MiB (the writer's page size): its
                // offsets fit u32.
                let s = base + (d.as_ptr() as usize - data.as_ptr() as usize);
                out.push(Found::Event(ts, s as u32, (s + d.len()) as u32));
            }
            Ok(RingEvent::Lost { count }) if kbuffer_marks => {
                mark = Some(out.len());
                out.push(Found::Lost(count));
            }
            Ok(RingEvent::Lost { count }) => out.push(Found::Lost(count)),
            Err(e) => {
                // No event followed the mark: libtraceevent had none to report it with.
                if let Some(at) = mark {
                    out.remove(at);
                }
                return Some(e);
            }
        }
    }
    if let Some(at) = mark {
        out.remove(at);
    }
    None
}

impl<'d> CpuEvents<'d> {
    pub fn new(stream: PageStream<'d>, layout: PageLayout) -> CpuEvents<'d> {
        CpuEvents { stream, layout, found: Vec::new(), at: 0, failed: None, kbuffer_marks: false }
    }

    /// Hands out a page's lost-events mark only where libtraceevent 1.7.1
    /// reports it, so that a reader can print marks as `trace-cmd report`
    /// does. `kbuffer_missed_events` (src/kbuffer-parse.c) returns the
    /// page's missed count only while the current record sits at offset 0
    /// of the page data (`kbuf->curr == 0`); its walk steps over time
    /// extends, absolute timestamps and padding before the first event, so
    /// a page whose data start with one of those, or that holds no event,
    /// reports no loss at all. Without this (the default) every page's mark
    /// is handed out: the kernel did drop events there.
    pub fn kbuffer_marks(mut self, on: bool) -> CpuEvents<'d> {
        self.kbuffer_marks = on;
        self
    }

    pub fn cpu(&self) -> u32 {
        self.stream.cpu()
    }

    /// [`PageStream::read_with`] for these events' pages (before the first
    /// event is read).
    pub fn read_with(mut self, file: &'d std::fs::File) -> CpuEvents<'d> {
        self.stream = self.stream.read_with(file);
        self
    }

    /// [`PageStream::borrows_mapping`].
    pub fn borrows_mapping(&self) -> bool {
        self.stream.borrows_mapping()
    }

    /// File offset of the page (or compressed chunk) of the last event.
    pub fn page_offset(&self) -> FileOffset {
        self.stream.current_offset()
    }

    /// The next event or lost-events record, with absolute timestamps.
    pub fn next_event(&mut self) -> Result<Option<RingEvent<'_>>> {
        self.advance()?;
        Ok(self.current())
    }

    /// Moves to the next record without handing it out; [`current`]
    /// (Self::current) then shows it, as often as asked, borrowed from the
    /// page in place (no copy).
    #[inline]
    pub fn advance(&mut self) -> Result<()> {
        if self.at + 1 < self.found.len() {
            self.at += 1;
            return Ok(());
        }
        self.next_page()
    }

    /// Loads pages until one has a record (or the walk of one failed).
    fn next_page(&mut self) -> Result<()> {
        self.at = self.found.len();
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        loop {
            let Some((off, page)) = self.stream.next_page()? else { return Ok(()) };
            if u32::try_from(page.len()).is_err() {
                return Err(Error::invalid(off.0, format!("page of {} bytes: larger than any ring-buffer page", page.len())));
            }
            let p = Page::parse(&self.layout, page, off.0)?;
            let base = p.data().as_ptr() as usize - page.as_ptr() as usize;
            self.found.clear();
            self.failed = match self.layout.endian {
                Endian::Little => find_all::<Le>(&p, base, &mut self.found, self.kbuffer_marks),
                Endian::Big => find_all::<Be>(&p, base, &mut self.found, self.kbuffer_marks),
            };
            self.at = 0;
            if !self.found.is_empty() {
                return Ok(());
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
    }

    /// The records of the current page from the current one on, borrowed
    /// in place; [`advance_page`](Self::advance_page) then moves past them.
    /// For readers that take a page's records in one go instead of one
    /// [`advance`](Self::advance) and [`current`](Self::current) each.
    pub fn rest_of_page(&self) -> impl Iterator<Item = RingEvent<'_>> + '_ {
        let page = self.stream.current();
        self.found.get(self.at..).unwrap_or_default().iter().map(move |f| match *f {
            Found::Lost(count) => RingEvent::Lost { count },
            Found::Event(ts, start, end) => RingEvent::Event { ts, data: page.get(start as usize..end as usize).unwrap_or(&[]) },
        })
    }

    /// Moves to the first record of the next page with one (past the rest
    /// of this one); an error as [`advance`](Self::advance) past the
    /// page's last record would give it.
    pub fn advance_page(&mut self) -> Result<()> {
        self.next_page()
    }

    /// What [`current`](Self::current) would show, without slicing it out:
    /// `None` at the end, `Some(None)` for a lost-events record, else the
    /// event's time.
    #[inline]
    pub fn peek(&self) -> Option<Option<u64>> {
        Some(match self.found.get(self.at)? {
            Found::Lost(_) => None,
            Found::Event(ts, ..) => Some(*ts),
        })
    }

    /// The record [`advance`](Self::advance) moved to; `None` at the end.
    #[inline]
    pub fn current(&self) -> Option<RingEvent<'_>> {
        Some(match *self.found.get(self.at)? {
            Found::Lost(count) => RingEvent::Lost { count },
            Found::Event(ts, start, end) => {
                let data = self.stream.current().get(start as usize..end as usize).unwrap_or(&[]);
                RingEvent::Event { ts, data }
            }
        })
    }
}
