//! Shared by the sink tests (`#[path]`-included): a synthetic host with two
//! SMP guests, planned, and its text merge as the reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tscmerge::merge::merge;
use tscmerge::plan::{GuestSpec, MergeSpec, Plan};
use tscmerge::sink::{TextSink, TsFormat, VcpuThread};
use tscmerge::synth::{write_text, SynthConfig};

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tscmerge-sinktest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn config() -> SynthConfig {
    SynthConfig { vms: vec![2, 1], windows: 40, ..SynthConfig::default() }
}

/// Writes the synthetic recording into `dir` and plans its merge.
pub fn plan(dir: &Path) -> Plan {
    let cfg = config();
    write_text(&cfg, dir).unwrap();
    let guests = GuestSpec::from_synth(&cfg, dir, "txt", true);
    Plan::new(MergeSpec { hosts: vec![dir.join("host.txt"), dir.join("host-tsc_offset.txt")], guests, ..Default::default() }).unwrap()
}

/// The text merge, one line per event, with the guest TSC column.
pub fn text_merge(plan: &Plan) -> Vec<String> {
    let mut sink = TextSink::new(Vec::new(), plan.machines(), TsFormat::Cycles, false, "mem");
    merge(plan.cursors().unwrap(), &mut sink).unwrap();
    String::from_utf8(sink.into_inner()).unwrap().lines().map(str::to_string).collect()
}

/// One line of text-merge or trace-cmd-report output, split.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub ts: u64,
    pub machine: String,
    pub cpu: u32,
    pub name: String,
    pub body: String,
}

/// Parses `[machine: ]comm-pid [CPU] TS: name: body`. The text merge
/// always has the machine column (right-aligned); trace-cmd prints an
/// instance's name at column 0 and nothing for the top-level buffer.
pub fn parse_line(l: &str) -> Option<Line> {
    let first = l.trim_start().split(' ').next()?;
    let merged = l.trim_start().starts_with("host:");
    let machine = if first.ends_with(':') && (merged || !l.starts_with(' ') || l.starts_with(&format!(" {first}"))) {
        first.trim_end_matches(':').to_string()
    } else {
        "host".to_string()
    };
    let open = l.find(" [").or_else(|| l.find('['))?;
    let rest = &l[open..];
    let lb = rest.find('[')?;
    let rb = rest.find(']')?;
    let cpu = rest[lb + 1..rb].parse().ok()?;
    let rest = rest[rb + 1..].trim_start();
    let colon = rest.find(':')?;
    let ts = rest[..colon].trim().parse().ok()?;
    let rest = &rest[colon + 1..];
    let colon = rest.find(':')?;
    let name = rest[..colon].trim().to_string();
    let body = rest[colon + 1..].trim().to_string();
    Some(Line { ts, machine, cpu, name, body })
}

/// vCPU threads as `cmd_merge` names them.
pub fn vcpu_threads(plan: &Plan) -> Vec<VcpuThread> {
    let mut out = Vec::new();
    for g in &plan.guests {
        for (vcpu, tl) in &plan.timeline.vms[g.vm].vcpus {
            if let Some(pid) = tl.pid {
                out.push(VcpuThread { pid, guest: g.spec.name.clone(), vcpu: vcpu.0 });
            }
        }
    }
    out
}

pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().map(|o| o.status.success()).unwrap_or(false)
}
