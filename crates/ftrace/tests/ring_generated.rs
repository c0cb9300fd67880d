//! Ring-buffer pages written by a small builder in both byte orders and with
//! 4- and 8-byte commit words, covering every record type.

use ftrace::ring::{Page, PageLayout, RingEvent};
use ftrace::Endian;

/// Writes records the way kernel/trace/ring_buffer.c lays them out, and
/// keeps the (ts, payload) each data record should decode to.
struct Builder {
    e: Endian,
    layout: PageLayout,
    page_ts: u64,
    ts: u64,
    recs: Vec<u8>,
    want: Vec<(u64, Vec<u8>)>,
}

impl Builder {
    fn new(e: Endian, commit: u8, page_ts: u64) -> Builder {
        Builder { e, layout: PageLayout::new(e, commit, 4096), page_ts, ts: page_ts, recs: vec![], want: vec![] }
    }
    fn word(&mut self, v: u32) {
        let b = self.e.put_u32(v);
        self.recs.extend_from_slice(&b);
    }
    fn hdr(&mut self, type_len: u32, delta: u32) {
        assert!(type_len < 32 && delta < (1 << 27));
        let h = match self.e {
            Endian::Little => type_len | (delta << 5),
            Endian::Big => (type_len << 27) | delta,
        };
        self.word(h);
    }
    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
    }
    /// type_len 1..28: length 4*type_len.
    fn small(&mut self, delta: u32, words: u32) {
        let p = Self::payload(words as usize * 4, words as u8);
        self.hdr(words, delta);
        self.recs.extend_from_slice(&p);
        self.ts += delta as u64;
        self.want.push((self.ts, p));
    }
    /// type_len 0: array[0] = payload + 4.
    fn big(&mut self, delta: u32, len: usize) {
        let p = Self::payload(len, 7);
        self.hdr(0, delta);
        self.word(len as u32 + 4);
        self.recs.extend_from_slice(&p);
        self.ts += delta as u64;
        self.want.push((self.ts, p));
    }
    /// A discarded event: padding with a length and a non-zero delta that
    /// the reader ignores.
    fn padding(&mut self, len: u32) {
        self.hdr(29, 5);
        self.word(len);
        self.recs.extend(std::iter::repeat_n(0xaa, len as usize - 4));
    }
    /// Time extend: delta split over time_delta (low 27 bits) and array[0].
    fn extend(&mut self, delta: u64) {
        self.hdr(30, (delta & ((1 << 27) - 1)) as u32);
        self.word((delta >> 27) as u32);
        self.ts += delta;
    }
    /// Absolute timestamp: 59 bits; the top 5 come from the running ts.
    fn absolute(&mut self, ts: u64) {
        self.hdr(31, (ts & ((1 << 27) - 1)) as u32);
        self.word(((ts >> 27) & 0xffff_ffff) as u32);
        self.ts = ts;
    }
    /// Padding with delta 0: the rest of the page.
    fn null_padding(&mut self) {
        self.hdr(29, 0);
    }
    fn finish(&self, lost: Option<Option<u64>>) -> Vec<u8> {
        let cs = self.layout.commit_size as usize;
        let mut p = vec![0u8; 4096];
        p[..8].copy_from_slice(&self.e.put_u64(self.page_ts));
        let mut commit = self.recs.len() as u64;
        if let Some(c) = lost {
            commit |= 1 << 31;
            if c.is_some() {
                commit |= 1 << 30;
            }
        }
        let w = if cs == 8 { self.e.put_u64(commit).to_vec() } else { self.e.put_u32(commit as u32).to_vec() };
        p[8..8 + cs].copy_from_slice(&w);
        let d = 8 + cs;
        p[d..d + self.recs.len()].copy_from_slice(&self.recs);
        if let Some(Some(n)) = lost {
            let w = if cs == 8 { self.e.put_u64(n).to_vec() } else { self.e.put_u32(n as u32).to_vec() };
            p[d + self.recs.len()..d + self.recs.len() + cs].copy_from_slice(&w);
        }
        p
    }
}

fn decode(layout: &PageLayout, page: &[u8]) -> (Vec<Option<Option<u64>>>, Vec<(u64, Vec<u8>)>) {
    let p = Page::parse(layout, page, 1000).unwrap();
    let mut lost = vec![];
    let mut ev = vec![];
    for r in p.events() {
        match r.unwrap() {
            RingEvent::Event { ts, data } => ev.push((ts, data.to_vec())),
            RingEvent::Lost { count } => lost.push(Some(count)),
        }
    }
    (lost, ev)
}

fn every_type(e: Endian, commit: u8) -> Builder {
    let mut b = Builder::new(e, commit, 1_000_000_007);
    for w in 1..=28 {
        b.small(w * 3, w);
    }
    b.big(100, 116); // above the 112-byte small limit
    b.big(0, 4);
    b.padding(24);
    b.small(9, 2);
    b.extend((1 << 27) + 12345); // a delta too big for 27 bits
    b.small(0, 1);
    b.extend(0xde_adbe_ef00);
    b.big(0, 200);
    b.absolute(0x0123_4567_89ab);
    b.small(1, 3);
    b
}

