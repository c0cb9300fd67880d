//! One ring-buffer page: header check and the record walk.

use super::PageLayout;
use crate::{Endian, Error, Result};
use std::marker::PhantomData;

/// Commit-word flags (kernel/trace/ring_buffer.c `RB_MISSED_EVENTS`,
/// `RB_MISSED_STORED`): events were lost before this page; the count is
/// stored as a kernel long right after the data.
const MISSED_EVENTS: u64 = 1 << 31;
const MISSED_STORED: u64 = 1 << 30;
/// The data length lives in the low bits of commit (libtraceevent
/// kbuffer-parse.c `COMMIT_MASK`).
const COMMIT_MASK: u64 = (1 << 27) - 1;

/// Record types above the data range (include/linux/ring_buffer.h).
const TYPE_DATA_MAX: u32 = 28;
const TYPE_PADDING: u32 = 29;
const TYPE_TIME_EXTEND: u32 = 30;
const TYPE_TIME_STAMP: u32 = 31;
/// Time extends carry bits 27.. of the delta in `array[0]`.
const TS_SHIFT: u32 = 27;
/// Absolute timestamps hold 59 bits; the top 5 come from the running
/// timestamp (ring_buffer.c `TS_MSB`, `rb_fix_abs_ts`, since 5.19).
const TS_MSB: u64 = 0xf8 << 56;

/// A record decoded from a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingEvent<'p> {
    /// An event: its absolute timestamp (trace clock units) and payload
    /// (the event's fields, starting with `common_type`).
    Event { ts: u64, data: &'p [u8] },
    /// Events were lost before this page; `count` when the kernel stored it.
    Lost { count: Option<u64> },
}

/// Byte order as a type, so the record walk is compiled once per order.
pub trait ByteOrder: Copy + Default + std::fmt::Debug + Send + Sync + 'static {
    const ENDIAN: Endian;
    fn u32(b: [u8; 4]) -> u32;
    fn u64(b: [u8; 8]) -> u64;
    /// Splits an event header into `(type_len, time_delta)`. The C bitfield
    /// `u32 type_len:5, time_delta:27` puts type_len in the low bits on
    /// little-endian kernels and in the high bits on big-endian ones.
    fn split_header(h: u32) -> (u32, u32);
}

/// Little-endian pages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Le;
/// Big-endian pages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Be;

impl ByteOrder for Le {
    const ENDIAN: Endian = Endian::Little;
    #[inline(always)]
    fn u32(b: [u8; 4]) -> u32 {
        u32::from_le_bytes(b)
    }
    #[inline(always)]
    fn u64(b: [u8; 8]) -> u64 {
        u64::from_le_bytes(b)
    }
    #[inline(always)]
    fn split_header(h: u32) -> (u32, u32) {
        (h & 0x1f, h >> 5)
    }
}

impl ByteOrder for Be {
    const ENDIAN: Endian = Endian::Big;
    #[inline(always)]
    fn u32(b: [u8; 4]) -> u32 {
        u32::from_be_bytes(b)
    }
    #[inline(always)]
    fn u64(b: [u8; 8]) -> u64 {
        u64::from_be_bytes(b)
    }
    #[inline(always)]
    fn split_header(h: u32) -> (u32, u32) {
        (h >> 27, h & ((1 << 27) - 1))
    }
}

/// A checked page: timestamp, lost-events flag and the committed data.
#[derive(Clone, Copy, Debug)]
pub struct Page<'p> {
    endian: Endian,
    timestamp: u64,
    lost: Option<Option<u64>>,
    data: &'p [u8],
    data_offset: u64,
}

