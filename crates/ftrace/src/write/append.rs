//! Options added to a finished v7 trace.dat without rewriting it: the file's
//! bytes as they are, the options chain's last DONE pointed at one new
//! options section written at the end — what trace-cmd does to append
//! options (trace-output.c `tracecmd_append_options`). trace-cmd's reader
//! walks every section header to the end of the file (trace-input.c
//! `read_metadata_strings`), so a section after the strings is read as any
//! other; options read later win where trace-cmd keeps one value (TRACEID,
//! TIME_SHIFT, TSC2NSEC: `handle_options` overwrites).

use std::io::Write;

use super::dat::OptionData;
use crate::tracedat::TraceDat;
use crate::{Error, Result};

/// Writes `dat`'s file with `opts` appended to `out`. v6 files (no options
/// chain) and files whose last options section is compressed are refused
/// with an error saying so; nothing is written then.
pub fn append_options<W: Write>(dat: &TraceDat<'_>, opts: &[OptionData], out: &mut W) -> Result<()> {
    if dat.version() != 7 {
        return Err(Error::invalid(0, format!("options can be appended to trace.dat version 7 only, this is version {} (`trace-cmd convert --file-version 7` makes one)", dat.version())));
    }
    let tail = dat.options_tail().ok_or_else(|| Error::invalid(0, "no options chain ends in this file"))?;
    let link_at = tail.link_at.ok_or_else(|| Error::invalid(0, "the last options section is compressed: its link to a next section cannot be patched in place"))?;
    let file = dat.file();
    let e = dat.endian();
    let link = link_at as usize;
    let (head, rest) = (file.get(..link), file.get(link + 8..));
    let (Some(head), Some(rest)) = (head, rest) else {
        return Err(Error::Truncated { offset: link_at, needed: 8, what: "DONE option: next options offset" });
    };
    let mut body = Vec::new();
    for o in opts {
        let (id, data) = o.encode(e);
        let len = u32::try_from(data.len()).map_err(|_| Error::invalid(file.len() as u64, format!("option {id} of {} bytes exceeds a u32 size", data.len())))?;
        body.extend_from_slice(&e.put_u16(id));
        body.extend_from_slice(&e.put_u32(len));
        body.extend_from_slice(&data);
    }
    body.extend_from_slice(&e.put_u16(super::option_id::DONE));
    body.extend_from_slice(&e.put_u32(8));
    body.extend_from_slice(&e.put_u64(0));
    let io = |source| Error::Io { what: "writing trace.dat".into(), source };
    out.write_all(head).map_err(io)?;
    out.write_all(&e.put_u64(file.len() as u64)).map_err(io)?;
    out.write_all(rest).map_err(io)?;
    // Section header: id (options sections carry DONE's id 0), flags, description, size.
    out.write_all(&e.put_u16(super::option_id::DONE)).map_err(io)?;
    out.write_all(&e.put_u16(0)).map_err(io)?;
    out.write_all(&e.put_u32(tail.description)).map_err(io)?;
    out.write_all(&e.put_u64(body.len() as u64)).map_err(io)?;
    out.write_all(&body).map_err(io)
}
