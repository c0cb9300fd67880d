//! Fuzz target: tracefs `format`, `header_page` and `header_event` files
//! (`ftrace::format`, and `PageLayout::from_header_page`).
//!
//! Byte 0 picks the event system (plugins key on it), the rest is the file.
//! Every field is then read out of the file's own bytes taken as a record.
#![no_main]

use ftrace::format::{EventFormat, Events, HeaderEvent, HeaderPage};
use ftrace::ring::PageLayout;
use ftrace::Endian;
use libfuzzer_sys::fuzz_target;

const SYSTEMS: [&str; 8] = ["sched", "kvm", "ftrace", "irq", "timer", "workqueue", "kmem", "fuzz"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else { return };
    let system = SYSTEMS[sel as usize % SYSTEMS.len()];
    let endian = if sel & 0x80 == 0 { Endian::Little } else { Endian::Big };
    let _ = HeaderPage::parse(text);
    let _ = HeaderEvent::parse(text);
    if let Ok(l) = PageLayout::from_header_page(text, endian) {
        assert!(l.data_offset as u32 <= l.page_size);
    }
    let Ok(f) = EventFormat::parse(system, text) else { return };
    let _ = (f.print_fmt_string().len(), f.print_fmt.len(), &f.name, f.id);
    for fl in &f.fields {
        let _ = (fl.is_common(), fl.is_array(), f.field(&fl.name).is_some());
        let _ = fl.raw(text);
        let _ = fl.dyn_range(text, endian);
        let _ = format!("{:?}", fl.value(text, endian));
    }
    let mut ev = Events::new();
    ev.add(f);
    let _ = ev.of_record(text, endian).map(|f| f.id);
});