impl<'p> Page<'p> {
    /// Checks the page header. `page` may be shorter than the layout's page
    /// size (a short read) as long as it holds the committed data;
    /// `file_offset` is where `page[0]` lives, for errors.
    pub fn parse(layout: &PageLayout, page: &'p [u8], file_offset: u64) -> Result<Page<'p>> {
        let e = layout.endian;
        let need = 8 + layout.commit_size as usize;
        if page.len() < need || (layout.data_offset as usize) < need {
            return Err(Error::Truncated {
                offset: file_offset,
                needed: need.max(layout.data_offset as usize) as u64,
                what: "ring-buffer page header",
            });
        }
        let timestamp = e.u64(page[0..8].try_into().unwrap_or_default());
        let commit = e.uint(&page[8..need]).unwrap_or(0);
        let size = commit & COMMIT_MASK;
        let data_start = layout.data_offset as usize;
        let room = (layout.page_size as usize).min(page.len()).saturating_sub(data_start);
        if size > room as u64 {
            return Err(Error::invalid(
                file_offset + 8,
                format!("ring-buffer page commit {size} exceeds the {room} data bytes of the page"),
            ));
        }
        let size = size as usize;
        let data = &page[data_start..data_start + size];
        let lost = if commit & MISSED_EVENTS != 0 {
            if commit & MISSED_STORED != 0 {
                let at = data_start + size;
                let cs = layout.commit_size as usize;
                let count = page.get(at..at + cs).and_then(|b| e.uint(b)).ok_or(Error::Truncated {
                    offset: file_offset + at as u64,
                    needed: cs as u64,
                    what: "ring-buffer page missed-events count",
                })?;
                Some(Some(count))
            } else {
                Some(None)
            }
        } else {
            None
        };
        Ok(Page { endian: e, timestamp, lost, data, data_offset: file_offset + data_start as u64 })
    }

    /// The page's base timestamp: the first record's delta is relative to it.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// `Some(count)` when events were lost before this page.
    pub fn lost(&self) -> Option<Option<u64>> {
        self.lost
    }
    /// The committed record bytes.
    pub fn data(&self) -> &'p [u8] {
        self.data
    }
    /// File offset of the first record.
    pub fn data_file_offset(&self) -> u64 {
        self.data_offset
    }

    /// The records, a [`RingEvent::Lost`] first when the page says so.
    pub fn events(&self) -> PageEvents<'p> {
        match self.endian {
            Endian::Little => PageEvents::Le(self.events_as()),
            Endian::Big => PageEvents::Be(self.events_as()),
        }
    }

    /// The record walk for a byte order known at compile time. The order must
    /// be the layout's: callers that decided it once per stream use this.
    pub fn events_as<O: ByteOrder>(&self) -> RawEvents<'p, O> {
        debug_assert_eq!(O::ENDIAN, self.endian);
        RawEvents { data: self.data, pos: 0, ts: self.timestamp, base: self.data_offset, lost: self.lost, absolute: false, header: 0, absolute_before: false, _o: PhantomData }
    }
}

/// Records of one page, for either byte order. The variant is chosen once per
/// page from the layout; each walker is monomorphised.
#[derive(Clone, Debug)]
pub enum PageEvents<'p> {
    Le(RawEvents<'p, Le>),
    Be(RawEvents<'p, Be>),
}

impl PageEvents<'_> {
    /// [`RawEvents::saw_absolute`] of the walker.
    pub fn saw_absolute(&self) -> bool {
        match self {
            PageEvents::Le(r) => r.saw_absolute(),
            PageEvents::Be(r) => r.saw_absolute(),
        }
    }
    /// [`RawEvents::last_header`] of the walker.
    pub fn last_header(&self) -> (usize, bool) {
        match self {
            PageEvents::Le(r) => r.last_header(),
            PageEvents::Be(r) => r.last_header(),
        }
    }
}

impl<'p> Iterator for PageEvents<'p> {
    type Item = Result<RingEvent<'p>>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            PageEvents::Le(r) => r.next(),
            PageEvents::Be(r) => r.next(),
        }
    }
}

/// The record walk over one page's data in byte order `O`. Fused: after an
/// error or the end it returns `None`.
#[derive(Clone, Debug)]
pub struct RawEvents<'p, O: ByteOrder> {
    data: &'p [u8],
    pos: usize,
    ts: u64,
    base: u64,
    lost: Option<Option<u64>>,
    /// An absolute timestamp record was walked over.
    absolute: bool,
    /// Where the last event's header starts in the data, and whether an
    /// absolute timestamp record came between it and the event before.
    header: usize,
    absolute_before: bool,
    _o: PhantomData<O>,
}

impl<'p, O: ByteOrder> RawEvents<'p, O> {
    /// The running timestamp: the last record's.
    pub fn timestamp(&self) -> u64 {
        self.ts
    }

    /// Whether the walk so far met an absolute timestamp record (type 31):
    /// a writer that moves the page's times must rewrite those too.
    pub fn saw_absolute(&self) -> bool {
        self.absolute
    }

