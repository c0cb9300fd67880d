//! Fuzz target: ftrace text (`ftrace::text`): tracefs `trace`/`trace_pipe`
//! and `trace-cmd report` output, read record by record, each event body
//! split into fields.
#![no_main]

use ftrace::text::{field, fields, parse_print, parse_write_tsc_offset, sniff, TextReader, TextRecord};
use libfuzzer_sys::fuzz_target;

/// Errors tolerated before giving up, to see that reading resumes after one
/// bad line without looping on it.
const MAX_ERRORS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    let Ok(mut r) = TextReader::new(data) else { return };
    let _ = (r.kind(), format!("{:?}", r.header()));
    let mut errors = 0;
    let mut last_line = 0;
    loop {
        match r.next_record() {
            Ok(None) => break,
            Ok(Some(TextRecord::Event(l))) => {
                let _ = (l.ts.as_ns(), l.ts.as_count(), l.print_text(), l.comm, l.pid, l.tgid, l.cpu, l.flags, l.buffer);
                let n = fields(l.body).count();
                let _ = n;
                let _ = field(l.body, "vcpu");
                let _ = parse_write_tsc_offset(l.body);
                let _ = parse_print(l.body);
            }
            Ok(Some(_)) => {}
            Err(_) => {
                errors += 1;
                if errors >= MAX_ERRORS {
                    break;
                }
            }
        }
        let n = r.line_number();
        assert!(n >= last_line, "line number went back");
        last_line = n;
    }
    // The body helpers on the raw input too: they take any text.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = fields(s).count();
        let _ = parse_write_tsc_offset(s);
        let _ = parse_print(s);
    }
});
