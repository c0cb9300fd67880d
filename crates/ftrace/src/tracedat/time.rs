//! The time `trace-cmd report` 3.1.6 prints for a record, and how.
//!
//! trace-cmd lib/trace-cmd/trace-input.c `timestamp_calc` turns the ring
//! buffer's timestamp into the record's time, in this order: the guest→host
//! correction of a TIME_SHIFT option (`timestamp_host_sync`), then either
//! `--ts2secs HZ` (a `double` factor) or the TSC2NSEC option's
//! `mul_u64_u32_shr(ts, mult, shift)`, then the DATE / OFFSET options'
//! offset (`ts_offset`). `--raw-ts` skips all of it. Records are ordered by
//! that time, so a reader that wants trace-cmd's order converts before it
//! merges.
//!
//! Whether the time prints as seconds is the handle's TRACECMD_FL_IN_USECS
//! flag: set when the handle opens, cleared when a trace_clock text names a
//! clock outside trace-input.c's list of nanosecond clocks (`boot` is not in
//! it), set again by TSC2NSEC. trace-cmd tracecmd/trace-read.c
//! `time_format` then picks `%12d` (flag clear), ` %6.1000d` (seconds,
//! microseconds rounded half up) or ` %9.1d` (`-t`).
//!
//! Instances (BUFFER options) are copies of the top-level handle with the
//! TIME_SHIFT samples cleared (`tracecmd_buffer_instance_handle`): same flag,
//! same TSC2NSEC and offset, no host correction.

use super::options::TraceOption;
use super::TraceDat;

/// How a file's record times print (`trace-read.c time_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeStyle {
    /// `%12d`: the time as a plain number (counter clocks, `--raw-ts`).
    Raw,
    /// ` %6.1000d`: seconds and microseconds, `(ns + 500) / 1000`.
    Usecs,
    /// ` %9.1d` (`report -t`): seconds and nanoseconds.
    Nsecs,
}

/// What the `report` command line adds to a file's own rules.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReportTimeOpts {
    /// `--raw-ts`: the ring buffer's timestamps untouched, printed raw.
    pub raw_ts: bool,
    /// `-t`: nanoseconds where seconds print.
    pub nsecs: bool,
    /// `--ts2secs HZ`: the counter's frequency, replacing TSC2NSEC.
    pub ts2secs_hz: Option<u64>,
    /// `--nodate`: the DATE option is not applied.
    pub no_date: bool,
}

/// One TIME_SHIFT sample as trace-input.c keeps it (`struct
/// ts_offset_sample`: four `long long`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    time: i64,
    offset: i64,
    scaling: i64,
    fraction: i64,
}

/// TIME_SHIFT's flag asking for linear interpolation between samples.
const TSYNC_FLAG_INTERPOLATE: u32 = super::options::TimeShift::FLAG_INTERPOLATE;

/// A file's rules for record times, as trace-cmd 3.1.6 reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportClock {
    pub style: TimeStyle,
    /// TSC2NSEC `(mult, shift)`, when the file has it (mult ≠ 0).
    pub tsc2nsec: Option<(u32, u32)>,
    /// `--ts2secs`: nanoseconds per tick.
    ts2secs: Option<f64>,
    /// DATE (µs → ns) and OFFSET options, summed.
    pub ts_offset: i64,
    /// Per CPU, the TIME_SHIFT samples sorted by time, equal times dropped.
    host_sync: Option<(u32, Vec<Vec<Sample>>)>,
    raw: bool,
}

/// trace-input.c `extract_trace_clock`: the clocks whose counts are
/// nanoseconds (`TSCNSEC_CLOCK` is "tsc2nsec").
fn is_ns_clock(c: &str) -> bool {
    matches!(c, "local" | "global" | "uptime" | "perf" | "tsc2nsec" | "tai") || c.starts_with("mono")
}

/// The current clock in a trace_clock text as trace-input.c
/// `tracecmd_parse_trace_clock` finds it: the first blank-separated token
/// that starts with `[`, up to `]`. `None` when no token does (no change).
fn bracketed_clock(text: &str) -> Option<&str> {
    let tok = text.split(' ').find(|t| t.starts_with('['))?;
    let inner = tok.trim_start_matches('[');
    let inner = inner.split([']', '[']).next().unwrap_or("");
    inner.split_whitespace().next().or(Some(""))
}

