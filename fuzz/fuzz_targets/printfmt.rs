//! Fuzz target: the `print fmt:` language (`ftrace::printfmt`): compile a
//! format file, render a record in both styles.
//!
//! Input: byte 0 selects endianness (bit 0), long size (bit 1), the system
//! (bits 2-4) and the CPU (bits 5-7); the rest is split at `\n=====\n` into
//! the format file, the record, and optionally kallsyms and printk_formats
//! text.
#![no_main]

use ftrace::format::{EventFormat, Kallsyms, PrintkFormats};
use ftrace::printfmt::{RenderCtx, Style};
use ftrace::Endian;
use libfuzzer_sys::fuzz_target;

const SEP: &[u8] = b"\n=====\n";
const SYSTEMS: [&str; 8] = ["sched", "kvm", "ftrace", "irq", "timer", "workqueue", "kmem", "fuzz"];

fn split<'a>(mut s: &'a [u8], n: usize) -> Vec<&'a [u8]> {
    let mut v = Vec::new();
    while v.len() + 1 < n {
        match s.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                v.push(&s[..i]);
                s = &s[i + SEP.len()..];
            }
            None => break,
        }
    }
    v.push(s);
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let parts = split(rest, 4);
    let fmt = parts[0];
    let rec = parts.get(1).copied().unwrap_or(&[]);
    let ksyms = parts.get(2).map(|k| Kallsyms::parse(k));
    let printk = parts.get(3).map(|p| PrintkFormats::parse(p));
    if let Some(k) = &ksyms {
        let _ = (k.len(), k.is_empty(), k.lookup(0xffffffff81000000), k.lookup_full(u64::MAX), k.addr_of("x"));
    }
    if let Some(p) = &printk {
        let _ = (p.len(), p.is_empty(), p.get(0xffffffff81000000));
    }
    let system = SYSTEMS[(sel as usize >> 2) & 7];
    let Ok(f) = EventFormat::parse(system, fmt) else { return };
    // With trace-cmd's state half the time: plugins then learn comms and
    // keep function stacks, code the fuzzer should reach too.
    let state = ftrace::printfmt::TraceCmdState::default();
    let ctx = RenderCtx {
        endian: if sel & 1 == 0 { Endian::Little } else { Endian::Big },
        long_size: if sel & 2 == 0 { 8 } else { 4 },
        cpu: (sel >> 5) as u32,
        kallsyms: ksyms.as_ref(),
        printk: printk.as_ref(),
        state: (sel & 16 != 0).then_some(&state),
        plugins: sel & 32 == 0,
    };
    let mut out = Vec::new();
    for style in [Style::Kernel, Style::TraceCmd] {
        let _ = f.print_fmt_ok(style);
        out.clear();
        f.render(rec, &ctx, style, &mut out);
        // A render of a record is bounded by the record, not by the format's
        // field widths alone: catch runaway output.
        assert!(out.len() <= 1 << 24, "render produced {} bytes", out.len());
    }
    // What the two-thread merge does for bodies rendered elsewhere: learn
    // the comms without rendering, then render without the state.
    f.learn(rec, &ctx);
    let _ = f.render_reads_state();
    out.clear();
    f.render(rec, &RenderCtx { state: None, ..ctx }, Style::TraceCmd, &mut out);
});
