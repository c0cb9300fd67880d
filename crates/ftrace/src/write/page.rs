//! Packs `(timestamp, record)` pairs into ring-buffer pages laid out exactly as
//! the kernel writes them to `per_cpu/cpuN/trace_pipe_raw`, so that the pages
//! can be stored in a trace.dat file (see [`super::TraceDatWriter`]) and read
//! back by trace-cmd / libtraceevent's kbuffer.
//!
//! Page layout (linux `kernel/trace/ring_buffer.c`, struct `buffer_data_page`;
//! `events/header_page` gives the same): `u64 timestamp`, `local_t commit`
//! (long size: 8 or 4 bytes) holding the number of data bytes in its low bits
//! and flags in its high bits, then the events.
//!
//! Event header (`struct ring_buffer_event`, include/linux/ring_buffer.h): one
//! u32 bitfield `type_len:5, time_delta:27`. C bitfields are allocated from the
//! least significant bit on little-endian machines and from the most
//! significant on big-endian ones, so `type_len` is the low 5 bits of a
//! little-endian page and the top 5 bits of a big-endian one (libtraceevent
//! kbuffer-parse.c `type_len4host` / `ts4host` decode it the same way).

use crate::{Endian, Error, Result};

/// `type_len` values with special meaning (include/linux/ring_buffer.h,
/// `enum ring_buffer_type`). 1..=28 are data events of `4 * type_len` bytes;
/// 0 is a data event whose length is in the next u32.
pub mod type_len {
    /// Data event, length in `array[0]` (including that u32 itself).
    pub const DATA_LONG: u32 = 0;
    /// `RINGBUF_TYPE_DATA_TYPE_LEN_MAX`: largest inline length, in u32 units.
    pub const DATA_MAX: u32 = 28;
    /// `RINGBUF_TYPE_PADDING`.
    pub const PADDING: u32 = 29;
    /// `RINGBUF_TYPE_TIME_EXTEND`: `array[0]` holds delta bits 27 and up.
    pub const TIME_EXTEND: u32 = 30;
    /// `RINGBUF_TYPE_TIME_STAMP`: absolute timestamp (not produced here).
    pub const TIME_STAMP: u32 = 31;
}

/// `TS_SHIFT` in kernel/trace/ring_buffer.c: bits of `time_delta`.
pub const TS_SHIFT: u32 = 27;
/// Largest delta that fits the event header (`TS_MASK`).
pub const TS_MASK: u64 = (1 << TS_SHIFT) - 1;
/// `RB_ALIGNMENT` (ring_buffer.c): events are padded to 4 bytes.
pub const RB_ALIGNMENT: usize = 4;
/// `RB_MAX_SMALL_DATA` (ring_buffer.c): payloads above this use `type_len` 0.
pub const RB_MAX_SMALL_DATA: usize = RB_ALIGNMENT * type_len::DATA_MAX as usize;
/// `RB_MISSED_EVENTS` (ring_buffer.c): flag in `commit`, events were lost before this page.
pub const RB_MISSED_EVENTS: u64 = 1 << 31;
/// `RB_MISSED_STORED` (ring_buffer.c): the lost-event count is stored after the data.
pub const RB_MISSED_STORED: u64 = 1 << 30;
/// Bits of `commit` that are flags, not the data length (`RB_MISSED_MASK` in newer kernels).
pub const RB_MISSED_FLAGS: u64 = RB_MISSED_EVENTS | RB_MISSED_STORED;
/// The usual page size of x86-64 (and of every sample here).
pub const DEFAULT_PAGE_SIZE: usize = 4096;

/// The event header word, before byte-swapping to `e`.
#[inline]
pub fn event_header(e: Endian, type_len: u32, delta: u32) -> u32 {
    debug_assert!(type_len < 32 && u64::from(delta) <= TS_MASK);
    match e {
        Endian::Little => type_len | (delta << 5),
        Endian::Big => (type_len << TS_SHIFT) | delta,
    }
}