    /// The last event's header: its offset in the page data (the event's own
    /// header, after any time extend before it) and whether an absolute
    /// timestamp record lies between it and the previous event. A writer
    /// that copies a run of records and rewrites the first one's delta
    /// needs both.
    pub fn last_header(&self) -> (usize, bool) {
        (self.header, self.absolute_before)
    }

    #[inline(always)]
    fn word(&self, at: usize, what: &'static str) -> Result<u32> {
        match self.data.get(at..at + 4) {
            Some(b) => Ok(O::u32([b[0], b[1], b[2], b[3]])),
            None => Err(Error::Truncated {
                offset: self.base + at as u64,
                needed: 4,
                what,
            }),
        }
    }

    fn step(&mut self) -> Result<Option<RingEvent<'p>>> {
        self.absolute_before = false;
        loop {
            let pos = self.pos;
            if pos >= self.data.len() {
                return Ok(None);
            }
            let (type_len, delta) = O::split_header(self.word(pos, "ring-buffer record header")?);
            match type_len {
                TYPE_PADDING => {
                    // Delta 0: the rest of the page is padding (rb_event_set_padding).
                    if delta == 0 {
                        self.pos = self.data.len();
                        return Ok(None);
                    }
                    // A discarded event or tail padding: array[0] is its
                    // length after the array word's start. The kernel reader
                    // (rb_update_read_stamp) ignores its delta.
                    let len = self.word(pos + 4, "ring-buffer padding length")? as usize;
                    self.pos = (pos + 4).saturating_add(len);
                }
                TYPE_TIME_EXTEND => {
                    let hi = self.word(pos + 4, "ring-buffer time extend")? as u64;
                    self.ts = self.ts.wrapping_add((hi << TS_SHIFT) + delta as u64);
                    self.pos = pos + 8;
                }
                TYPE_TIME_STAMP => {
                    let hi = self.word(pos + 4, "ring-buffer absolute timestamp")? as u64;
                    let mut abs = (hi << TS_SHIFT) | delta as u64;
                    if self.ts & TS_MSB != 0 {
                        abs |= self.ts & TS_MSB;
                        if abs < self.ts {
                            abs = abs.wrapping_add(1 << 59);
                        }
                    }
                    self.ts = abs;
                    self.absolute = true;
                    self.absolute_before = true;
                    self.pos = pos + 8;
                }
                0 => {
                    // array[0] = payload length + 4 (itself), aligned.
                    let total = self.word(pos + 4, "ring-buffer record length")? as usize;
                    if total < 4 {
                        return Err(Error::invalid(
                            self.base + pos as u64 + 4,
                            format!("ring-buffer record length {total} is below 4"),
                        ));
                    }
                    let len = (total - 4 + 3) & !3;
                    let start = pos + 8;
                    let data = self.payload(pos, start, len)?;
                    self.ts = self.ts.wrapping_add(delta as u64);
                    self.header = pos;
                    return Ok(Some(RingEvent::Event { ts: self.ts, data }));
                }
                1..=TYPE_DATA_MAX => {
                    let data = self.payload(pos, pos + 4, 4 * type_len as usize)?;
                    self.ts = self.ts.wrapping_add(delta as u64);
                    self.header = pos;
                    return Ok(Some(RingEvent::Event { ts: self.ts, data }));
                }
                _ => return Err(Error::invalid(self.base + pos as u64, format!("ring-buffer type_len {type_len}"))),
            }
        }
    }

    #[inline(always)]
    fn payload(&mut self, pos: usize, start: usize, len: usize) -> Result<&'p [u8]> {
        let end = start.checked_add(len).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            Error::invalid(
                self.base + pos as u64,
                format!(
                    "ring-buffer record of {len} bytes runs past the page data ({} bytes left)",
                    self.data.len().saturating_sub(start)
                ),
            )
        })?;
        self.pos = end;
        Ok(&self.data[start..end])
    }
}

impl<'p, O: ByteOrder> Iterator for RawEvents<'p, O> {
    type Item = Result<RingEvent<'p>>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(count) = self.lost.take() {
            return Some(Ok(RingEvent::Lost { count }));
        }
        match self.step() {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => None,
            Err(e) => {
                self.pos = self.data.len();
                Some(Err(e))
            }
        }
    }
}