/// C `strtoll(s, NULL, 0)`: blanks, a sign, `0x` hex or `0` octal or
/// decimal digits up to the first other byte; saturates on overflow.
pub(crate) fn strtoll(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let b = s.as_bytes();
    let (radix, digits) = if (b.starts_with(b"0x") || b.starts_with(b"0X")) && b.get(2).is_some_and(u8::is_ascii_hexdigit) {
        (16, &s[2..])
    } else if b.first() == Some(&b'0') {
        (8, s)
    } else {
        (10, s)
    };
    let mut v: i128 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        v = (v * radix as i128 + d as i128).min(i64::MAX as i128 + 1);
    }
    let v = if neg { -v } else { v };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Linux `mul_u64_u32_shr` as trace-input.c has it: the 64-bit halves
/// multiplied apart. `shift` above 32 is undefined there; here the high
/// half's product shifts right instead.
fn mul_u64_u32_shr(a: u64, mul: u32, shift: u32) -> u64 {
    let (al, ah) = (a & 0xffff_ffff, a >> 32);
    let mul = mul as u64;
    let mut ret = (al * mul).checked_shr(shift).unwrap_or(0);
    if ah != 0 {
        let hi = ah.wrapping_mul(mul);
        ret = ret.wrapping_add(if shift <= 32 { hi << (32 - shift) } else { hi >> (shift - 32) });
    }
    ret
}

impl ReportClock {
    /// The rules of `dat`'s top-level buffer. `instance` gives an instance's
    /// (no TIME_SHIFT correction).
    pub fn of(dat: &TraceDat<'_>, opts: ReportTimeOpts, instance: bool) -> ReportClock {
        // trace-input.c: the flag starts set; each trace_clock text parsed
        // may clear it unless TSC2NSEC came first; TSC2NSEC sets it.
        let mut usecs = true;
        let mut mult = 0u32;
        let mut shift = 0u32;
        let mut ts_offset = 0i64;
        let mut host_sync = None;
        let parse_clock = |usecs: &mut bool, mult: u32, text: &str| {
            if let Some(c) = bracketed_clock(text) {
                if opts.raw_ts {
                    *usecs = false;
                } else if mult == 0 && !is_ns_clock(c) {
                    *usecs = false;
                }
            }
        };
        for o in dat.options() {
            match o {
                TraceOption::TraceClock(t) => parse_clock(&mut usecs, mult, t),
                TraceOption::Tsc2Nsec { mult: m, shift: s, .. } if !opts.raw_ts => {
                    (mult, shift) = (*m, *s);
                    usecs = true;
                }
                TraceOption::Date(t) if !opts.raw_ts && !opts.no_date => {
                    ts_offset = ts_offset.wrapping_add(strtoll(t).wrapping_mul(1000));
                }
                TraceOption::Offset(t) if !opts.raw_ts => ts_offset = ts_offset.wrapping_add(strtoll(t)),
                TraceOption::TimeShift(s) if !opts.raw_ts && !instance => {
                    let cpus = s
                        .cpus
                        .iter()
                        .map(|c| {
                            let mut v: Vec<Sample> = c
                                .samples()
                                .map(|x| Sample { time: x.time as i64, offset: x.offset, scaling: x.scaling as i64, fraction: x.frac_bits as i64 })
                                .collect();
                            // qsort by time (tsync_offset_cmp), then equal
                            // times dropped. qsort is not stable; equal
                            // times keep the first after sorting, which a
                            // stable sort makes the file's first.
                            v.sort_by_key(|s| s.time);
                            v.dedup_by_key(|s| s.time);
                            v
                        })
                        .collect();
                    host_sync = Some((s.flags, cpus));
                }
                _ => {}
            }
        }
        // trace-input.c `init_data_v6`: a v6 file with a TRACECLOCK option
        // has the trace_clock text after its CPU table, parsed last; when it
        // cannot be read, "[local]".
        if let Some(text) = dat.v6_clock_text() {
            parse_clock(&mut usecs, mult, &text);
        }
        let style = match (usecs && !opts.raw_ts, opts.nsecs) {
            (false, _) => TimeStyle::Raw,
            (true, false) => TimeStyle::Usecs,
            (true, true) => TimeStyle::Nsecs,
        };
        ReportClock {
            style,
            tsc2nsec: (mult != 0).then_some((mult, shift)),
            ts2secs: opts.ts2secs_hz.filter(|&hz| hz > 0).map(|hz| 1e9 / hz as f64),
            ts_offset,
            host_sync,
            raw: opts.raw_ts,
        }
    }

