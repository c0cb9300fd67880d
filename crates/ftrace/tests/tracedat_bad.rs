//! Damaged trace.dat files: every damage is an error naming a byte offset,
//! and nothing panics (parse, then every page and event of every buffer).

use ftrace::ring::RingEvent;
use ftrace::tracedat::TraceDat;
use std::path::Path;
use std::process::Command;

fn sample() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/two_buffers.v7zstd.dat")).unwrap()
}

/// Parses and walks everything; returns the first error's text.
fn read_all(bytes: &[u8]) -> Result<usize, String> {
    let t = TraceDat::parse(bytes).map_err(|e| e.to_string())?;
    let mut n = 0;
    for (bi, b) in t.buffers().iter().enumerate() {
        for ci in 0..b.cpus.len() {
            let mut ev = t.cpu_events(bi, ci).map_err(|e| e.to_string())?;
            while let Some(e) = ev.next_event().map_err(|e| e.to_string())? {
                if let RingEvent::Event { data, .. } = e {
                    n += data.len().min(1);
                }
            }
        }
    }
    Ok(n)
}

fn assert_offset_error(e: &str, ctx: &str) {
    assert!(e.starts_with("byte "), "{ctx}: error does not name an offset: {e}");
}

fn converted(args: &[&str], name: &str) -> Option<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("tracedat_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/two_buffers.v7zstd.dat");
    match Command::new("trace-cmd").arg("convert").args(args).arg("-i").arg(&src).arg("-o").arg(&out).output() {
        Ok(o) if o.status.success() => Some(std::fs::read(&out).unwrap()),
        _ => {
            eprintln!("SKIPPED: trace-cmd convert unavailable; {name} not tested");
            None
        }
    }
}

fn truncations(full: &[u8], what: &str) {
    let good = read_all(full).unwrap();
    assert!(good > 1000);
    let mut cut = 0;
    while cut < full.len() {
        match read_all(&full[..cut]) {
            Ok(n) => panic!("{what} truncated at {cut} of {}: parsed with {n} events", full.len()),
            Err(e) => assert_offset_error(&e, &format!("{what} cut at {cut}")),
        }
        cut += 97;
    }
}

#[test]
fn truncated_v7zstd_every_97th_byte() {
    truncations(&sample(), "v7 zstd");
}

#[test]
fn truncated_v7none_and_v6_every_97th_byte() {
    if let Some(b) = converted(&["--compression", "none"], "v7none.dat") {
        truncations(&b, "v7 none");
    }
    if let Some(b) = converted(&["--file-version", "6"], "v6.dat") {
        truncations(&b, "v6");
    }
}

fn sections(bytes: &[u8]) -> Vec<(u64, u16, u64)> {
    TraceDat::parse(bytes).unwrap().sections().iter().map(|s| (s.offset.0, s.id, s.size)).collect()
}

#[test]
fn flipped_section_sizes() {
    let good = sample();
    for (off, id, size) in sections(&good) {
        for new in [u64::MAX, size.wrapping_add(1) << 20, good.len() as u64] {
            let mut b = good.clone();
            b[off as usize + 8..off as usize + 16].copy_from_slice(&new.to_le_bytes());
            let e = read_all(&b).expect_err(&format!("section {id} at {off} with size {new} accepted"));
            assert_offset_error(&e, &format!("section {id} at {off} size {new}"));
        }
        // Small changes misalign the scan or the body: no panic, and any
        // error names an offset.
        for new in [0, size.saturating_sub(1), size + 1, size ^ 0x80] {
            let mut b = good.clone();
            b[off as usize + 8..off as usize + 16].copy_from_slice(&new.to_le_bytes());
            if let Err(e) = read_all(&b) {
                assert_offset_error(&e, &format!("section {id} at {off} size {new}"));
            }
        }
        // The compressed-size word of compressed sections (not flyrecord
        // sections: their body is padding, then chunked CPU data).
        if b_flags(&good, off) & 1 != 0 && id != 3 {
            for new in [u32::MAX, 0, 7] {
                let mut b = good.clone();
                b[off as usize + 16..off as usize + 20].copy_from_slice(&new.to_le_bytes());
                let e = read_all(&b).expect_err(&format!("section {id} at {off} with csize {new} accepted"));
                assert_offset_error(&e, &format!("section {id} csize {new}"));
            }
        }
    }
}

