//! `tscmerge report FILE...`: events in trace-cmd report's line layout.

use std::path::PathBuf;

use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;

use ftrace::tracedat::time::{report_cpus, ReportClock, ReportTimeOpts};
use tscmerge::clock::report::ReportTimeCursor;

use tscmerge::merge;
use tscmerge::sink::{JsonSink, TextSink, TsFormat};
use tscmerge::source::graph::GraphFold;
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
    /// Nanoseconds where seconds print (`trace-cmd report -t`).
    #[arg(short = 't')]
    pub nsecs: bool,
    /// The ring buffer's timestamps as recorded: no TSC2NSEC, TIME_SHIFT,
    /// DATE or OFFSET, printed as numbers (`trace-cmd report --raw-ts`).
    #[arg(long)]
    pub raw_ts: bool,
    /// The trace clock runs at HZ: timestamps become nanoseconds by
    /// 1e9/HZ, instead of by a file's TSC2NSEC (`trace-cmd report
    /// --ts2secs`). Whether they print as seconds still follows the file's
    /// clock, as in trace-cmd.
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u64).range(1..))]
    pub ts2secs: Option<u64>,
    /// Leave out the DATE option's offset (`trace-cmd report --nodate`).
    #[arg(long)]
    pub nodate: bool,
    /// No plugins (`trace-cmd report -N`): every event by its print format,
    /// without libtraceevent's plugins (their handlers and print functions)
    /// or trace-cmd's function and function_graph views.
    #[arg(short = 'N')]
    pub no_plugins: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let threads = crate::inputs::threads(a.threads);
    if let Some(o) = a.output.as_deref() {
        safefs::refuse_input_as_output(o, a.files.iter().map(|p| p.as_path())).context("-o")?;
    }
    let mut inputs = a.files.iter().map(|p| Input::open_unscanned(p, threads)).collect::<Result<Vec<_>, _>>()?;
    for input in &mut inputs {
        input.set_plugins(!a.no_plugins);
        // Text prints marks where trace-cmd does; JSON keeps every loss.
        input.set_kbuffer_marks(!a.json);
    }
    // Every (file, buffer) is a source labelled in a column, as trace-cmd
    // labels instance buffers: `tsc_offset: ...`, the top level blank. With
    // several files, the file name leads the label.
    let mut labels: Vec<String> = Vec::new();
    let mut ts_formats = Vec::new();
    let mut cursors = Vec::new();
    let opts = ReportTimeOpts { raw_ts: a.raw_ts, nsecs: a.nsecs, ts2secs_hz: a.ts2secs, no_date: a.nodate };
    for input in &inputs {
        for (b, desc) in input.buffers().iter().enumerate() {
            // trace.dat times as trace-cmd computes and prints them; other
            // inputs' as they are.
            let clock = input.tracedat().map(|dat| Arc::new(ReportClock::of(dat, opts, !desc.name.is_empty())));
            ts_formats.push(match &clock {
                Some(c) => TsFormat::TraceCmd(c.style),
                None => TsFormat::Cycles,
            });
            let label = match (inputs.len() > 1, desc.name.is_empty()) {
                (false, _) => desc.name.clone(),
                (true, true) => input.name(),
                (true, false) => format!("{}:{}", input.name(), desc.name),
            };
            labels.push(label);
            let mut buffer = Vec::new();
            for (cpu, cursor) in input.cursors(b, false)? {
                let cursor = match (&clock, cpu) {
                    (Some(c), Some(cpu)) if !c.is_identity() => Box::new(ReportTimeCursor::new(cursor, c.clone(), cpu)),
                    _ => cursor,
                };
                buffer.push(cursor);
            }
            let machine = labels.len() - 1;
            match input.meta() {
                // Function graph leaves need the buffer's next record: its
                // CPUs merge first (text only; JSON keeps every record).
                Some(meta) if !a.json && GraphFold::wanted(meta) => {
                    let cursor = Box::new(GraphFold::new(buffer, meta)?);
                    cursors.push(merge::Input { machine, cursor, meta: Some(meta) });
                }
                meta => cursors.extend(buffer.into_iter().map(|cursor| merge::Input { machine, cursor, meta })),
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
        sink.set_machine_ts_formats(ts_formats);
        sink.set_tracecmd_lost(true);
        // trace-cmd report opens with the CPU count of a trace.dat.
        if let [only] = inputs.as_slice() {
            if let Some(dat) = only.tracedat() {
                sink.raw_line(&format!("cpus={}", report_cpus(dat)))?;
            }
        }
        merge::merge_threads(cursors, &mut sink, threads)?;
        sink.into_inner()
    };
    out.finish()?;
    Ok(ExitCode::SUCCESS)
}