    /// Whether [`Self::convert`] changes nothing.
    pub fn is_identity(&self) -> bool {
        self.raw || (self.tsc2nsec.is_none() && self.ts2secs.is_none() && self.ts_offset == 0 && self.host_sync.is_none())
    }

    /// Whether a TIME_SHIFT option corrects this file's times to its host's.
    pub fn host_synced(&self) -> bool {
        self.host_sync.is_some()
    }

    /// trace-input.c `timestamp_calc` for a record of `cpu`.
    pub fn convert(&self, ts: u64, cpu: u32) -> u64 {
        if self.raw {
            return ts;
        }
        let mut ts = ts;
        if let Some((flags, cpus)) = &self.host_sync {
            ts = host_sync(ts, cpus.get(cpu as usize), *flags);
        }
        if let Some(f) = self.ts2secs {
            // `ts *= handle->ts2secs`: a double product truncated back.
            ts = (ts as f64 * f) as u64;
        } else if let Some((mult, shift)) = self.tsc2nsec {
            ts = mul_u64_u32_shr(ts, mult, shift);
        }
        ts.wrapping_add(self.ts_offset as u64)
    }
}

/// trace-input.c `timestamp_host_sync` over one CPU's samples (a CPU the
/// option does not list keeps its time).
fn host_sync(ts: u64, samples: Option<&Vec<Sample>>, flags: u32) -> u64 {
    let Some(s) = samples else { return ts };
    match s.len() {
        // trace-cmd would read past its array; nothing to correct by.
        0 => ts,
        1 => ts.wrapping_add(s[0].offset as u64),
        2 => correction(ts, flags, &s[0], &s[1]),
        n => {
            // The C compares the unsigned record time with the signed
            // sample time: as unsigned.
            if ts <= s[0].time as u64 {
                return correction(ts, flags, &s[0], &s[1]);
            }
            if ts >= s[n - 1].time as u64 {
                return correction(ts, flags, &s[n - 2], &s[n - 1]);
            }
            // The bisection of the C, to land on the same pair.
            let (mut min, mut max) = (0i64, n as i64 - 1);
            let mut mid = (min + max) / 2;
            while min <= max {
                let t = s[mid as usize].time as u64;
                if ts < t {
                    max = mid - 1;
                } else if ts > t {
                    min = mid + 1;
                } else {
                    break;
                }
                mid = (min + max) / 2;
            }
            let mid = mid.clamp(0, n as i64 - 2) as usize;
            correction(ts, flags, &s[mid], &s[mid + 1])
        }
    }
}

/// trace-input.c `timestamp_correction_calc`: 64-bit, host→guest scaling
/// applied to a guest time (what FACTS.md calls computed backwards).
fn correction(ts: u64, flags: u32, min: &Sample, max: &Sample) -> u64 {
    let tscor = if flags & TSYNC_FLAG_INTERPOLATE != 0 {
        let delta = max.time.wrapping_sub(min.time);
        let off = (ts as i64).wrapping_sub(min.time).wrapping_mul(max.offset.wrapping_sub(min.offset));
        match off.wrapping_add(delta / 2).checked_div(delta) {
            Some(q) => min.offset.wrapping_add(q),
            None => min.offset,
        }
    } else {
        min.offset
    };
    let ts = ts.wrapping_mul(min.scaling as u64).checked_shr(min.fraction as u32).unwrap_or(0);
    ts.wrapping_add(tscor as u64)
}

/// Nanoseconds to the microseconds trace-cmd prints: libtraceevent
/// event-parse.c `print_event_time` rounds (`time += div / 2; time /= div`).
#[inline]
pub fn round_us(ns: u64) -> u64 {
    ns / 1000 + u64::from(ns % 1000 >= 500)
}

/// Appends `ts` as `time_format` prints it, with the leading blank of the
/// seconds styles and without the colon.
pub fn put_time(out: &mut Vec<u8>, style: TimeStyle, ts: u64) {
    use crate::put;
    match style {
        TimeStyle::Raw => put::dec(out, ts, 12, b' '),
        // libtraceevent event-parse.c `print_event_time`: `time += div / 2;
        // time /= div`, then "%5llu.%0*llu".
        TimeStyle::Usecs => {
            let us = round_us(ts);
            out.push(b' ');
            put::dec(out, us / 1_000_000, 5, b' ');
            out.push(b'.');
            put::dec6(out, (us % 1_000_000) as u32);
        }
        TimeStyle::Nsecs => {
            out.push(b' ');
            put::dec(out, ts / 1_000_000_000, 5, b' ');
            out.push(b'.');
            put::dec(out, ts % 1_000_000_000, 9, b'0');
        }
    }
}