fn b_flags(b: &[u8], off: u64) -> u16 {
    u16::from_le_bytes([b[off as usize + 2], b[off as usize + 3]])
}

#[test]
fn options_chain_loop() {
    let mut b = sample();
    let secs = sections(&b);
    let opts: Vec<u64> = secs.iter().filter(|s| s.1 == 0).map(|s| s.0).collect();
    assert_eq!(opts.len(), 3);
    // The last options section ends with DONE (u16 0, u32 8, u64 next);
    // point it back at the first.
    let (last, _, size) = *secs.iter().rfind(|s| s.1 == 0).unwrap();
    let next_at = (last + 16 + size - 8) as usize;
    assert_eq!(&b[next_at - 6..next_at], &[0, 0, 8, 0, 0, 0]);
    b[next_at..next_at + 8].copy_from_slice(&opts[0].to_le_bytes());
    let e = read_all(&b).unwrap_err();
    assert!(e.contains("loops"), "{e}");
    assert_offset_error(&e, "loop");
    // A self-loop too.
    b[next_at..next_at + 8].copy_from_slice(&last.to_le_bytes());
    let e = read_all(&b).unwrap_err();
    assert!(e.contains("loops"), "{e}");
}

#[test]
fn bad_zstd_frames() {
    let good = sample();
    for (off, id, _) in sections(&good).into_iter().filter(|s| b_flags(&good, s.0) & 1 != 0 && s.1 != 3) {
        // Corrupt the zstd magic: an error at the block's header.
        let mut b = good.clone();
        b[off as usize + 24] ^= 0xff;
        let e = read_all(&b).expect_err(&format!("bad frame in section {id} accepted"));
        assert!(e.starts_with(&format!("byte {}: zstd", off + 16)), "{e}");
        // A byte inside the frame: trace-cmd writes no checksum, so this may
        // go unnoticed; it must not panic.
        let mut b = good.clone();
        b[off as usize + 40] ^= 0xff;
        if let Err(e) = read_all(&b) {
            assert_offset_error(&e, &format!("damaged frame in section {id}"));
        }
    }
    // A flyrecord chunk: its frame starts 12 bytes into the CPU data.
    let t = TraceDat::parse(&good).unwrap();
    let c = t.buffers()[0].cpus[0];
    let mut b = good.clone();
    b[c.offset.0 as usize + 12] ^= 0xff;
    let e = read_all(&b).unwrap_err();
    assert!(e.contains("zstd"), "{e}");
    assert!(e.starts_with(&format!("byte {}:", c.offset.0 + 4)), "{e}");
}

#[test]
fn version_8_and_bad_header() {
    let mut b = sample();
    assert_eq!(&b[10..12], b"7\0");
    b[10] = b'8';
    let e = read_all(&b).unwrap_err();
    assert_eq!(e, "byte 10: unsupported trace.dat version 8 (expected 6 or 7)");
    let mut b = sample();
    b[0] = 0;
    assert_offset_error(&read_all(&b).unwrap_err(), "magic");
    let mut b = sample();
    b[12] = 7; // endian flag
    assert_offset_error(&read_all(&b).unwrap_err(), "endian");
}

/// Random byte damage anywhere: no panics (a tiny deterministic fuzz).
#[test]
fn random_damage_never_panics() {
    let good = sample();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if let Err(e) = read_all(&b) {
            assert_offset_error(&e, "random damage");
        }
    }
}
