//! Property: events packed by `PageBuilder` decode back to the same
//! (timestamp, payload) sequence with a small independent page walker written
//! from libtraceevent kbuffer-parse.c's rules (`translate_data`), for both byte
//! orders and both long sizes. trace-cmd checks the same pages in write_dat.rs.

use ftrace::write::page::{type_len, RB_MISSED_FLAGS, TS_SHIFT};
use ftrace::write::{pack_events, PageBuilder};
use ftrace::Endian;
use proptest::prelude::*;

fn rd32(e: Endian, b: &[u8]) -> u32 {
    e.u32(b[..4].try_into().unwrap())
}

/// Returns (ts, payload padded to 4 bytes) of every data event.
fn walk(e: Endian, long: usize, page: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut ts = e.u64(page[..8].try_into().unwrap());
    let commit = if long == 8 {
        e.u64(page[8..16].try_into().unwrap())
    } else {
        rd32(e, &page[8..12]) as u64
    };
    let end = 8 + long + (commit & !RB_MISSED_FLAGS) as usize;
    let mut p = 8 + long;
    let mut out = Vec::new();
    while p < end {
        let w = rd32(e, &page[p..]);
        let (tl, delta) = match e {
            Endian::Little => (w & 31, (w >> 5) as u64),
            Endian::Big => (w >> TS_SHIFT, (w & ((1 << TS_SHIFT) - 1)) as u64),
        };
        p += 4;
        match tl {
            type_len::TIME_EXTEND => {
                ts += ((rd32(e, &page[p..]) as u64) << TS_SHIFT) + delta;
                p += 4;
            }
            type_len::PADDING | type_len::TIME_STAMP => panic!("not produced by PageBuilder"),
            0 => {
                let len = rd32(e, &page[p..]) as usize - 4;
                ts += delta;
                out.push((ts, page[p + 4..p + 4 + len].to_vec()));
                p += 4 + len;
            }
            n => {
                let len = 4 * n as usize;
                ts += delta;
                out.push((ts, page[p..p + len].to_vec()));
                p += len;
            }
        }
    }
    assert_eq!(p, end, "events end exactly at commit");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn pack_then_walk(
        big in any::<bool>(),
        long8 in any::<bool>(),
        events in prop::collection::vec((0u64..(1 << 34), 0usize..300, any::<u8>()), 1..400),
    ) {
        let e = if big { Endian::Big } else { Endian::Little };
        let long = if long8 { 8 } else { 4 };
        let mut ts = 0u64;
        let evs: Vec<(u64, Vec<u8>)> = events
            .iter()
            .map(|&(gap, len, fill)| {
                ts += gap;
                (ts, vec![fill; len])
            })
            .collect();
        let mut pb = PageBuilder::new(e, long as u8, 4096).unwrap();
        let pages = pack_events(&mut pb, evs.iter().map(|(t, r)| (*t, r.as_slice()))).unwrap();
        let got: Vec<(u64, Vec<u8>)> = pages.iter().flat_map(|p| walk(e, long, p)).collect();
        prop_assert_eq!(got.len(), evs.len());
        for ((gt, gp), (t, r)) in got.iter().zip(&evs) {
            prop_assert_eq!(gt, t);
            let padded = r.len().max(1).div_ceil(4) * 4;
            prop_assert_eq!(gp.len(), padded);
            prop_assert_eq!(&gp[..r.len()], r.as_slice());
            prop_assert!(gp[r.len()..].iter().all(|&b| b == 0));
        }
    }
}
