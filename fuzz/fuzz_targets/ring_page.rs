//! Fuzz target: one ring-buffer page (`ftrace::ring`).
//!
//! Input: byte 0 selects the layout (bit 0: big-endian, bit 1: 32-bit long,
//! bits 2-3: page size = the rest of the input / 4096 / 64 / 1 MiB), the rest
//! is the page. Every record is walked twice: through the runtime-endian
//! `Page::events` and the monomorphised `events_as`, which must agree.
#![no_main]

use ftrace::ring::{Be, ByteOrder, Le, Page, PageLayout, RawEvents, RingEvent};
use ftrace::Endian;
use libfuzzer_sys::fuzz_target;

fn walk<O: ByteOrder>(page: &Page<'_>) -> Vec<Result<(u64, usize), ()>> {
    let w: RawEvents<'_, O> = page.events_as::<O>();
    let _ = w.timestamp();
    w.map(|r| match r {
        Ok(RingEvent::Event { ts, data }) => Ok((ts, data.len())),
        Ok(RingEvent::Lost { count }) => Ok((count.unwrap_or(u64::MAX), usize::MAX)),
        Err(_) => Err(()),
    })
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, page)) = data.split_first() else { return };
    let endian = if sel & 1 == 0 { Endian::Little } else { Endian::Big };
    let long = if sel & 2 == 0 { 8 } else { 4 };
    let page_size = match (sel >> 2) & 3 {
        0 => page.len() as u32,
        1 => 4096,
        2 => 64,
        _ => 1 << 20,
    };
    let layout = PageLayout::new(endian, long, page_size);
    let Ok(p) = Page::parse(&layout, page, 0x1000) else { return };
    let _ = (p.timestamp(), p.lost(), p.data().len(), p.data_file_offset());
    let dynamic: Vec<_> = p
        .events()
        .map(|r| match r {
            Ok(RingEvent::Event { ts, data }) => Ok((ts, data.len())),
            Ok(RingEvent::Lost { count }) => Ok((count.unwrap_or(u64::MAX), usize::MAX)),
            Err(_) => Err(()),
        })
        .collect();
    let typed = match endian {
        Endian::Little => walk::<Le>(&p),
        Endian::Big => walk::<Be>(&p),
    };
    assert_eq!(dynamic, typed, "runtime- and compile-time-endian walks differ");
    // Every record is at least one 4-byte header: the walk is bounded.
    assert!(dynamic.len() <= p.data().len() / 4 + 2);
});
