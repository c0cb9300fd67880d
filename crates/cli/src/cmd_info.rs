//! `tscmerge info FILE`: what a recording holds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::source::Input;
use tscmerge::Payload;

#[derive(clap::Args)]
pub struct Args {
    /// A recording: trace.dat, tracefs text or a raw capture directory.
    pub file: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let input = Input::open(&a.file)?;
    println!("file: {}", input.name());
    println!("format: {:?}", input.kind);
    for (b, desc) in input.buffers().iter().enumerate() {
        println!("buffer {:?}: clock {}, cpus {:?}", desc.display_name(), desc.clock, desc.cpus);
        let mut by_event: BTreeMap<String, u64> = BTreeMap::new();
        let mut lost: BTreeMap<u32, u64> = BTreeMap::new();
        for (_, mut c) in input.cursors(b, false)? {
            while let Some(ev) = c.current() {
                match ev.payload {
                    Payload::Event(r) => *by_event.entry(r.name.to_string()).or_default() += 1,
                    Payload::Lost { count } => *lost.entry(ev.cpu).or_default() += count.unwrap_or(0),
                }
                c.advance()?;
            }
        }
        let total: u64 = by_event.values().sum();
        println!("  events: {total}");
        for (name, n) in &by_event {
            println!("    {n:>10}  {name}");
        }
        for (cpu, n) in &lost {
            println!("  CPU {cpu}: {n} events lost");
        }
    }
    let writes = input.offset_writes();
    if !writes.is_empty() {
        println!("kvm_write_tsc_offset events: {}", writes.len());
    }
    Ok(ExitCode::SUCCESS)
}
