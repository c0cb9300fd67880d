//! Fuzz target: `merge --format dat`'s page writer over an untrusted
//! trace.dat (`tscmerge::source::pages`, `tscmerge::sink::dat::write_pages`).
//!
//! The bytes are written to a scratch file and opened as the host and as a
//! guest (given an offset, so that guest pages are shifted); whatever the
//! plan accepts is written out as a trace.dat. Errors are fine, panics not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("tscmerge-fuzz-datpages-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let input = dir.join("in.dat");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let out = dir.join("out.dat");
    for guests in [Vec::new(), vec![GuestSpec { name: "g".into(), files: vec![input.clone()], tsc_offsets: vec![(0, 1000), (1, 1 << 40)], ..Default::default() }]] {
        let spec = MergeSpec { hosts: vec![input.clone()], guests, ..Default::default() };
        let Ok(plan) = Plan::new(spec) else { continue };
        let Ok((groups, cursors)) = plan.page_groups() else { continue };
        let _ = tscmerge::sink::dat::write_pages(&out, plan.machines(), Vec::new(), groups, cursors.len(), 1, ftrace::write::Compression::Zstd);
    }
});
