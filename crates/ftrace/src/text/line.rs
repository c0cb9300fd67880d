//! One line of ftrace text → a borrowed [`TextLine`] or a lost/started marker.
//!
//! Layouts handled (kernel/trace/trace_output.c `trace_print_context`,
//! `trace_print_time`; trace-cmd tracecmd/trace-read.c `trace_show_data`,
//! `time_format`, `print_event_name`, `print_handle_file`):
//!
//! ```text
//! tracefs        "%16s-%-7d " ["(%7d) " | "(-------) "] "[%03d] " ["d..2. "] (" %12llu" | " %5lu.%06lu") ": " name ": " body
//! report         [buffer ": "] "%16s-%-5d [%03d]" ("%12d:" | " %5d.%06d:" | " %5d.%09d:") " " name ": " pad-to-20 body
//! report -l      [buffer ": "] "%8.8s-%-5d %3d" "d..2." (timestamp as above) " " name ": " pad body
//! ```
//!
//! The parser is layout-tolerant: the pid is the first `-<digits>` followed by
//! blanks and then `(`, `[` or a digit; everything is whitespace-separated
//! after that.

/// A timestamp exactly as printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextTs {
    /// An integer: a counter clock (x86-tsc, counter) — units unknown here.
    Count(u64),
    /// `secs.frac` with `digits` fractional digits (6 for tracefs µs, 9 for
    /// `trace-cmd report -t`), from a nanosecond clock (local, global, mono…).
    Secs { secs: u64, frac: u64, digits: u8 },
}

impl TextTs {
    /// Nanoseconds for `Secs` (extra digits beyond 9 are truncated); `None` for
    /// a counter value (no unit) or on overflow.
    pub fn as_ns(&self) -> Option<u64> {
        match *self {
            TextTs::Count(_) => None,
            TextTs::Secs { secs, frac, digits } => {
                let frac_ns = if digits <= 9 {
                    frac.checked_mul(10u64.checked_pow(9 - u32::from(digits))?)?
                } else {
                    frac / 10u64.checked_pow(u32::from(digits) - 9)?
                };
                secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
            }
        }
    }

    /// The raw integer for `Count`, `None` for `Secs`.
    pub fn as_count(&self) -> Option<u64> {
        match *self {
            TextTs::Count(c) => Some(c),
            TextTs::Secs { .. } => None,
        }
    }
}

/// One event line, borrowed from the reader's line buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextLine<'a> {
    /// Task name, leading padding removed (may contain spaces and dashes).
    pub comm: &'a str,
    pub pid: i32,
    /// From the tracefs TGID column; `None` without the column or for `(-------)`.
    pub tgid: Option<i32>,
    pub cpu: u32,
    /// Latency flags such as `d..2.` (tracefs irq-info, `trace-cmd report -l`).
    pub flags: Option<&'a str>,
    pub ts: TextTs,
    /// Event name; empty for tracer lines without one (function tracer:
    /// `func <-parent`), whose text is all in `body`.
    pub event: &'a str,
    /// Everything after `event: ` (for report output, after the padding).
    pub body: &'a str,
    /// The buffer instance named by `trace-cmd report` when a file has several
    /// buffers (`tsc_offset:  …`); `None` for the top buffer and tracefs text.
    pub buffer: Option<&'a str>,
}

impl<'a> TextLine<'a> {
    /// The text of a `trace_marker` write: tracefs prints it as event
    /// `tracing_mark_write` (kernel trace_output.c `trace_print_print`: ip
    /// symbol, `": "`, text), trace-cmd report as event `print` with body
    /// `tracing_mark_write: text`. The trailing newline is removed.
    pub fn print_text(&self) -> Option<&'a str> {
        match self.event {
            "tracing_mark_write" => Some(trim_nl(self.body)),
            "print" => super::fields::parse_print(self.body),
            _ => None,
        }
    }
}

fn trim_nl(s: &str) -> &str {
    s.strip_suffix('\n')
        .unwrap_or(s)
        .trim_end_matches(['\n', '\r'])
}

/// One record of a text stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextRecord<'a> {
    Event(TextLine<'a>),
    /// Events lost on `cpu` before the next event of that CPU. tracefs:
    /// `CPU:%d [LOST %lu EVENTS]` / `CPU:%d [LOST EVENTS]` (count unknown)
    /// (kernel trace.c `print_trace_line`); trace-cmd report:
    /// `CPU:%d [%lld EVENTS DROPPED]` / `CPU:%d [EVENTS DROPPED]`
    /// (trace-read.c `trace_show_data`), possibly after a buffer prefix.
    Lost {
        cpu: u32,
        count: Option<u64>,
        buffer: Option<&'a str>,
    },
    /// `##### CPU %u buffer started ####` (kernel trace.c
    /// `test_cpu_buff_start`): this CPU's data starts here, older data was
    /// overwritten.
    BufferStarted {
        cpu: u32,
    },
}

