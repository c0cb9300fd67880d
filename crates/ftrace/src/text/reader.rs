//! [`TextReader`]: streams records out of any `BufRead`, one reused line
//! buffer, kind and header decided from the first lines.

use super::line::{parse_event, parse_marker, Layout, TextRecord};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::io::BufRead;

/// Longest line accepted; a longer one is an error, not an allocation.
/// The kernel's trace_seq is one page, so real lines are far shorter.
pub const MAX_LINE: usize = 1 << 20;

/// Which producer wrote the text, decided from the header or first event line.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// tracefs `trace` / `trace_pipe` without the TGID column.
    Tracefs,
    /// tracefs text with the TGID column (options/record-tgid).
    TracefsTgid,
    /// `trace-cmd report` output.
    TraceCmdReport,
    /// `trace-cmd report -l` (latency format: `comm-pid  cpu flags ts:`).
    TraceCmdReportLatency,
    /// No event line and no header seen (empty input or comments only).
    Empty,
}

/// What the header lines said, when present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextHeader {
    /// `# tracer: nop`.
    pub tracer: Option<String>,
    /// `# entries-in-buffer/entries-written: E/W   #P:N`.
    pub entries: Option<u64>,
    pub written: Option<u64>,
    /// `#P:N` (tracefs) or `cpus=N` (trace-cmd report).
    pub cpus: Option<u32>,
    /// `version = 6` (trace-cmd's info line, on stderr in 3.x).
    pub version: Option<String>,
    /// The column legend shows the irq-info flags (`irqs-off`).
    pub irq_info: Option<bool>,
    /// The column legend shows TGID.
    pub tgid: Option<bool>,
}

/// A streaming reader of ftrace text. See the module docs for the inputs.
pub struct TextReader<R: BufRead> {
    inner: R,
    buf: Vec<u8>,
    /// The line in `buf` is read but not yet returned (peeked by `new`).
    pending: bool,
    line_no: u64,
    kind: TextKind,
    header: TextHeader,
    layout: Layout,
    /// Buffer named by a prefixed lost line, for the event line after it
    /// (trace-read.c prints the prefix once, before `CPU:N [..DROPPED]`).
    carry_buffer: Option<String>,
    carry_for_line: u64,
    /// Marker lines met by `new` before the first event line, and the one
    /// being lent out.
    queued: VecDeque<Marker>,
    current: Option<Marker>,
}

/// An owned lost/started record (only for markers read ahead by `new`).
enum Marker {
    Lost {
        cpu: u32,
        count: Option<u64>,
        buffer: Option<String>,
    },
    Started {
        cpu: u32,
    },
}

