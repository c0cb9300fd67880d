//! Property tests: parsing format files and rendering records never panic,
//! whatever the bytes.

use ftrace::format::{EventFormat, Kallsyms, PrintkFormats};
use ftrace::printfmt::{RenderCtx, Style};
use ftrace::Endian;
use proptest::prelude::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/formats");

fn real_formats() -> Vec<EventFormat> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(DIR).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "format") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let sys = stem.split('_').next().unwrap().to_string();
            v.push(EventFormat::parse(&sys, &std::fs::read(&p).unwrap()).unwrap());
        }
    }
    assert!(v.len() >= 15);
    v
}

fn render_all(ev: &EventFormat, rec: &[u8], k: &Kallsyms, p: &PrintkFormats) {
    for endian in [Endian::Little, Endian::Big] {
        for long_size in [4u8, 8] {
            let ctx = RenderCtx { endian, long_size, cpu: 1, kallsyms: Some(k), printk: Some(p), state: None, plugins: true };
            for style in [Style::Kernel, Style::TraceCmd] {
                let mut out = Vec::new();
                ev.render(rec, &ctx, style, &mut out);
            }
        }
    }
}

/// Pieces of print formats to recombine into hostile ones.
const VOCAB: &[&str] = &[
    "\"%d %s %p %ps %pS %llx %*s %.*d %c %pM %pI4 %%\"", "\"", ",", "(", ")", "REC", "->", "x", "s", "d",
    "__print_flags", "__print_symbolic", "__print_hex", "__print_array", "__get_str", "__get_dynamic_array",
    "__get_dynamic_array_len", "__get_bitmask", "sizeof", "__builtin_expect", "{", "}", "[", "]", "?", ":",
    "+", "-", "*", "/", "%", "<<", ">>", "&", "|", "^", "~", "!", "&&", "||", "==", "<=", "0", "1", "-1",
    "0xffffffffffffffff", "unsigned", "long", "int", "char", "void", "\"a\"", "'b'", "99999999999999999999",
];

fn hostile_format(parts: &[usize]) -> Vec<u8> {
    let mut t = b"name: h\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\
\tfield:int x;\toffset:4;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] s;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:u8 d[6];\toffset:12;\tsize:6;\tsigned:0;\n\nprint fmt: \"%d %s\", "
        .to_vec();
    for &i in parts {
        t.extend_from_slice(VOCAB[i % VOCAB.len()].as_bytes());
        t.push(b' ');
    }
    t.push(b'\n');
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn parse_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600), rec in proptest::collection::vec(any::<u8>(), 0..64)) {
        let k = Kallsyms::parse(&data);
        let p = PrintkFormats::parse(&data);
        let _ = k.lookup(0);
        if let Ok(ev) = EventFormat::parse("fuzz", &data) {
            render_all(&ev, &rec, &k, &p);
        }
        let _ = ftrace::format::HeaderPage::parse(&data);
        let _ = ftrace::format::HeaderEvent::parse(&data);
    }

    #[test]
    fn real_formats_random_records(rec in proptest::collection::vec(any::<u8>(), 0..120)) {
        let k = Kallsyms::parse(&std::fs::read(format!("{DIR}/kallsyms.excerpt")).unwrap());
        let p = PrintkFormats::parse(b"0x0 : \"%d %s %pS %*d %p %lu\"\n0x1 : \"%s%s%s\"\n");
        for ev in real_formats() {
            render_all(&ev, &rec, &k, &p);
        }
    }

    #[test]
    fn hostile_print_formats(parts in proptest::collection::vec(0usize..1000, 0..60), rec in proptest::collection::vec(any::<u8>(), 0..40)) {
        let text = hostile_format(&parts);
        let ev = EventFormat::parse("ftrace", &text).unwrap();
        render_all(&ev, &rec, &Kallsyms::default(), &PrintkFormats::default());
    }
}

#[test]
fn deep_and_long_expressions_do_not_overflow() {
    let mut s = String::from("name: deep\nID: 1\nformat:\n\tfield:int x;\toffset:0;\tsize:4;\tsigned:1;\n\nprint fmt: \"%d %d %d\", ");
    s.push_str(&"(".repeat(5000));
    s.push_str("REC->x");
    s.push_str(&")".repeat(5000));
    s.push_str(", REC->x");
    for _ in 0..20000 {
        s.push_str(" + REC->x");
    }
    s.push_str(", ");
    s.push_str(&"-".repeat(20000));
    s.push_str("REC->x\n");
    let ev = EventFormat::parse("x", s.as_bytes()).unwrap();
    let ctx = RenderCtx { endian: Endian::Little, long_size: 8, cpu: 0, kallsyms: None, printk: None, state: None, plugins: true };
    for style in [Style::Kernel, Style::TraceCmd] {
        let mut out = Vec::new();
        ev.render(&[1, 0, 0, 0], &ctx, style, &mut out);
        assert!(!out.is_empty());
    }
}
