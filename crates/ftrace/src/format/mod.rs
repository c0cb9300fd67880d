//! tracefs `format`, `header_page` and `header_event` files, plus the two
//! symbol tables a renderer needs (`kallsyms`, `printk_formats`).
//!
//! Pipeline position: sources stage. trace.dat readers and raw-page capture
//! both hand the text of these files here; the result describes every record
//! of an event (field layout) and carries the compiled print format
//! ([`crate::printfmt`]) used to render it.
//!
//! Layout of a format file (kernel/trace/trace_events.c `f_show`):
//! ```text
//! name: sched_switch
//! ID: 372
//! format:
//!     field:unsigned short common_type;  offset:0;  size:2;  signed:0;
//!     ...                                (blank line between common and own fields)
//! print fmt: "prev_comm=%s ...", REC->prev_comm, ...
//! ```

mod symbols;

pub use symbols::{Kallsyms, PrintkFormats};

use crate::printfmt::Compiled;
use crate::{Endian, Error, Result};
use std::collections::HashMap;

/// How a field's bytes are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A scalar of 1, 2, 4 or 8 bytes.
    Int,
    /// A fixed array (`u32 buf[]` has count 0: the rest of the record).
    Array { count: u32 },
    /// A fixed `char` array (`char comm[16]`, `char buf[]`): a NUL-padded string.
    Str,
    /// `__data_loc T[] name`: u32 = (len << 16) | offset from the record start.
    DataLoc,
    /// `__rel_loc T[] name`: like DataLoc, offset relative to the field's end.
    RelLoc,
    /// Anything else: kept as bytes.
    Raw,
}

/// One field of an event record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The declared C type without the name (`char[16]` → `char`, `__data_loc char[]` kept whole).
    pub type_name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    pub kind: FieldKind,
}

/// A field's value in one record, borrowed from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'r> {
    Unsigned(u64),
    Signed(i64),
    /// A string without its NUL padding.
    Str(&'r [u8]),
    Bytes(&'r [u8]),
}

impl Field {
    pub fn is_common(&self) -> bool {
        self.name.starts_with("common_")
    }

    /// `true` for array-like fields (fixed, flexible or dynamic).
    pub fn is_array(&self) -> bool {
        matches!(self.kind, FieldKind::Array { .. } | FieldKind::Str | FieldKind::DataLoc | FieldKind::RelLoc)
    }

    /// Element size, as libtraceevent's `elementsize` (event-parse.c `event_read_fields`).
    pub(crate) fn elem_size(&self, long_size: u8) -> u32 {
        match self.kind {
            FieldKind::Array { count } if count > 0 => self.size / count,
            FieldKind::Str => 1,
            FieldKind::Array { .. } | FieldKind::DataLoc | FieldKind::RelLoc => {
                let t = self.type_name.as_str();
                if t.contains("char") || t.contains("u8") || t.contains("s8") {
                    1
                } else if t.contains("long") {
                    long_size as u32
                } else {
                    [("u16", 2), ("s16", 2), ("u32", 4), ("s32", 4), ("int", 4), ("u64", 8), ("s64", 8)]
                        .iter()
                        .find(|(n, _)| t.contains(n))
                        .map(|&(_, s)| s)
                        .unwrap_or(0)
                }
            }
            _ => self.size,
        }
    }

    /// The raw bytes of the field inside `rec`; `None` when out of range.
    pub fn raw<'r>(&self, rec: &'r [u8]) -> Option<&'r [u8]> {
        let start = self.offset as usize;
        let end = start.checked_add(self.size as usize)?;
        rec.get(start..end)
    }

    /// Offset and length of a dynamic field's data (`__data_loc`/`__rel_loc`);
    /// `None` when the field or the data lies outside `rec`.
    pub fn dyn_range(&self, rec: &[u8], endian: Endian) -> Option<(usize, usize)> {
        let raw = self.raw(rec)?;
        let v = endian.uint(raw)?;
        let (mut off, len) = if self.size == 2 {
            let o = v as usize & 0xffff;
            (o, rec.len().checked_sub(o)?)
        } else {
            ((v & 0xffff) as usize, ((v >> 16) & 0xffff) as usize)
        };
        if self.kind == FieldKind::RelLoc {
            off += (self.offset + self.size) as usize;
        }
        let end = off.checked_add(len)?;
        if end > rec.len() {
            return None;
        }
        Some((off, len))
    }

    /// Decodes the field in `rec`. Dynamic fields are resolved; anything out
    /// of range gives `None`.
    pub fn value<'r>(&self, rec: &'r [u8], endian: Endian) -> Option<FieldValue<'r>> {
        match self.kind {
            FieldKind::Int => {
                let v = endian.uint(self.raw(rec)?)?;
                if self.signed {
                    let bits = self.size * 8;
                    let s = if bits >= 64 { v as i64 } else { ((v << (64 - bits)) as i64) >> (64 - bits) };
                    Some(FieldValue::Signed(s))
                } else {
                    Some(FieldValue::Unsigned(v))
                }
            }
            FieldKind::Str => {
                let b = if self.size == 0 { rec.get(self.offset as usize..)? } else { self.raw(rec)? };
                Some(FieldValue::Str(until_nul(b)))
            }
            FieldKind::Array { .. } => {
                let b = if self.size == 0 { rec.get(self.offset as usize..)? } else { self.raw(rec)? };
                Some(FieldValue::Bytes(b))
            }
            FieldKind::DataLoc | FieldKind::RelLoc => {
                let (o, l) = self.dyn_range(rec, endian)?;
                let b = &rec[o..o + l];
                if self.elem_size(8) == 1 && self.type_name.contains("char") {
                    Some(FieldValue::Str(until_nul(b)))
                } else {
                    Some(FieldValue::Bytes(b))
                }
            }
            FieldKind::Raw => Some(FieldValue::Bytes(self.raw(rec)?)),
        }
    }
}