impl<R: BufRead> TextReader<R> {
    /// Reads the header and peeks the first record line to decide the kind.
    pub fn new(inner: R) -> Result<Self> {
        let mut r = TextReader {
            inner,
            buf: Vec::with_capacity(512),
            pending: false,
            line_no: 0,
            kind: TextKind::Empty,
            header: TextHeader::default(),
            layout: Layout {
                report: false,
                lat_width: 5,
            },
            carry_buffer: None,
            carry_for_line: 0,
            queued: VecDeque::new(),
            current: None,
        };
        let mut saw_tracefs_header = false;
        loop {
            if !r.read_line()? {
                break;
            }
            let line = utf8(&r.buf, r.line_no)?;
            let t = line.trim();
            if t.is_empty() || t.starts_with("CPU ") && t.ends_with(" is empty") {
                continue;
            }
            match parse_marker(t) {
                Some(TextRecord::Lost { cpu, count, buffer }) => {
                    let buffer = buffer.map(str::to_owned);
                    r.carry_buffer = buffer.clone();
                    r.carry_for_line = r.line_no + 1;
                    r.queued.push_back(Marker::Lost { cpu, count, buffer });
                    continue;
                }
                Some(TextRecord::BufferStarted { cpu }) => {
                    r.queued.push_back(Marker::Started { cpu });
                    continue;
                }
                _ => {}
            }
            if let Some(c) = t.strip_prefix('#') {
                saw_tracefs_header = true;
                r.header_comment(c.trim().to_owned());
                continue;
            }
            if let Some(n) = cpus_line(t) {
                r.kind = TextKind::TraceCmdReport;
                r.header.cpus = Some(n);
                continue;
            }
            if let Some(v) = t.strip_prefix("version = ") {
                r.kind = TextKind::TraceCmdReport;
                r.header.version = Some(v.trim().to_owned());
                continue;
            }
            r.pending = true;
            break;
        }
        if r.pending && r.kind == TextKind::Empty && !saw_tracefs_header {
            // Report output cut of its `cpus=` line: trace-cmd glues the
            // counter timestamp to `[cpu]` (`%16s-%-5d [%03d]` + `%12d:`),
            // tracefs always leaves a blank after `]`.
            let line = utf8(&r.buf, r.line_no)?;
            if let Some(i) = line.find(']') {
                if line.as_bytes().get(i + 1).is_some_and(u8::is_ascii_digit) {
                    r.kind = TextKind::TraceCmdReport;
                }
            }
        }
        r.layout.report = r.kind == TextKind::TraceCmdReport;
        if r.pending {
            let lay = r.layout;
            let line = utf8(&r.buf, r.line_no)?;
            if let Ok(l) = parse_event(line.trim_end_matches(['\n', '\r']), lay) {
                r.kind = match (r.kind, l.tgid.is_some() || line.contains("(-------)")) {
                    (TextKind::TraceCmdReport, _) if l.flags.is_some() => {
                        TextKind::TraceCmdReportLatency
                    }
                    (TextKind::TraceCmdReport, _) => TextKind::TraceCmdReport,
                    (_, true) => TextKind::TracefsTgid,
                    (_, false) => TextKind::Tracefs,
                };
            }
        }
        if r.kind == TextKind::Empty && saw_tracefs_header {
            r.kind = if r.header.tgid == Some(true) {
                TextKind::TracefsTgid
            } else {
                TextKind::Tracefs
            };
        }
        Ok(r)
    }

    pub fn kind(&self) -> TextKind {
        self.kind
    }

    pub fn header(&self) -> &TextHeader {
        &self.header
    }

    /// The source, as far as it has been consumed (a slice: what is left).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// 1-based number of the line last returned.
    pub fn line_number(&self) -> u64 {
        self.line_no
    }

    fn header_comment(&mut self, c: String) {
        if let Some(t) = c.strip_prefix("tracer:") {
            self.header.tracer = Some(t.trim().to_owned());
        } else if let Some(r) = c.strip_prefix("entries-in-buffer/entries-written:") {
            let (ew, p) = match r.split_once("#P:") {
                Some((a, b)) => (a, Some(b)),
                None => (r, None),
            };
            if let Some((e, w)) = ew.trim().split_once('/') {
                self.header.entries = e.trim().parse().ok();
                self.header.written = w.trim().parse().ok();
            }
            self.header.cpus = p.and_then(|p| p.trim().parse().ok());
        } else if c.contains("irqs-off") {
            self.header.irq_info = Some(true);
        } else if c.contains("TASK-PID") {
            self.header.tgid = Some(c.contains("TGID"));
            self.header.irq_info.get_or_insert(false);
        }
    }

