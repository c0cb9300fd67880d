//! Field access for event bodies printed as `key=value` pairs, and typed
//! parsers for the events tscmerge needs from text.

/// Is `t` an `ident=` (optionally `[ident=`) token? Returns the key, the
/// value start within `t`, and whether it was bracketed.
fn key_of(t: &str) -> Option<(&str, usize, bool)> {
    let (t, off, br) = match t.strip_prefix('[') {
        Some(r) => (r, 1, true),
        None => (t, 0, false),
    };
    let eq = t.find('=')?;
    let key = &t[..eq];
    if key.is_empty()
        || !key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
    {
        return None;
    }
    Some((key, off + eq + 1, br))
}

/// `key=value` pairs of an event body, in order, borrowed from `body`.
///
/// Rules (kept simple, matching what kernel print formats produce):
/// - pairs are separated by blanks; a token `key=` (key of letters, digits,
///   `_`, `.`) starts a pair, `[key=value]` too (brackets dropped:
///   softirq's `vec=7 [action=SCHED]`, timer's `[timeout=1]`);
/// - a value runs until the next `key=` token, so it may contain blanks
///   (`comm=Web Content pid=1` gives `comm` = `Web Content`), except that a
///   token with no letter or digit (sched_switch's `==>`) ends it and is
///   skipped;
/// - tokens before the first pair that are not pairs are skipped.
pub fn fields(body: &str) -> impl Iterator<Item = (&str, &str)> {
    Fields { body, pos: 0 }
}

struct Fields<'a> {
    body: &'a str,
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let body = self.body;
        // Find the next key token.
        let (key, vstart, bracketed, mut end) = loop {
            let (start, tok) = next_token(body, self.pos)?;
            self.pos = start + tok.len();
            if let Some((k, v, br)) = key_of(tok) {
                break (k, start + v, br, start + tok.len());
            }
        };
        // Extend the value over following non-key tokens that carry text.
        if !bracketed {
            while let Some((start, tok)) = next_token(body, end) {
                if key_of(tok).is_some() || !tok.bytes().any(|c| c.is_ascii_alphanumeric()) {
                    break;
                }
                end = start + tok.len();
            }
        }
        self.pos = end;
        let mut v = body.get(vstart..end)?;
        if bracketed {
            v = v.strip_suffix(']').unwrap_or(v);
        }
        Some((key, v))
    }
}

/// Next blank-separated token at or after `pos`: (start, token).
fn next_token(s: &str, pos: usize) -> Option<(usize, &str)> {
    let rest = s.get(pos..)?;
    let skip = rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len();
    let start = pos + skip;
    let rest = &s[start..];
    if rest.is_empty() {
        return None;
    }
    let len = rest.find([' ', '\t', '\n', '\r']).unwrap_or(rest.len());
    Some((start, &rest[..len]))
}

/// The value of `key` in a `key=value` body (see [`fields`]).
pub fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    fields(body).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `kvm:kvm_write_tsc_offset`, print fmt `"vcpu=%u prev=%llu next=%llu"`
/// (linux arch/x86/kvm/trace.h). Offsets are printed unsigned; they are
/// two's-complement signed values (use `as i64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteTscOffset {
    pub vcpu: u32,
    pub prev: u64,
    pub next: u64,
}

/// Parses a `kvm_write_tsc_offset` body: `vcpu=0 prev=0 next=18446743404273366793`.
/// All three fields must be present and decimal.
pub fn parse_write_tsc_offset(body: &str) -> Option<WriteTscOffset> {
    let (mut vcpu, mut prev, mut next) = (None, None, None);
    for (k, v) in fields(body) {
        match k {
            "vcpu" => vcpu = Some(v.parse().ok()?),
            "prev" => prev = Some(v.parse().ok()?),
            "next" => next = Some(v.parse().ok()?),
            _ => {}
        }
    }
    Some(WriteTscOffset {
        vcpu: vcpu?,
        prev: prev?,
        next: next?,
    })
}

/// The text of a `print` event body as trace-cmd report renders it
/// (`tracing_mark_write: hello`, or `0xffff…: hello` without kallsyms;
/// print fmt `"%ps: %s"`, kernel/trace/trace_entries.h). The trailing newline
/// the kernel keeps is removed. For tracefs lines use
/// [`TextLine::print_text`](super::TextLine::print_text), which also handles
/// the tracefs form where `tracing_mark_write` is the event name.
pub fn parse_print(body: &str) -> Option<&str> {
    let (sym, text) = body.split_once(": ")?;
    if sym.is_empty() || sym.contains(char::is_whitespace) {
        return None;
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    Some(text.strip_suffix('\r').unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let v: Vec<_> = fields("prev_comm=bash prev_pid=4613 prev_prio=120 prev_state=R+ ==> next_comm=swapper/0 next_pid=0").collect();
        assert_eq!(
            v,
            [
                ("prev_comm", "bash"),
                ("prev_pid", "4613"),
                ("prev_prio", "120"),
                ("prev_state", "R+"),
                ("next_comm", "swapper/0"),
                ("next_pid", "0")
            ]
        );
        let v: Vec<_> = fields("vec=7 [action=SCHED]").collect();
        assert_eq!(v, [("vec", "7"), ("action", "SCHED")]);
        let v: Vec<_> = fields("comm=Web Content pid=12 prio=120").collect();
        assert_eq!(v, [("comm", "Web Content"), ("pid", "12"), ("prio", "120")]);
        let v: Vec<_> =
            fields("timer=0x1 function=f expires=4294956675 [timeout=1] cpu=1 flags=D|P|I")
                .collect();
        assert_eq!(v[3], ("timeout", "1"));
        assert_eq!(v[5], ("flags", "D|P|I"));
        assert_eq!(fields("bash:4613 [120] S ==> x").count(), 0);
        assert_eq!(field("a= b=2", "a"), Some(""));
    }

    #[test]
    fn tsc_offset() {
        let w = parse_write_tsc_offset("vcpu=0 prev=0 next=18446743404273366793").unwrap();
        assert_eq!(
            w,
            WriteTscOffset {
                vcpu: 0,
                prev: 0,
                next: 18446743404273366793
            }
        );
        assert_eq!(w.next as i64, -669436184823);
        assert_eq!(parse_write_tsc_offset("vcpu=0 prev=0"), None);
        assert_eq!(parse_write_tsc_offset("vcpu=0 prev=0 next=-1"), None);
    }

    #[test]
    fn print() {
        assert_eq!(
            parse_print("tracing_mark_write: hello world\n"),
            Some("hello world")
        );
        assert_eq!(parse_print("0xffffffff81234567: x"), Some("x"));
        assert_eq!(parse_print("hello"), None);
    }
}
