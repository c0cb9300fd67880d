//! `tscmerge report FILE...`: events in trace-cmd report's line layout.

use std::path::PathBuf;
use std::process::ExitCode;

use tscmerge::merge;
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
    /// Threads: 1 runs everything on one; 2 renders and writes on a second
    /// thread. Default: 2 when this process may use two CPUs, else 1.
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let threads = crate::inputs::threads(a.threads);
    let inputs = a.files.iter().map(|p| Input::open(p)).collect::<Result<Vec<_>, _>>()?;
    // Every (file, buffer) is a source labelled in a column, as trace-cmd
    // labels instance buffers: `tsc_offset: ...`, the top level blank. With
    // several files, the file name leads the label.
    let mut labels: Vec<String> = Vec::new();
    let mut cursors = Vec::new();
    for input in &inputs {
        for (b, desc) in input.buffers().iter().enumerate() {
            let label = match (inputs.len() > 1, desc.name.is_empty()) {
                (false, _) => desc.name.clone(),
                (true, true) => input.name(),
                (true, false) => format!("{}:{}", input.name(), desc.name),
            };
            labels.push(label);
            for (_, cursor) in input.cursors(b, false)? {
                cursors.push(merge::Input { machine: labels.len() - 1, cursor, meta: input.meta() });
            }
        }
    }
    let out = Output::open(a.output.as_deref())?;
    let name = out.name();
    let out = if a.json {
        let names = labels.iter().map(|l| if l.is_empty() { "top".to_string() } else { l.clone() }).collect();
        let mut sink = JsonSink::new(out, names, &name);
        merge::merge_threads(cursors, &mut sink, threads)?;
        sink.into_inner()
    } else {
        let mut sink = TextSink::new(out, labels, TsFormat::Cycles, false, &name);
        // trace-cmd report opens with the CPU count of a trace.dat.
        if let [only] = inputs.as_slice() {
            if let Some(dat) = only.tracedat() {
                let cpus = dat.buffers().iter().map(|b| b.cpus.len()).max().unwrap_or(0);
                sink.raw_line(&format!("cpus={cpus}"))?;
            }
        }
        merge::merge_threads(cursors, &mut sink, threads)?;
        sink.into_inner()
    };
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}