/// Builds one ring-buffer page at a time. Events must come in non-decreasing
/// timestamp order (as the kernel writes one CPU's buffer); deltas wider than
/// 27 bits get a TIME_EXTEND event, as `rb_add_time_stamp` does. Differences
/// from kernel pages that readers do not see: no padding event at the end of
/// a page (`commit` simply stops), and 5..=8-byte payloads keep 8 bytes where
/// `rb_calculate_event_length` rounds the event up to 16.
///
/// ```
/// use ftrace::write::PageBuilder;
/// let mut pb = PageBuilder::default();
/// let mut pages = Vec::new();
/// pb.push(1000, &[0u8; 16], |p| { pages.push(p.to_vec()); Ok(()) }).unwrap();
/// pb.flush(|p| { pages.push(p.to_vec()); Ok(()) }).unwrap();
/// assert_eq!(pages.len(), 1);
/// assert_eq!(pages[0].len(), 4096);
/// ```
#[derive(Clone, Debug)]
pub struct PageBuilder {
    endian: Endian,
    long_size: usize,
    page: Vec<u8>,
    /// Bytes of event data written after the page header.
    used: usize,
    /// Timestamp of the last event in the page (the base of the next delta).
    last_ts: u64,
    events: usize,
    /// `Some(None)`: events lost, count unknown; `Some(Some(n))`: n lost.
    missed: Option<Option<u64>>,
}

impl Default for PageBuilder {
    /// Little endian, 8-byte `commit`, 4096-byte pages: x86-64.
    fn default() -> Self {
        PageBuilder::new(Endian::Little, 8, DEFAULT_PAGE_SIZE).expect("valid defaults")
    }
}

