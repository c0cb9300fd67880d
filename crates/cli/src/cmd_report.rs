//! `tscmerge report FILE...`: events in trace-cmd report's line layout.

use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::merge::{self, merge};
use tscmerge::sink::{JsonSink, TextSink, TsFormat};
use tscmerge::source::Input;

use crate::output::Output;

#[derive(clap::Args)]
pub struct Args {
    /// Recordings: trace.dat, tracefs text, raw capture directories.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per event.
    #[arg(long)]
    pub json: bool,
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let inputs = a.files.iter().map(|p| Input::open(p)).collect::<Result<Vec<_>, _>>()?;
    // Several files merge by timestamp, each named in a column, as
    // `trace-cmd report -i a -i b` does.
    let machines: Vec<String> = if inputs.len() > 1 { inputs.iter().map(Input::name).collect() } else { Vec::new() };
    let mut cursors = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        for b in 0..input.buffers().len() {
            for (_, cursor) in input.cursors(b, false)? {
                cursors.push(merge::Input { machine: i, cursor });
            }
        }
    }
    let out = Output::open(a.output.as_deref())?;
    let name = out.name();
    let out = if a.json {
        let names = if machines.is_empty() { vec![inputs[0].name()] } else { machines };
        let mut sink = JsonSink::new(out, names, &name);
        merge(cursors, &mut sink)?;
        sink.into_inner()
    } else {
        let mut sink = TextSink::new(out, machines, TsFormat::Cycles, false, &name);
        merge(cursors, &mut sink)?;
        sink.into_inner()
    };
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}