/// Layout hints for [`parse_event`], fixed per stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Layout {
    /// trace-cmd report: buffer prefixes possible, body padded to 20 columns.
    pub report: bool,
    /// Width of `trace-cmd report -l` latency flags when they abut the
    /// timestamp (libtraceevent `data_latency_format`: 3 flag chars + 2
    /// preempt nibbles = 5 on current kernels).
    pub lat_width: usize,
}

/// Parses a lost-events or buffer-started line, or returns `None`.
pub(crate) fn parse_marker(line: &str) -> Option<TextRecord<'_>> {
    let t = line.trim();
    if let Some(r) = t.strip_prefix("##### CPU ") {
        let cpu = r.strip_suffix(" buffer started ####")?;
        return Some(TextRecord::BufferStarted {
            cpu: cpu.parse().ok()?,
        });
    }
    // Optional "buffer: " prefix of trace-cmd report (print_handle_file).
    let (buffer, t) = match t.find("CPU:") {
        Some(0) => (None, t),
        Some(i) => {
            let pre = t[..i].trim_end().strip_suffix(':')?;
            if pre.is_empty() || pre.contains(char::is_whitespace) {
                return None;
            }
            (Some(pre), &t[i..])
        }
        None => return None,
    };
    let r = t.strip_prefix("CPU:")?;
    let (cpu, r) = r.split_once(' ')?;
    let cpu: u32 = cpu.parse().ok()?;
    let inner = r.strip_prefix('[')?.strip_suffix(']')?;
    let count = if inner == "LOST EVENTS" || inner == "EVENTS DROPPED" {
        None
    } else if let Some(n) = inner
        .strip_prefix("LOST ")
        .and_then(|s| s.strip_suffix(" EVENTS"))
    {
        Some(n.parse().ok()?)
    } else if let Some(n) = inner.strip_suffix(" EVENTS DROPPED") {
        Some(n.parse().ok()?)
    } else {
        return None;
    };
    Some(TextRecord::Lost { cpu, count, buffer })
}

fn digits_len(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Finds the `-pid` dash: the first `-` followed by digits, blanks, then
/// `(`, `[` or a digit. Comms may contain `-` (kworker/0:1-events) and spaces.
fn find_pid_dash(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'-', b.get(i..)?) {
        let d = i + off;
        let nd = digits_len(&b[d + 1..]);
        if nd > 0 {
            let after = d + 1 + nd;
            let sp = b[after..].iter().take_while(|&&c| c == b' ').count();
            if sp > 0 {
                if let Some(c) = b.get(after + sp) {
                    if *c == b'(' || *c == b'[' || c.is_ascii_digit() {
                        return Some(d);
                    }
                }
            }
        }
        i = d + 1;
    }
    None
}

/// Parses a timestamp token without its `:`.
pub(crate) fn parse_ts(tok: &str) -> Result<TextTs, &'static str> {
    match tok.split_once('.') {
        None => {
            if tok.is_empty() || !tok.bytes().all(|c| c.is_ascii_digit()) {
                return Err("expected an integer timestamp");
            }
            tok.parse()
                .map(TextTs::Count)
                .map_err(|_| "timestamp out of range")
        }
        Some((s, f)) => {
            let ok = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
            if !ok(s) || !ok(f) {
                return Err("expected a secs.frac timestamp");
            }
            if f.len() > 19 {
                return Err("timestamp fraction longer than 19 digits");
            }
            let secs = s.parse().map_err(|_| "timestamp seconds out of range")?;
            let frac = f.parse().map_err(|_| "timestamp fraction out of range")?;
            Ok(TextTs::Secs {
                secs,
                frac,
                digits: f.len() as u8,
            })
        }
    }
}

/// Shaped like a timestamp (`digits:` or `digits.digits:`); range errors
/// are left to [`parse_ts`] so they are reported as such.
fn is_ts_token(t: &str) -> bool {
    let Some(n) = t.strip_suffix(':') else {
        return false;
    };
    let mut parts = n.splitn(2, '.');
    let ok =
        |x: Option<&str>| x.is_some_and(|x| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()));
    ok(parts.next()) && (!n.contains('.') || ok(parts.next()))
}