impl PageBuilder {
    /// `long_size` is the kernel's (size of `commit`): 4 or 8.
    pub fn new(endian: Endian, long_size: u8, page_size: usize) -> Result<Self> {
        if long_size != 4 && long_size != 8 {
            return Err(Error::invalid(
                0,
                format!("long size {long_size}: expected 4 or 8"),
            ));
        }
        if !(64..=(1 << 24)).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::invalid(
                0,
                format!("page size {page_size}: expected a power of two, 64..16M"),
            ));
        }
        Ok(PageBuilder {
            endian,
            long_size: long_size as usize,
            page: vec![0; page_size],
            used: 0,
            last_ts: 0,
            events: 0,
            missed: None,
        })
    }

    pub fn page_size(&self) -> usize {
        self.page.len()
    }
    /// Offset of the first event in a page: `u64 timestamp` + `commit`.
    pub fn header_len(&self) -> usize {
        8 + self.long_size
    }
    /// Bytes available for events in one page.
    pub fn capacity(&self) -> usize {
        self.page.len() - self.header_len()
    }
    /// Number of events in the page being built.
    pub fn len(&self) -> usize {
        self.events
    }
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Marks the page being built as following lost events (`RB_MISSED_EVENTS`);
    /// with `Some(count)` the count is stored after the data (`RB_MISSED_STORED`)
    /// when it fits, as `rb_get_reader_page`/`ring_buffer_read_page` do.
    pub fn set_missed_events(&mut self, count: Option<u64>) {
        self.missed = Some(count);
    }

    /// Whether the page being built will carry a lost-events mark.
    pub fn missed_pending(&self) -> bool {
        self.missed.is_some()
    }

    /// Bytes an event of `payload_len` takes in the page, without a time extend.
    pub fn event_size(payload_len: usize) -> usize {
        let padded = payload_len.max(1).div_ceil(RB_ALIGNMENT) * RB_ALIGNMENT;
        if padded > RB_MAX_SMALL_DATA {
            4 + 4 + padded
        } else {
            4 + padded
        }
    }

    /// Adds one event if it fits. `Ok(false)`: the page is full; take it with
    /// [`PageBuilder::page`], [`PageBuilder::clear`] and push again.
    /// `record` is the event payload as tracefs `format` describes it
    /// (starting with `common_type`).
    pub fn try_push(&mut self, ts: u64, record: &[u8]) -> Result<bool> {
        let size = Self::event_size(record.len());
        if size > self.capacity() {
            return Err(Error::invalid(
                0,
                format!(
                    "event of {} bytes does not fit a {}-byte page",
                    record.len(),
                    self.page.len()
                ),
            ));
        }
        let Some((pos, delta27, extend)) = self.start_event(ts, size)? else {
            return Ok(false);
        };
        let e = self.endian;
        let padded = record.len().max(1).div_ceil(RB_ALIGNMENT) * RB_ALIGNMENT;
        // rb_update_event: inline length in 4-byte units, or type_len 0 and
        // array[0] = padded payload + 4 (the u32 itself).
        let (tl, data_at) = if padded > RB_MAX_SMALL_DATA {
            self.page[pos + 4..pos + 8].copy_from_slice(&e.put_u32(padded as u32 + 4));
            (type_len::DATA_LONG, pos + 8)
        } else {
            ((padded / RB_ALIGNMENT) as u32, pos + 4)
        };
        let hdr = event_header(e, tl, delta27);
        self.page[pos..pos + 4].copy_from_slice(&e.put_u32(hdr));
        self.page[data_at..data_at + record.len()].copy_from_slice(record);
        self.page[data_at + record.len()..data_at + padded].fill(0);
        self.used += extend + size;
        self.last_ts = ts;
        self.events += 1;
        if self.events == 1 {
            let b = e.put_u64(ts);
            self.page[..8].copy_from_slice(&b);
        }
        Ok(true)
    }

    /// Checks that an event at `ts` taking `size` bytes goes next and fits;
    /// writes the TIME_EXTEND its delta needs. `None`: the page is full.
    /// Else the event's header position, the delta left for its header and
    /// the extend's size (0 or 8).
    fn start_event(&mut self, ts: u64, size: usize) -> Result<Option<(usize, u32, usize)>> {
        let base = if self.events == 0 { ts } else { self.last_ts };
        if ts < base {
            return Err(Error::invalid(
                0,
                format!("timestamp {ts} is before the previous event's {base}: a page needs non-decreasing times"),
            ));
        }
        let delta = ts - base;
        let extend = if delta > TS_MASK { 8 } else { 0 };
        if self.used + extend + size > self.capacity() {
            return Ok(None);
        }
        // The page timestamp is the first event's time: its delta is 0.
        self.last_ts = base;
        let pos = self.header_len() + self.used;
        let e = self.endian;
        if extend == 0 {
            return Ok(Some((pos, delta as u32, 0)));
        }
        // rb_add_time_stamp: low 27 bits in the header, the rest in array[0].
        let high = u32::try_from(delta >> TS_SHIFT)
            .map_err(|_| Error::invalid(0, format!("timestamp delta {delta} exceeds 59 bits")))?;
        let hdr = event_header(e, type_len::TIME_EXTEND, (delta & TS_MASK) as u32);
        self.page[pos..pos + 4].copy_from_slice(&e.put_u32(hdr));
        self.page[pos + 4..pos + 8].copy_from_slice(&e.put_u32(high));
        Ok(Some((pos + 8, 0, 8)))
    }

    /// Adds a run of `events` records copied from another page of this
    /// builder's layout, if it fits. `run` starts at the first event's
    /// header, whose delta is rewritten for `first_ts`; the records after it
    /// keep theirs (times extends and padding included), so the run's times
    /// must stand in the source as they stand here, and `last_ts` is the
    /// last event's time. `Ok(None)`: the page is full; else the run's bytes
    /// in the page, for the caller to patch (event ids).
    pub fn try_push_run(&mut self, first_ts: u64, last_ts: u64, run: &[u8], events: usize) -> Result<Option<&mut [u8]>> {
        let e = self.endian;
        let word = run.get(..4).and_then(|b| e.uint(b)).map(|w| w as u32);
        let tl = word.map(|w| match e {
            Endian::Little => w & 0x1f,
            Endian::Big => w >> TS_SHIFT,
        });
        let (Some(word), Some(tl)) = (word, tl) else {
            return Err(Error::invalid(0, "a run of records needs an event header"));
        };
        if tl > type_len::DATA_MAX || events == 0 || last_ts < first_ts {
            return Err(Error::invalid(0, format!("a run of {events} records starts with type_len {tl}: expected an event")));
        }
        if run.len() > self.capacity() {
            return Err(Error::invalid(0, format!("a run of {} bytes does not fit a {}-byte page", run.len(), self.page.len())));
        }
        let Some((pos, delta27, extend)) = self.start_event(first_ts, run.len())? else {
            return Ok(None);
        };
        self.page[pos..pos + run.len()].copy_from_slice(run);
        let hdr = match e {
            Endian::Little => (word & 0x1f) | (delta27 << 5),
            Endian::Big => (word & !(TS_MASK as u32)) | delta27,
        };
        self.page[pos..pos + 4].copy_from_slice(&e.put_u32(hdr));
        if self.events == 0 {
            self.page[..8].copy_from_slice(&e.put_u64(first_ts));
        }
        self.used += extend + run.len();
        self.last_ts = last_ts;
        self.events += events;
        Ok(Some(&mut self.page[pos..pos + run.len()]))
    }

    /// Bytes still free for events in the page being built.
    pub fn room(&self) -> usize {
        self.capacity() - self.used
    }

    /// Whether a record at `ts` would need a time extend before it.
    pub fn needs_extend(&self, ts: u64) -> bool {
        self.events > 0 && ts.saturating_sub(self.last_ts) > TS_MASK
    }

    /// Adds one event, handing a full page to `sink` first when needed.
    pub fn push(
        &mut self,
        ts: u64,
        record: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if self.try_push(ts, record)? {
            return Ok(());
        }
        sink(self.page())?;
        self.clear();
        if self.try_push(ts, record)? {
            Ok(())
        } else {
            Err(Error::invalid(0, "event does not fit an empty page"))
        }
    }

    /// Hands the page being built to `sink` if it holds any event, then clears it.
    pub fn flush(&mut self, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if self.events > 0 {
            sink(self.page())?;
        }
        self.clear();
        Ok(())
    }

    /// The page being built, full page size, with `commit` filled in.
    pub fn page(&mut self) -> &[u8] {
        let mut commit = self.used as u64;
        if let Some(m) = self.missed {
            commit |= RB_MISSED_EVENTS;
            let at = self.header_len() + self.used;
            // The count is stored only when there is room (ring_buffer_read_page).
            if let Some(m) = m.filter(|_| at + self.long_size <= self.page.len()) {
                if self.long_size == 8 {
                    let b = self.endian.put_u64(m);
                    self.page[at..at + 8].copy_from_slice(&b);
                } else {
                    let b = self.endian.put_u32(m as u32);
                    self.page[at..at + 4].copy_from_slice(&b);
                }
                commit |= RB_MISSED_STORED;
            }
        }
        let hl = self.header_len();
        if self.long_size == 8 {
            self.page[8..16].copy_from_slice(&self.endian.put_u64(commit));
        } else {
            self.page[8..12].copy_from_slice(&self.endian.put_u32(commit as u32));
        }
        let end = hl
            + self.used
            + if commit & RB_MISSED_STORED != 0 {
                self.long_size
            } else {
                0
            };
        let end = end.min(self.page.len());
        self.page[end..].fill(0);
        &self.page
    }

    /// Starts a new, empty page. No zeroing: [`page`](Self::page) writes
    /// the header and zeroes everything after the data.
    pub fn clear(&mut self) {
        self.used = 0;
        self.events = 0;
        self.missed = None;
    }
}