    /// Reads one line (without its end) into `buf`; false at end of input.
    fn read_line(&mut self) -> Result<bool> {
        self.buf.clear();
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        what: format!("reading text line {}", self.line_no + 1),
                        source: e,
                    })
                }
            };
            if avail.is_empty() {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if self.buf.len() + take > MAX_LINE + 1 {
                return Err(Error::line(
                    self.line_no + 1,
                    format!("line longer than {MAX_LINE} bytes"),
                ));
            }
            self.buf.extend_from_slice(&avail[..take]);
            self.inner.consume(take);
            if done {
                break;
            }
        }
        self.line_no += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(true)
    }

    fn line_str(&self) -> Result<&str> {
        utf8(&self.buf, self.line_no)
    }

    /// The next record, borrowing the reader's line buffer; `None` at the end.
    /// Blank lines, `#` comments and trace-cmd info lines (`cpus=`,
    /// `version = `, `CPU N is empty`, `CPU:N [SUBBUFFER START]`) are skipped.
    pub fn next_record(&mut self) -> Result<Option<TextRecord<'_>>> {
        if let Some(m) = self.queued.pop_front() {
            return Ok(Some(match self.current.insert(m) {
                Marker::Lost { cpu, count, buffer } => TextRecord::Lost {
                    cpu: *cpu,
                    count: *count,
                    buffer: buffer.as_deref(),
                },
                Marker::Started { cpu } => TextRecord::BufferStarted { cpu: *cpu },
            }));
        }
        loop {
            if self.pending {
                self.pending = false;
            } else if !self.read_line()? {
                return Ok(None);
            }
            let line = self.line_str()?;
            let t = line.trim();
            let skip = t.is_empty()
                || (t.starts_with('#') && !t.starts_with("#####"))
                || cpus_line(t).is_some()
                || t.starts_with("version = ")
                || (t.starts_with("CPU ") && t.ends_with(" is empty"))
                || (t.contains("CPU:") && t.contains("[SUBBUFFER START]"));
            if skip {
                continue;
            }
            break;
        }
        let line_no = self.line_no;
        // Decide on the lost-line carry before borrowing the line for the result.
        if let Some(TextRecord::Lost {
            buffer: Some(b), ..
        }) = parse_marker(self.line_str()?)
        {
            self.carry_buffer = Some(b.to_owned());
            self.carry_for_line = line_no + 1;
        }
        let line = utf8(&self.buf, line_no)?;
        if let Some(m) = parse_marker(line) {
            return Ok(Some(m));
        }
        match parse_event(line, self.layout) {
            Ok(mut l) => {
                if l.buffer.is_none() && self.carry_for_line == line_no {
                    l.buffer = self.carry_buffer.as_deref();
                }
                Ok(Some(TextRecord::Event(l)))
            }
            Err(what) => Err(Error::line(
                line_no,
                format!("{what}: {:?}", truncate(line, 120)),
            )),
        }
    }
}

fn utf8(buf: &[u8], line_no: u64) -> Result<&str> {
    std::str::from_utf8(buf).map_err(|e| {
        Error::line(
            line_no,
            format!("not UTF-8 at column {}", e.valid_up_to() + 1),
        )
    })
}

fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// `cpus=N`, possibly after a trace-cmd `file: ` prefix.
fn cpus_line(t: &str) -> Option<u32> {
    let i = t.find("cpus=")?;
    let pre = t[..i].trim_end();
    if !(pre.is_empty() || pre.ends_with(':')) {
        return None;
    }
    t[i + 5..].trim().parse().ok()
}

/// Does this look like ftrace text (tracefs `trace`/`trace_pipe` or
/// `trace-cmd report` output)? Looks at the first complete lines only; a
/// last line cut by the end of `first_bytes` is ignored.
pub fn sniff(first_bytes: &[u8]) -> bool {
    let text = match std::str::from_utf8(first_bytes) {
        Ok(t) => t,
        // Cut in the middle of a character: keep the valid prefix.
        Err(e) if e.error_len().is_none() => {
            match std::str::from_utf8(&first_bytes[..e.valid_up_to()]) {
                Ok(t) => t,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => text,
    };
    let lay = Layout {
        report: false,
        lat_width: 5,
    };
    let mut seen = 0;
    for line in complete.lines().take(64) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("# tracer:")
            || t.starts_with("# entries-in-buffer")
            || cpus_line(t).is_some() && seen == 0
        {
            return true;
        }
        if t.starts_with('#') && !t.starts_with("#####") || t.starts_with("version = ") {
            continue;
        }
        seen += 1;
        if parse_marker(line).is_none() && parse_event(line, lay).is_err() {
            return false;
        }
        if seen >= 2 {
            return true;
        }
    }
    seen > 0
}