pub(crate) fn until_nul(b: &[u8]) -> &[u8] {
    // Comms are 16-byte fields (TASK_COMM_LEN): two words tested for a
    // zero byte at once are cheaper than memchr's vector setup.
    if let Some(w) = b.get(..16) {
        let word = |at: usize| u64::from_le_bytes(w[at..at + 8].try_into().unwrap_or([0; 8]));
        let zero = |x: u64| x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
        // The lowest flagged byte is the first zero (borrows only run
        // upwards from a zero byte, so no byte below it is flagged).
        for at in [0, 8] {
            let z = zero(word(at));
            if z != 0 {
                return &b[..at + z.trailing_zeros() as usize / 8];
            }
        }
    }
    match memchr::memchr(0, b) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// One event's format file, parsed, with its print format compiled.
#[derive(Clone, Debug)]
pub struct EventFormat {
    pub id: u16,
    pub system: String,
    pub name: String,
    /// All fields, `common_*` first, in file order.
    pub fields: Vec<Field>,
    /// The raw text after `print fmt: `.
    pub print_fmt: String,
    pub(crate) compiled: Compiled,
}

impl EventFormat {
    /// Parses a tracefs `format` file. Lines this parser does not know are
    /// skipped; field lines it cannot decode become [`FieldKind::Raw`] or are
    /// dropped. Errors only when `name:`/`ID:` are missing or malformed.
    pub fn parse(system: &str, text: &[u8]) -> Result<EventFormat> {
        let text = String::from_utf8_lossy(text);
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        let mut at = 0;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let start = at;
            at += line.len();
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let lno = i as u64 + 1;
            let t = line.trim();
            if let Some(v) = t.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = t.strip_prefix("ID:") {
                let v = v.trim();
                id = Some(v.parse::<u16>().map_err(|_| Error::line(lno, format!("bad event ID {v:?}")))?);
            } else if t.starts_with("field:") || t.starts_with("field ") {
                if let Some(f) = parse_field_line(t) {
                    fields.push(f);
                }
            } else if line.trim_start().starts_with("print fmt:") {
                // The format runs to the end of the text, not of the line:
                // libtraceevent's tokenizer reads quoted strings across real
                // newlines, which some writers store in place of `\n`.
                let rest = &text[start..];
                let v = &rest[rest.find("print fmt:").map_or(0, |p| p + "print fmt:".len())..];
                print_fmt = v.strip_prefix(' ').unwrap_or(v).trim_end_matches(['\r', '\n']).to_string();
                break;
            }
        }
        let name = name.ok_or_else(|| Error::line(1, "format file has no `name:` line"))?;
        let id = id.ok_or_else(|| Error::line(2, "format file has no `ID:` line"))?;
        let compiled = Compiled::compile(system, &name, &print_fmt, &fields);
        Ok(EventFormat { id, system: system.to_string(), name, fields, print_fmt, compiled })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

}

/// Parses `field:TYPE NAME[N];\toffset:O;\tsize:S;\tsigned:G;`.
fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, None);
    for part in line.split(';') {
        let p = part.trim();
        if let Some(v) = p.strip_prefix("field:") {
            decl = Some(v.trim());
        } else if let Some(v) = p.strip_prefix("offset:") {
            offset = v.trim().parse::<u32>().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.trim().parse::<u32>().ok();
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v.trim().parse::<u32>().ok().map(|s| s != 0);
        }
    }
    let decl = decl?;
    let (offset, size) = (offset?, size?);
    let signed = signed.unwrap_or(false);
    // Split off a trailing `[N]` / `[]` from the name.
    let (head, array) = match decl.rfind('[') {
        Some(b) if decl.ends_with(']') => (decl[..b].trim_end(), Some(&decl[b + 1..decl.len() - 1])),
        _ => (decl, None),
    };
    // Past the last non-identifier char, which may be multi-byte (fuzz: tracedat).
    let name_start = head
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let name = &head[name_start..];
    if name.is_empty() {
        return None;
    }
    let mut type_name = head[..name_start].trim().to_string();
    if type_name.is_empty() {
        type_name = name.to_string();
    }
    let kind = if type_name.starts_with("__data_loc") {
        FieldKind::DataLoc
    } else if type_name.starts_with("__rel_loc") {
        FieldKind::RelLoc
    } else if let Some(count) = array {
        let count = count.trim().parse::<u32>().unwrap_or(0);
        let t = type_name.as_str();
        if t.contains("char") && !t.contains('*') {
            FieldKind::Str
        } else {
            FieldKind::Array { count }
        }
    } else if matches!(size, 1 | 2 | 4 | 8) {
        FieldKind::Int
    } else {
        FieldKind::Raw
    };
    Some(Field { name: name.to_string(), type_name, offset, size, signed, kind })
}