/// The `cpus=` trace-cmd report prints: the handle's `max_cpu`
/// (trace-input.c `read_cpus`, CPUCOUNT, `init_buffer_cpu_data`): the
/// larger of the header's CPU count (v6) or CPUCOUNT option and the top
/// buffer's CPU slots (v7: the highest CPU id + 1 when ids have gaps).
pub fn report_cpus(dat: &TraceDat<'_>) -> u32 {
    let mut n = dat.header_cpus().unwrap_or(0);
    for o in dat.options() {
        if let TraceOption::CpuCount(c) = o {
            n = n.max(*c);
        }
    }
    if dat.version() >= 7 {
        if let Some(top) = dat.buffers().iter().find(|b| b.name.is_empty()) {
            let slots = top.cpus.iter().map(|c| c.cpu.saturating_add(1)).max().unwrap_or(0).max(top.cpus.len() as u32);
            n = n.max(slots);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoll_as_c() {
        assert_eq!(strtoll("0x10"), 16);
        assert_eq!(strtoll("  -0x10"), -16);
        assert_eq!(strtoll("010"), 8);
        assert_eq!(strtoll("123abc"), 123);
        assert_eq!(strtoll("99999999999999999999"), i64::MAX);
        assert_eq!(strtoll("-99999999999999999999"), i64::MIN);
        assert_eq!(strtoll(""), 0);
        assert_eq!(strtoll("0x"), 0);
    }

    #[test]
    fn mul_shr_matches_u128() {
        for &(a, m, s) in &[(1u64 << 40, 3_000_000u32, 22u32), (12_345_678_901_234, 0x8000_0001, 31), (u64::MAX, u32::MAX, 32), (7, 5, 0)] {
            let want = ((a as u128 * m as u128) >> s) as u64;
            assert_eq!(mul_u64_u32_shr(a, m, s), want, "{a} {m} {s}");
        }
    }

    #[test]
    fn times_print_as_libtraceevent() {
        let p = |style, ts| {
            let mut v = Vec::new();
            put_time(&mut v, style, ts);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(p(TimeStyle::Usecs, 65_763_545_175), "    65.763545");
        // Rounded half up to the microsecond, carrying into the seconds.
        assert_eq!(p(TimeStyle::Usecs, 65_999_999_500), "    66.000000");
        assert_eq!(p(TimeStyle::Usecs, 852_655_067_718_354), " 852655.067718");
        assert_eq!(p(TimeStyle::Nsecs, 65_763_545_175), "    65.763545175");
        assert_eq!(p(TimeStyle::Raw, 65_763_545_175), " 65763545175");
    }

    #[test]
    fn clocks_in_trace_clock_text() {
        assert_eq!(bracketed_clock("local global [x86-tsc] mono"), Some("x86-tsc"));
        assert_eq!(bracketed_clock("[local] global"), Some("local"));
        assert_eq!(bracketed_clock("local"), None);
        assert!(is_ns_clock("mono_raw") && !is_ns_clock("boot") && !is_ns_clock("x86-tsc") && !is_ns_clock("counter"));
    }

    #[test]
    fn host_sync_picks_sample_pairs() {
        let s = |time, offset| Sample { time, offset, scaling: 1, fraction: 0 };
        let v = vec![s(100, 10), s(200, 20), s(300, 30)];
        assert_eq!(host_sync(50, Some(&v), 0), 60);
        assert_eq!(host_sync(250, Some(&v), 0), 270);
        assert_eq!(host_sync(350, Some(&v), 0), 370);
        // Interpolated: halfway between 10 and 20.
        assert_eq!(host_sync(150, Some(&v), TSYNC_FLAG_INTERPOLATE), 165);
        assert_eq!(host_sync(5, Some(&vec![s(1, -3)]), 0), 2);
        assert_eq!(host_sync(5, None, 0), 5);
        assert_eq!(host_sync(5, Some(&vec![]), 0), 5);
    }
}