/// Splits off the first blank-separated token.
fn token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(' ');
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Parses one event line. The error says what was expected.
pub(crate) fn parse_event(line: &str, lay: Layout) -> Result<TextLine<'_>, &'static str> {
    let b = line.as_bytes();
    let dash = find_pid_dash(b)
        .ok_or("expected `comm-pid` followed by `[cpu]`, `(tgid)` or a CPU number")?;

    // Task name (and report buffer prefix) before the dash.
    let region = &line[..dash];
    let mut buffer = None;
    let mut comm = region.trim_start();
    let nd = digits_len(&b[dash + 1..]);
    let pid: i32 = line[dash + 1..dash + 1 + nd]
        .parse()
        .map_err(|_| "pid out of range")?;
    let mut rest = line[dash + 1 + nd..].trim_start_matches(' ');

    let mut tgid = None;
    if let Some(r) = rest.strip_prefix('(') {
        let (inner, r) = r.split_once(')').ok_or("expected `)` after the TGID")?;
        let inner = inner.trim();
        if !inner.bytes().all(|c| c == b'-') {
            tgid = Some(
                inner
                    .parse()
                    .map_err(|_| "expected a TGID number or `(-------)`")?,
            );
        }
        rest = r.trim_start_matches(' ');
    }

    let cpu: u32;
    let mut flags = None;
    let ts_tok: &str;
    let latency;
    if let Some(r) = rest.strip_prefix('[') {
        let (c, r) = r.split_once(']').ok_or("expected `]` after the CPU")?;
        cpu = c.parse().map_err(|_| "expected a CPU number in `[...]`")?;
        let (t1, r1) = token(r);
        if is_ts_token(t1) {
            ts_tok = t1;
            rest = r1;
        } else {
            // tracefs irq-info flags (`d..2.`), then the timestamp.
            if t1.is_empty() {
                return Err("expected a timestamp after the CPU");
            }
            flags = Some(t1);
            let (t2, r2) = token(r1);
            ts_tok = t2;
            rest = r2;
        }
        latency = false;
    } else {
        // trace-cmd report -l: `%3d` CPU, then flags, then the timestamp,
        // possibly with no blank between flags and timestamp.
        let nc = digits_len(rest.as_bytes());
        cpu = rest[..nc].parse().map_err(|_| "expected a CPU number")?;
        let r = &rest[nc..];
        let (t1, r1) = token(r);
        if r.starts_with(' ') || t1.is_empty() {
            return Err("expected latency flags after the CPU number");
        }
        if is_ts_token(t1) {
            return Err("expected latency flags before the timestamp");
        }
        if t1.ends_with(':') {
            let w = lay.lat_width.max(1);
            let (f, t) = (t1.get(..w), t1.get(w..));
            match (f, t) {
                (Some(f), Some(t)) if is_ts_token(t) => {
                    flags = Some(f);
                    ts_tok = t;
                }
                _ => return Err("expected latency flags followed by a timestamp"),
            }
            rest = r1;
        } else {
            flags = Some(t1);
            let (t2, r2) = token(r1);
            ts_tok = t2;
            rest = r2;
        }
        latency = true;
    }
    if !is_ts_token(ts_tok) {
        return Err("expected a timestamp `N:` or `secs.frac:`");
    }
    let ts = parse_ts(&ts_tok[..ts_tok.len() - 1])?;

    if lay.report {
        // Split `buffer: ` off the padded comm field (`%16s`, or `%8.8s`
        // with -l); trace-read.c print_handle_file right-aligns the name.
        let width = if latency { 8 } else { 16 };
        if region.len() > width {
            if let (Some(pre), Some(c)) = (
                region.get(..region.len() - width),
                region.get(region.len() - width..),
            ) {
                let pre = pre.trim();
                if pre.is_empty() {
                    comm = c.trim_start();
                } else if let Some(name) = pre.strip_suffix(':') {
                    if !name.is_empty() && !name.contains(char::is_whitespace) {
                        buffer = Some(name);
                        comm = c.trim_start();
                    }
                }
            }
        }
        // `--ts-diff` adds `(+N)` after the timestamp.
        let (t, r) = token(rest);
        if t.starts_with("(+") && t.ends_with(')') {
            rest = r;
        }
    }

    // Event name: `name: body`; the name has no blanks.
    let r = rest.strip_prefix(' ').unwrap_or(rest);
    let r = if lay.report {
        r.trim_start_matches(' ')
    } else {
        r
    };
    let (event, body) = match r.find(' ') {
        Some(i) if r[..i].ends_with(':') => (&r[..i - 1], &r[i + 1..]),
        None if r.ends_with(':') => (&r[..r.len() - 1], ""),
        _ => ("", r),
    };
    let body = if lay.report {
        body.trim_start_matches(' ')
    } else {
        body
    };
    Ok(TextLine {
        comm,
        pid,
        tgid,
        cpu,
        flags,
        ts,
        event,
        body,
        buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEFS: Layout = Layout {
        report: false,
        lat_width: 5,
    };
    const REPORT: Layout = Layout {
        report: true,
        lat_width: 5,
    };

    #[test]
    fn tracefs_tgid_irqinfo() {
        let l = parse_event("            bash-4613    (   4613) [001] d..2. 669023293889: sched_switch: prev_comm=bash prev_pid=4613", TRACEFS).unwrap();
        assert_eq!(
            (l.comm, l.pid, l.tgid, l.cpu, l.flags),
            ("bash", 4613, Some(4613), 1, Some("d..2."))
        );
        assert_eq!(l.ts, TextTs::Count(669023293889));
        assert_eq!(
            (l.event, l.body),
            ("sched_switch", "prev_comm=bash prev_pid=4613")
        );
        let l = parse_event("          <idle>-0       (-------) [000] ..s1. 669036378012: softirq_entry: vec=7 [action=SCHED]", TRACEFS).unwrap();
        assert_eq!((l.comm, l.pid, l.tgid), ("<idle>", 0, None));
    }

    #[test]
    fn comm_with_spaces_and_dashes() {
        let l = parse_event(
            " kworker/0:1-events-12      [003]  12345.678901: workqueue_execute_start: x",
            TRACEFS,
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.pid, l.cpu, l.flags),
            ("kworker/0:1-events", 12, 3, None)
        );
        assert_eq!(
            l.ts,
            TextTs::Secs {
                secs: 12345,
                frac: 678901,
                digits: 6
            }
        );
        assert_eq!(l.ts.as_ns(), Some(12_345_678_901_000));
        let l = parse_event(
            "     Web Content-123     [000] .... 5.000001: print: tracing_mark_write: hi",
            TRACEFS,
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.pid, l.event, l.body),
            ("Web Content", 123, "print", "tracing_mark_write: hi")
        );
    }

    #[test]
    fn report_forms() {
        let l = parse_event("                        bash-4613  [001]669023293889: sched_switch:         bash:4613 [120] S", REPORT).unwrap();
        assert_eq!(
            (l.comm, l.buffer, l.cpu, l.event, l.body),
            ("bash", None, 1, "sched_switch", "bash:4613 [120] S")
        );
        let l = parse_event("tsc_offset:          python3-4617  [000]669436235315: kvm_write_tsc_offset: vcpu=0 prev=0 next=1", REPORT).unwrap();
        assert_eq!(
            (l.comm, l.buffer, l.event),
            ("python3", Some("tsc_offset"), "kvm_write_tsc_offset")
        );
        let l = parse_event(
            "tsc_offset:  python3-4617    0d..1.669436235315: kvm_write_tsc_offset: vcpu=0",
            REPORT,
        )
        .unwrap();
        assert_eq!(
            (l.comm, l.buffer, l.cpu, l.flags),
            ("python3", Some("tsc_offset"), 0, Some("d..1."))
        );
        assert_eq!(l.ts, TextTs::Count(669436235315));
        let l = parse_event(
            "            bash-4613  [001]669023633527: (+340)   sched_waking:         comm=x",
            REPORT,
        )
        .unwrap();
        assert_eq!((l.event, l.body), ("sched_waking", "comm=x"));
        let l = parse_event(
            "     bash-4613  [001] 12345.678901234: sched_waking:         comm=x",
            REPORT,
        )
        .unwrap();
        assert_eq!(
            l.ts,
            TextTs::Secs {
                secs: 12345,
                frac: 678901234,
                digits: 9
            }
        );
    }

    #[test]
    fn markers() {
        assert_eq!(
            parse_marker("CPU:2 [LOST 123 EVENTS]"),
            Some(TextRecord::Lost {
                cpu: 2,
                count: Some(123),
                buffer: None
            })
        );
        assert_eq!(
            parse_marker("CPU:2 [LOST EVENTS]"),
            Some(TextRecord::Lost {
                cpu: 2,
                count: None,
                buffer: None
            })
        );
        assert_eq!(
            parse_marker("CPU:1 [5 EVENTS DROPPED]"),
            Some(TextRecord::Lost {
                cpu: 1,
                count: Some(5),
                buffer: None
            })
        );
        assert_eq!(
            parse_marker("tsc_offset: CPU:1 [EVENTS DROPPED]"),
            Some(TextRecord::Lost {
                cpu: 1,
                count: None,
                buffer: Some("tsc_offset")
            })
        );
        assert_eq!(
            parse_marker("##### CPU 2 buffer started ####"),
            Some(TextRecord::BufferStarted { cpu: 2 })
        );
        assert_eq!(parse_marker("CPU:1 [LOST x EVENTS]"), None);
    }

    #[test]
    fn function_tracer_line() {
        let l = parse_event("          <idle>-0     [001] .Ns3 21169.031484: _raw_spin_unlock <-clocksource_watchdog", TRACEFS).unwrap();
        assert_eq!(
            (l.event, l.body),
            ("", "_raw_spin_unlock <-clocksource_watchdog")
        );
    }
}