/// Every event format of a trace, by id and by name.
#[derive(Clone, Debug, Default)]
pub struct Events {
    list: Vec<EventFormat>,
    /// Dense by id (ids are u16, so at most 256 KiB): index + 1, 0 for none.
    /// A lookup per record, so no hashing.
    by_id: Vec<u32>,
    by_name: HashMap<(String, String), usize>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a format; a later one with the same id or name replaces the earlier.
    pub fn add(&mut self, ev: EventFormat) {
        let key = (ev.system.clone(), ev.name.clone());
        let id = ev.id as usize;
        if self.by_id.len() <= id {
            self.by_id.resize(id + 1, 0);
        }
        let same_id = self.by_id[id].checked_sub(1).map(|i| i as usize);
        if let Some(i) = same_id.or_else(|| self.by_name.get(&key).copied()) {
            let old = &self.list[i];
            self.by_name.remove(&(old.system.clone(), old.name.clone()));
            self.by_id[old.id as usize] = 0;
            self.by_id[id] = i as u32 + 1;
            self.by_name.insert(key, i);
            self.list[i] = ev;
            return;
        }
        self.by_id[id] = self.list.len() as u32 + 1;
        self.by_name.insert(key, self.list.len());
        self.list.push(ev);
    }

    pub fn by_id(&self, id: u16) -> Option<&EventFormat> {
        let i = self.by_id.get(id as usize)?.checked_sub(1)?;
        self.list.get(i as usize)
    }

