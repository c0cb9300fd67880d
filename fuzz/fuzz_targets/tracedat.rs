//! Fuzz target: a whole trace.dat (`ftrace::tracedat`).
//!
//! Parses, touches every metadata accessor and option, walks every CPU of
//! every buffer to its end with `cpu_events` (and `pages`), reads latency
//! text, and renders the first events of each CPU with the file's own
//! formats, kallsyms and printk, as `tscmerge report` does.
#![no_main]

use ftrace::format::{EventFormat, Events, HeaderEvent, HeaderPage, Kallsyms, PrintkFormats};
use ftrace::printfmt::{RenderCtx, Style};
use ftrace::ring::RingEvent;
use ftrace::tracedat::{BufferKind, TraceDat};
use libfuzzer_sys::fuzz_target;

/// Events rendered per CPU: rendering is the costly part, and the walk
/// itself continues to the end regardless.
const RENDER_PER_CPU: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Ok(dat) = TraceDat::parse(data) else { return };
    let _ = format!("{dat:?}");
    let _ = (dat.version(), dat.endian(), dat.long_size(), dat.page_size(), dat.compression(), dat.codec());
    let _ = (HeaderPage::parse(dat.header_page()), HeaderEvent::parse(dat.header_event()));
    let layout = dat.page_layout();
    let _ = layout;
    let mut events = Events::new();
    for (sys, text) in dat.ftrace_formats().chain(dat.event_formats()) {
        if let Ok(f) = EventFormat::parse(sys, text) {
            events.add(f);
        }
    }
    let _ = (events.len(), events.is_empty(), events.iter().count());
    let ksyms = dat.kallsyms().map(Kallsyms::parse);
    let printk = dat.printk().map(PrintkFormats::parse);
    let _ = dat.cmdlines().len();
    for o in dat.options() {
        let _ = format!("{o:?}");
    }
    for s in dat.sections() {
        let _ = format!("{s:?}");
    }
    let _ = dat.file().len();

    let mut out = Vec::new();
    for (bi, b) in dat.buffers().iter().enumerate() {
        let _ = format!("{b:?}");
        if b.kind == BufferKind::Latency {
            let _ = dat.latency_text(bi);
            continue;
        }
        for ci in 0..b.cpus.len() {
            if let Ok(mut ps) = dat.pages(bi, ci) {
                let _ = ps.cpu();
                while let Ok(Some((_off, page))) = ps.next_page() {
                    let _ = page.len();
                    let _ = (ps.current().len(), ps.current_offset());
                }
            }
            let Ok(mut ev) = dat.cpu_events(bi, ci) else { continue };
            let state = ftrace::printfmt::TraceCmdState::default();
            let cpu = ev.cpu();
            let ctx = RenderCtx {
                endian: dat.endian(),
                long_size: dat.long_size(),
                cpu,
                kallsyms: ksyms.as_ref(),
                printk: printk.as_ref(),
                state: Some(&state),
                plugins: true,
            };
            let mut n = 0usize;
            loop {
                match ev.next_event() {
                    Ok(Some(RingEvent::Event { ts, data: rec })) => {
                        let _ = ts;
                        if n < RENDER_PER_CPU {
                            if let Some(f) = events.of_record(rec, dat.endian()) {
                                out.clear();
                                f.render(rec, &ctx, Style::TraceCmd, &mut out);
                                out.clear();
                                f.render(rec, &ctx, Style::Kernel, &mut out);
                            }
                        }
                        n += 1;
                    }
                    Ok(Some(RingEvent::Lost { .. })) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = ev.page_offset();
        }
    }
});