/// Packs a whole sequence of events into pages (for tests and small inputs).
pub fn pack_events<'r>(
    builder: &mut PageBuilder,
    events: impl IntoIterator<Item = (u64, &'r [u8])>,
) -> Result<Vec<Vec<u8>>> {
    let mut pages = Vec::new();
    for (ts, rec) in events {
        builder.push(ts, rec, |p| {
            pages.push(p.to_vec());
            Ok(())
        })?;
    }
    builder.flush(|p| {
        pages.push(p.to_vec());
        Ok(())
    })?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(p: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(p[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn small_event_layout() {
        let mut pb = PageBuilder::default();
        assert!(pb.try_push(5000, &[1, 2, 3, 4, 5]).unwrap());
        assert!(pb.try_push(5010, &[9; 8]).unwrap());
        let p = pb.page().to_vec();
        assert_eq!(u64::from_le_bytes(p[0..8].try_into().unwrap()), 5000);
        // 5 bytes -> 8 padded -> type_len 2, + 8 bytes -> type_len 2
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()), 12 + 12);
        assert_eq!(u32_at(&p, 16), 2);
        assert_eq!(&p[20..25], &[1, 2, 3, 4, 5]);
        assert_eq!(u32_at(&p, 28), 2 | (10 << 5));
    }

    #[test]
    fn long_event_and_time_extend() {
        let mut pb = PageBuilder::default();
        let rec = [7u8; 200];
        assert!(pb.try_push(1, &rec).unwrap());
        let big = 1 + (1u64 << 40) + 3;
        assert!(pb.try_push(big, &[1; 4]).unwrap());
        let p = pb.page().to_vec();
        assert_eq!(u32_at(&p, 16), 0);
        assert_eq!(u32_at(&p, 20), 204);
        let at = 16 + 8 + 200;
        let hdr = u32_at(&p, at);
        assert_eq!(hdr & 31, type_len::TIME_EXTEND);
        let delta = ((u32_at(&p, at + 4) as u64) << 27) | (hdr >> 5) as u64;
        assert_eq!(delta, big - 1);
        assert_eq!(u32_at(&p, at + 8), 1); // type_len 1, delta 0
    }

    #[test]
    fn page_fills_and_rejects_backwards_time() {
        let mut pb = PageBuilder::default();
        let mut n = 0;
        while pb.try_push(n, &[0; 60]).unwrap() {
            n += 1;
        }
        assert_eq!(n as usize, 4080 / 64);
        pb.clear();
        pb.try_push(10, &[0; 4]).unwrap();
        assert!(pb.try_push(9, &[0; 4]).is_err());
        assert!(pb.try_push(1, &[0; 5000]).is_err());
    }

    /// Decodes a page: (time, payload) of each event.
    fn decode(p: &[u8], e: Endian) -> Vec<(u64, Vec<u8>)> {
        let layout = crate::ring::PageLayout::new(e, 8, p.len() as u32);
        let page = crate::ring::Page::parse(&layout, p, 0).unwrap();
        page.events()
            .filter_map(|r| match r.unwrap() {
                crate::ring::RingEvent::Event { ts, data } => Some((ts, data.to_vec())),
                _ => None,
            })
            .collect()
    }

    proptest::proptest! {
        /// Runs cut from a page at random points and pushed with their
        /// times moved by a constant per run read back as the events with
        /// those times: only each run's first delta changes (extends inside
        /// a run stay, one before it is rebuilt), in either byte order.
        #[test]
        fn runs_copied_keep_their_events(
            gaps in proptest::collection::vec(proptest::prop_oneof![0u64..1000, 1u64 << 27..1u64 << 40], 1..60),
            sizes in proptest::collection::vec(1usize..200, 60),
            cuts in proptest::collection::vec(proptest::bool::ANY, 60),
            shifts in proptest::collection::vec(0u64..1u64 << 30, 60),
            big in proptest::bool::ANY,
        ) {
            let e = if big { Endian::Big } else { Endian::Little };
            let mut src = PageBuilder::new(e, 8, 16384).unwrap();
            let mut ts = 5_000_000_000u64;
            let mut want = Vec::new();
            for (i, g) in gaps.iter().enumerate() {
                ts += g;
                let rec: Vec<u8> = (0..sizes[i]).map(|k| (k + i) as u8).collect();
                if !src.try_push(ts, &rec).unwrap() { break; }
                want.push((ts, rec));
            }
            let page = src.page().to_vec();
            let layout = crate::ring::PageLayout::new(e, 8, page.len() as u32);
            let parsed = crate::ring::Page::parse(&layout, &page, 0).unwrap();
            let mut walk = parsed.events();
            let mut hdrs = Vec::new();
            while let Some(r) = walk.next() {
                if let crate::ring::RingEvent::Event { data, .. } = r.unwrap() {
                    let (h, abs) = walk.last_header();
                    proptest::prop_assert!(!abs);
                    hdrs.push((h + 16, data.as_ptr() as usize - page.as_ptr() as usize + data.len()));
                }
            }
            proptest::prop_assert_eq!(hdrs.len(), want.len());
            // Runs: a cut before event i when cuts[i]; each run moves later than the one before.
            let mut out = PageBuilder::new(e, 8, 16384).unwrap();
            let mut expect = Vec::new();
            let mut start = 0;
            let mut add = 0u64;
            let mut r = 0;
            while start < want.len() {
                let mut end = start + 1;
                while end < want.len() && !cuts[end] { end += 1; }
                let first = want[start].0 + add;
                let last = want[end - 1].0 + add;
                let run = &page[hdrs[start].0..hdrs[end - 1].1];
                proptest::prop_assert!(out.try_push_run(first, last, run, end - start).unwrap().is_some());
                for (t, d) in &want[start..end] {
                    expect.push((t + add, d.clone()));
                }
                r += 1;
                add += shifts[r % shifts.len()];
                start = end;
            }
            let got = decode(out.page(), e);
            let expect: Vec<(u64, Vec<u8>)> = expect.into_iter().map(|(t, d)| {
                let padded = d.len().div_ceil(4) * 4;
                let mut d = d; d.resize(padded, 0); (t, d)
            }).collect();
            proptest::prop_assert_eq!(got, expect);
        }
    }
}