    pub fn by_name(&self, system: &str, name: &str) -> Option<&EventFormat> {
        self.by_name.get(&(system.to_string(), name.to_string())).map(|&i| &self.list[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &EventFormat> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The `common_type` of a record (u16 at offset 0 on every kernel since 2.6.31).
    pub fn common_type(rec: &[u8], endian: Endian) -> Option<u16> {
        Some(endian.u16(rec.get(..2)?.try_into().ok()?))
    }

    /// The format of a record, by its `common_type`.
    pub fn of_record(&self, rec: &[u8], endian: Endian) -> Option<&EventFormat> {
        self.by_id(Self::common_type(rec, endian)?)
    }
}

/// Offset and size of one ring-buffer page header field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeaderField {
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// `events/header_page`: the layout of a ring-buffer page header
/// (kernel/trace/ring_buffer.c `ring_buffer_print_page_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPage {
    pub timestamp: HeaderField,
    pub commit: HeaderField,
    pub overwrite: HeaderField,
    pub data: HeaderField,
}

impl HeaderPage {
    pub fn parse(text: &[u8]) -> Result<HeaderPage> {
        let text = String::from_utf8_lossy(text);
        let get = |want: &str| -> Result<HeaderField> {
            for line in text.lines() {
                let t = line.trim();
                if !t.starts_with("field:") {
                    continue;
                }
                let Some(f) = parse_field_line(&t.replacen("field: ", "field:", 1)) else { continue };
                if f.name == want {
                    return Ok(HeaderField { offset: f.offset, size: f.size, signed: f.signed });
                }
            }
            Err(Error::line(1, format!("header_page has no `{want}` field")))
        };
        let timestamp = get("timestamp")?;
        let commit = get("commit")?;
        let data = get("data")?;
        let overwrite = get("overwrite").unwrap_or(HeaderField { offset: commit.offset, size: 1, signed: true });
        Ok(HeaderPage { timestamp, commit, overwrite, data })
    }
}

/// `events/header_event`: the event header encoding. Only checked and kept;
/// the values have not changed since 2.6.31.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEvent {
    pub padding: u32,
    pub time_extend: u32,
    pub time_stamp: u32,
    pub data_max_type_len: u32,
    pub text: String,
}

impl HeaderEvent {
    pub fn parse(text: &[u8]) -> Result<HeaderEvent> {
        let s = String::from_utf8_lossy(text).into_owned();
        let mut h = HeaderEvent { padding: 29, time_extend: 30, time_stamp: 31, data_max_type_len: 28, text: String::new() };
        let mut seen = false;
        for line in s.lines() {
            let t = line.trim();
            let num = || t.rsplit(|c: char| c == '=' || c.is_whitespace()).next().and_then(|v| v.parse().ok());
            if t.starts_with("type_len") {
                seen = true;
            } else if t.starts_with("padding") {
                h.padding = num().unwrap_or(h.padding);
            } else if t.starts_with("time_extend") {
                h.time_extend = num().unwrap_or(h.time_extend);
            } else if t.starts_with("time_stamp") {
                h.time_stamp = num().unwrap_or(h.time_stamp);
            } else if t.starts_with("data max type_len") {
                h.data_max_type_len = num().unwrap_or(h.data_max_type_len);
            }
        }
        if !seen {
            return Err(Error::line(1, "header_event has no `type_len` line"));
        }
        h.text = s;
        Ok(h)
    }
}

/// Inputs found by fuzz/ (cargo fuzz); each once panicked.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    #[test]
    fn field_name_after_multibyte_char() {
        // A non-ASCII byte right before the name: the name starts after the
        // whole UTF-8 char, not one byte after its start.
        let f = parse_field_line("field:unsigned shor\u{fffd}common_type;\toffset:0;\tsize:2;\tsigned:0;").unwrap();
        assert_eq!(f.name, "common_type");
        assert_eq!(f.type_name, "unsigned shor\u{fffd}");
        let f = parse_field_line("field:\u{e9}x;\toffset:0;\tsize:2;\tsigned:0;").unwrap();
        assert_eq!(f.name, "x");
        assert!(parse_field_line("field:\u{e9};\toffset:0;\tsize:2;").is_none());
    }
}

#[cfg(test)]
mod until_nul_tests {
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time search finds the first NUL, as a byte scan does.
        #[test]
        fn first_nul(b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0x80u8), any::<u8>()], 0..40)) {
            let want = match b.iter().position(|&c| c == 0) {
                Some(n) => &b[..n],
                None => &b[..],
            };
            prop_assert_eq!(super::until_nul(&b), want);
        }
    }
}
