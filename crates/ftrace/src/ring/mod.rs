//! Ring-buffer pages as the kernel writes them to `trace_pipe_raw` (and as
//! trace-cmd copies them into trace.dat flyrecord data).
//!
//! Pipeline position: the lowest layer of the sources stage. A page is
//! `u64 timestamp, long commit, data[]` (layout from the `header_page` file);
//! the data is a sequence of `u32 type_len:5, time_delta:27` records
//! (include/linux/ring_buffer.h). [`Page`] checks the header once;
//! [`PageEvents`] walks the records and yields [`RingEvent`]s with absolute
//! timestamps, borrowing the event payloads from the page.
//!
//! Endianness is decided once per page stream: [`PageEvents`] is an enum over
//! two monomorphised walkers ([`Le`], [`Be`]), so the per-record reads carry
//! no byte-order branch.

mod page;

pub use page::{Be, ByteOrder, Le, Page, PageEvents, RawEvents, RingEvent};

use crate::{Endian, Error, Result};

/// Where the page header fields live. From the `header_page` file
/// (events/header_page in tracefs, or trace.dat's header info).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLayout {
    pub endian: Endian,
    /// Size of the `commit` word: the kernel's `long` (4 or 8).
    pub commit_size: u8,
    /// Offset of the first record in the page.
    pub data_offset: u16,
    /// Whole page size: `data_offset` + the data field's size.
    pub page_size: u32,
}

impl PageLayout {
    /// The layout every kernel since 2.6.31 uses: timestamp at 0, commit at 8
    /// of the kernel long size, data right after (kernel/trace/ring_buffer.c
    /// `struct buffer_data_page`).
    pub fn new(endian: Endian, long_size: u8, page_size: u32) -> PageLayout {
        let commit_size = if long_size == 4 { 4 } else { 8 };
        PageLayout { endian, commit_size, data_offset: 8 + commit_size as u16, page_size }
    }

    /// Parses the `field:` lines of a `header_page` file, e.g.
    /// `field: local_t commit;\toffset:8;\tsize:8;\tsigned:1;` (tab-separated).
    /// Needs `timestamp` at 0 (size 8), `commit` of size 4 or 8 and `data`.
    pub fn from_header_page(text: &[u8], endian: Endian) -> Result<PageLayout> {
        let mut commit = None;
        let mut data = None;
        let mut ts_ok = false;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let line = match std::str::from_utf8(line) {
                Ok(l) => l.trim(),
                Err(_) => return Err(Error::line(line_no, "header_page: not UTF-8")),
            };
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse::<u64>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse::<u64>().ok();
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(Error::line(line_no, format!("header_page: cannot parse field line {line:?}")));
            };
            // The field name is the last identifier of the declaration.
            let name = decl.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
            match name {
                "timestamp" => {
                    if offset != 0 || size != 8 {
                        return Err(Error::line(line_no, "header_page: timestamp must be 8 bytes at offset 0"));
                    }
                    ts_ok = true;
                }
                "commit" => {
                    if !(size == 4 || size == 8) || offset != 8 {
                        return Err(Error::line(
                            line_no,
                            format!("header_page: commit must be 4 or 8 bytes at offset 8, got {size} at {offset}"),
                        ));
                    }
                    commit = Some(size as u8);
                }
                "data" => data = Some((offset, size, line_no)),
                _ => {}
            }
        }
        if !ts_ok {
            return Err(Error::line(1, "header_page: no `timestamp` field"));
        }
        let Some(commit_size) = commit else { return Err(Error::line(1, "header_page: no `commit` field")) };
        let Some((off, size, line_no)) = data else { return Err(Error::line(1, "header_page: no `data` field")) };
        if off != 8 + commit_size as u64 {
            return Err(Error::line(line_no, format!("header_page: data at offset {off}, expected after commit")));
        }
        let page_size = off
            .checked_add(size)
            .filter(|&p| p <= u32::MAX as u64)
            .ok_or_else(|| Error::line(line_no, "header_page: data size too large"))?;
        Ok(PageLayout { endian, commit_size, data_offset: off as u16, page_size: page_size as u32 })
    }
}
