//! Malformed input: errors name the line and what was expected; nothing panics.

use ftrace::text::{fields, parse_print, parse_write_tsc_offset, sniff, TextReader, TextRecord};
use ftrace::Error;
use proptest::prelude::*;

const GOOD: &str =
    "            bash-4613    (   4613) [001] d..2. 669023293889: sched_switch: prev_comm=bash\n";

fn first_error(text: &str) -> Option<Error> {
    let mut r = match TextReader::new(text.as_bytes()) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    loop {
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

#[test]
fn bad_lines_name_their_number() {
    let cases = [
        ("bash 4613 [001] 1: x: y\n", "comm-pid"),
        ("bash-4613 [001] d..2.\n", "timestamp"),
        ("bash-4613 [0x1] 1: x: y\n", "CPU number"),
        ("bash-4613 (abc) [001] 1: x: y\n", "TGID"),
        ("bash-4613 [001 1: x: y\n", "`]`"),
        ("bash-4613 [001] 12.3x: x: y\n", "timestamp"),
        (
            "bash-4613 [001] 99999999999999999999999: x: y\n",
            "out of range",
        ),
    ];
    for (bad, what) in cases {
        let text = format!("# tracer: nop\n#\n{GOOD}\n{bad}{GOOD}");
        match first_error(&text) {
            Some(Error::Line { line, what: w }) => {
                assert_eq!(line, 5, "{bad:?}: {w}");
                assert!(w.contains(what), "{bad:?}: {w:?} should mention {what:?}");
            }
            e => panic!("{bad:?}: expected a line error, got {e:?}"),
        }
    }
}

#[test]
fn non_utf8_and_long_lines() {
    let mut t = GOOD.as_bytes().to_vec();
    t.extend_from_slice(b"bash-1 [000] 1: x: \xff\xfe\n");
    let mut r = TextReader::new(&t[..]).unwrap();
    assert!(r.next_record().unwrap().is_some());
    assert!(matches!(r.next_record(), Err(Error::Line { line: 2, .. })));

    let long = vec![b'a'; ftrace::text::MAX_LINE + 10];
    assert!(matches!(
        TextReader::new(&long[..]).err(),
        Some(Error::Line { line: 1, .. })
    ));
}

#[test]
fn comments_blank_and_info_lines_are_skipped() {
    let text = format!(
        "version = 6\ncpus=2\nCPU 1 is empty\n\n{GOOD}# a comment\n   \nCPU:0 [SUBBUFFER START]\n{GOOD}"
    );
    let mut r = TextReader::new(text.as_bytes()).unwrap();
    assert_eq!(r.header().version.as_deref(), Some("6"));
    assert_eq!(r.header().cpus, Some(2));
    let mut n = 0;
    while let Some(rec) = r.next_record().unwrap() {
        assert!(matches!(rec, TextRecord::Event(_)));
        n += 1;
    }
    assert_eq!(n, 2);
}

#[test]
fn report_lost_prefix_carries_buffer() {
    // trace-read.c prints the buffer prefix once, before `CPU:N [.. DROPPED]`.
    let text = "cpus=2\ntsc_offset: CPU:0 [3 EVENTS DROPPED]\n             python3-4617  [000]669436235315: kvm_write_tsc_offset: vcpu=0 prev=0 next=1\n";
    let mut r = TextReader::new(text.as_bytes()).unwrap();
    assert!(matches!(
        r.next_record().unwrap(),
        Some(TextRecord::Lost {
            cpu: 0,
            count: Some(3),
            buffer: Some("tsc_offset")
        })
    ));
    match r.next_record().unwrap() {
        Some(TextRecord::Event(l)) => assert_eq!(l.buffer, Some("tsc_offset")),
        r => panic!("{r:?}"),
    }
}

#[test]
fn sniffing() {
    let s = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/text/pipe_lost.txt"
    ))
    .unwrap();
    assert!(sniff(&s[..300])); // cut mid-line
    assert!(sniff(b"# tracer: nop\n#\n"));
    assert!(sniff(b"cpus=2\n"));
    assert!(sniff(GOOD.as_bytes()));
    assert!(!sniff(b"\x17\x08Dtracing6\0"));
    assert!(!sniff(b"name: sched_switch\nID: 316\nformat:\n"));
    assert!(!sniff(b"hello world\nthis is text\n"));
    assert!(!sniff(b""));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_lines_never_panic(lines in prop::collection::vec(
        prop_oneof![
            "[ -~]{0,80}",
            "[a-z<>. -]{0,16}-[0-9]{1,7} +(\\([ 0-9-]{0,8}\\) )?\\[[0-9]{1,3}\\] [dN.hs0-9]{0,6} [0-9.]{0,14}:? [a-z_]{0,12}:? [ -~]{0,30}",
            "CPU:[0-9x]{0,3} \\[(LOST )?[0-9]{0,5} ?(EVENTS|EVENTS DROPPED)\\]",
            "[a-z_]{0,8}: +[a-z]{1,8}-[0-9]{1,5} +[0-9]{1,3}[dN.hs0-9]{0,6}[0-9]{0,13}: [a-z]{0,5}: .{0,10}",
        ], 0..20)) {
        let text = lines.join("\n");
        let _ = sniff(text.as_bytes());
        if let Ok(mut r) = TextReader::new(text.as_bytes()) {
            for _ in 0..40 {
                match r.next_record() {
                    Ok(Some(TextRecord::Event(l))) => {
                        let _ = l.ts.as_ns();
                        let _ = l.print_text();
                        let _ = fields(l.body).count();
                        let _ = parse_write_tsc_offset(l.body);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(Error::Line { line, .. }) => { prop_assert!(line >= 1 && line as usize <= lines.len().max(1)); }
                    Err(e) => prop_assert!(false, "unexpected error kind {e}"),
                }
            }
        }
    }

    #[test]
    fn fields_never_panic(body in "[ -~]{0,100}") {
        for (k, v) in fields(&body) {
            prop_assert!(!k.is_empty());
            prop_assert!(body.contains(v));
        }
        let _ = parse_print(&body);
    }

    #[test]
    fn tsc_offset_round_trip(vcpu: u32, prev: u64, next: u64) {
        let body = format!("vcpu={vcpu} prev={prev} next={next}");
        let w = parse_write_tsc_offset(&body).unwrap();
        prop_assert_eq!((w.vcpu, w.prev, w.next), (vcpu, prev, next));
    }
}