#[test]
fn every_record_type_both_orders_both_commit_sizes() {
    for e in [Endian::Little, Endian::Big] {
        for commit in [4u8, 8] {
            for lost in [None, Some(None), Some(Some(42))] {
                let b = every_type(e, commit);
                let page = b.finish(lost);
                let (l, ev) = decode(&b.layout, &page);
                assert_eq!(l, lost.map(Some).into_iter().collect::<Vec<_>>(), "{e:?} {commit}");
                assert_eq!(ev, b.want, "{e:?} commit {commit} lost {lost:?}");
                assert_eq!(ev.len(), 28 + 2 + 1 + 1 + 1 + 1);
            }
        }
    }
}

#[test]
fn rest_of_page_padding_ends_the_page() {
    for e in [Endian::Little, Endian::Big] {
        let mut b = Builder::new(e, 8, 5);
        b.small(1, 1);
        b.null_padding();
        // Garbage after the null padding is never read.
        b.recs.extend_from_slice(&[0xff; 12]);
        let (_, ev) = decode(&b.layout, &b.finish(None));
        assert_eq!(ev, b.want);
    }
}

#[test]
fn absolute_timestamp_takes_top_bits_from_the_page() {
    // rb_fix_abs_ts: the 59-bit value gets the running ts's top 5 bits, and
    // carries into them when it went backwards.
    let base = 0xf800_0000_0000_0000u64 | 1000;
    let mut b = Builder::new(Endian::Little, 8, base);
    b.absolute(5000);
    b.ts = base - 1000 + 5000; // what the decoder must produce
    b.small(0, 1);
    let (_, ev) = decode(&b.layout, &b.finish(None));
    assert_eq!(ev[0].0, 0xf800_0000_0000_0000 | 5000);
    let mut b = Builder::new(Endian::Little, 8, 0x0800_0000_0000_0000 | 900);
    b.absolute(100); // below the running ts: the top bits carry
    b.small(0, 1);
    let (_, ev) = decode(&b.layout, &b.finish(None));
    assert_eq!(ev[0].0, 0x1000_0000_0000_0000 | 100);
}

#[test]
fn garbage_is_an_error_with_offset() {
    let layout = PageLayout::new(Endian::Little, 8, 4096);
    // commit larger than the page
    let mut p = vec![0u8; 4096];
    p[8..16].copy_from_slice(&5000u64.to_le_bytes());
    let e = Page::parse(&layout, &p, 8192).unwrap_err().to_string();
    assert!(e.starts_with("byte 8200:"), "{e}");
    // a record running past the commit
    let mut b = Builder::new(Endian::Little, 8, 0);
    b.small(1, 4);
    let mut page = b.finish(None);
    page[8..16].copy_from_slice(&12u64.to_le_bytes());
    let p = Page::parse(&layout, &page, 4096).unwrap();
    let e = p.events().next().unwrap().unwrap_err().to_string();
    assert!(e.starts_with("byte 4112:"), "{e}");
    // type_len 0 with a length below 4
    let mut b = Builder::new(Endian::Little, 8, 0);
    b.hdr(0, 0);
    b.word(2);
    let page = b.finish(None);
    let e = Page::parse(&layout, &page, 0).unwrap().events().next().unwrap().unwrap_err().to_string();
    assert!(e.starts_with("byte 20:"), "{e}");
    // short page, stored-count past the page
    assert!(Page::parse(&layout, &page[..10], 0).is_err());
    let mut page = vec![0u8; 24];
    page[8..16].copy_from_slice(&(8u64 | 3 << 30).to_le_bytes());
    assert!(Page::parse(&layout, &page, 0).is_err());
    // any bytes at all: no panic
    let mut x = 88172645463325252u64;
    for _ in 0..2000 {
        let mut page = vec![0u8; 256];
        for byte in page.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        page[8..16].copy_from_slice(&((x % 300) | (x & 3 << 30)).to_le_bytes());
        if let Ok(p) = Page::parse(&PageLayout::new(Endian::Little, 8, 256), &page, 0) {
            for r in p.events() {
                let _ = r;
            }
        }
    }
}

#[test]
fn layout_from_header_page() {
    let text = b"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n";
    let l = PageLayout::from_header_page(text, Endian::Little).unwrap();
    assert_eq!(l, PageLayout::new(Endian::Little, 8, 4096));
    let t32 = b"field: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
field: local_t commit;\toffset:8;\tsize:4;\tsigned:1;\n\
field: char data;\toffset:12;\tsize:4084;\tsigned:1;\n";
    let l = PageLayout::from_header_page(t32, Endian::Big).unwrap();
    assert_eq!(l, PageLayout::new(Endian::Big, 4, 4096));
    assert!(PageLayout::from_header_page(b"field: char data;\toffset:16;\tsize:4080;\n", Endian::Little).is_err());
    let bad = b"field: u64 timestamp;\toffset:0;\tsize:8;\nfield: local_t commit;\toffset:8;\tsize:3;\n";
    assert!(PageLayout::from_header_page(bad, Endian::Little).unwrap_err().to_string().starts_with("line 2:"));
}
