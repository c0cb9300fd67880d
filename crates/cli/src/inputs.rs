//! The inputs of a merge, shared by `merge` and `check`: host recordings,
//! guests, offsets and clock options, turned into a [`MergeSpec`].

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tscmerge::clock::{parse_offset, DebugfsSnapshot, Scaling};
use tscmerge::plan::{GuestSpec, MergeSpec, OffsetSource};

#[derive(clap::Args)]
pub struct InputArgs {
    /// Host recordings (trace.dat, text of each tracefs buffer, raw capture directories).
    #[arg(required = true)]
    pub hosts: Vec<PathBuf>,
    /// A guest: [NAME=]FILE[,FILE...][,pid=PID]; pid pins it to the VM of that VMM process or vCPU
    /// thread. A trace-cmd guest (TRACEID) is tied to the host's GUEST option with its trace id and,
    /// without NAME, named after it.
    #[arg(long = "guest", value_name = "[NAME=]FILE,...")]
    pub guests: Vec<String>,
    /// Guest CPU to vCPU map: NAME:GCPU=VCPU[,GCPU=VCPU...].
    #[arg(long = "vcpu-map", value_name = "NAME:CPU=VCPU,...")]
    pub vcpu_maps: Vec<String>,
    /// An offset holding before the first recorded write: [NAME:]VCPU=OFFSET (signed, unsigned or 0x-hex).
    #[arg(long = "tsc-offset", value_name = "[NAME:]VCPU=OFFSET")]
    pub tsc_offsets: Vec<String>,
    /// TSC scaling of the guests: RATIO:FRAC_BITS (debugfs tsc-scaling-ratio and -frac-bits).
    #[arg(long = "tsc-scaling", value_name = "RATIO:FRAC")]
    pub tsc_scaling: Option<String>,
    /// Where offsets come from: tracepoint, debugfs (KVM debugfs snapshots), or auto
    /// (the tracepoint unless debugfs snapshots contradict it).
    #[arg(long, value_enum, default_value_t = Offsets::Auto)]
    pub offsets: Offsets,
    /// KVM debugfs snapshots (`kvm_debugfs.txt` lines as tscmerge record writes them).
    #[arg(long = "kvm-debugfs", value_name = "FILE")]
    pub kvm_debugfs: Vec<PathBuf>,
    /// TSC frequency in kHz: print timestamps as seconds instead of cycles.
    #[arg(long = "tsc-khz", value_parser = clap::value_parser!(u64).range(1..))]
    pub tsc_khz: Option<u64>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Offsets {
    Tracepoint,
    Debugfs,
    Auto,
}

fn parse_vcpu_map(s: &str) -> anyhow::Result<(String, BTreeMap<u32, u32>)> {
    let (name, pairs) = s.split_once(':').with_context(|| format!("--vcpu-map {s:?}: expected NAME:GCPU=VCPU,..."))?;
    let mut map = BTreeMap::new();
    let mut vcpus = BTreeSet::new();
    for p in pairs.split(',') {
        let (a, b) = p.split_once('=').with_context(|| format!("--vcpu-map {s:?}: {p:?} is not GCPU=VCPU"))?;
        let num = |v: &str, what: &str| -> anyhow::Result<u32> {
            v.trim().parse().with_context(|| format!("--vcpu-map {s:?}: {what} {:?} is not a number from 0 to {}", v.trim(), u32::MAX))
        };
        let (gcpu, vcpu) = (num(a, "guest CPU")?, num(b, "vCPU")?);
        // A CPU mapped twice, or two CPUs on one vCPU, would put one guest
        // CPU's events on two timelines or two CPUs' on one: refuse both.
        if let Some(prev) = map.insert(gcpu, vcpu) {
            bail!("--vcpu-map {s:?}: guest CPU {gcpu} is mapped twice (to vCPU {prev} and {vcpu})");
        }
        if !vcpus.insert(vcpu) {
            bail!("--vcpu-map {s:?}: vCPU {vcpu} is given to two guest CPUs");
        }
    }
    Ok((name.to_string(), map))
}

/// Refuses one file given twice (same device and inode, under any name):
/// its events would be merged twice.
fn refuse_same_file_twice(hosts: &[PathBuf], guests: &[GuestSpec]) -> anyhow::Result<()> {
    let mut seen: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let named = hosts
        .iter()
        .map(|p| (p.as_path(), format!("host input {}", p.display())))
        .chain(guests.iter().flat_map(|g| g.files.iter().map(move |p| (p.as_path(), format!("--guest {} file {}", g.name, p.display())))));
    for (path, label) in named {
        // Unreadable inputs are left to the reader, which names them.
        let Ok(m) = std::fs::metadata(path) else { continue };
        if let Some(first) = seen.insert((m.dev(), m.ino()), label.clone()) {
            bail!("{label} is the same file as {first}: give each input once");
        }
    }
    Ok(())
}

/// Reads `kvm_debugfs.txt` files (as `tscmerge record` and `tscmerge microvm` write them).
pub fn load_debugfs(files: &[PathBuf]) -> anyhow::Result<Vec<DebugfsSnapshot>> {
    let mut out = Vec::new();
    for f in files {
        let bytes = safefs::read_capped(f, safefs::SIDE_FILE_CAP, "a --kvm-debugfs file").context("--kvm-debugfs")?;
        let text = String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("--kvm-debugfs {}: not UTF-8 text (byte {})", f.display(), e.utf8_error().valid_up_to()))?;
        out.extend(tscmerge::clock::parse_kvm_debugfs(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
    }
    Ok(out)
}

/// Builds the merge specification from the command line.
pub fn spec(a: &InputArgs) -> anyhow::Result<MergeSpec> {
    let mut guests: Vec<GuestSpec> = a.guests.iter().map(|g| GuestSpec::parse(g)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let mut names = BTreeSet::new();
    // A guest given as a FILE alone has no name yet: it takes its name from
    // the host's GUEST option later (several may), and only given names clash.
    for g in guests.iter().filter(|g| !g.name.is_empty()) {
        if !names.insert(g.name.as_str()) {
            bail!("--guest {}: the name is given twice; each guest needs its own (--guest NAME=FILE,FILE... for several files)", g.name);
        }
    }
    refuse_same_file_twice(&a.hosts, &guests)?;
    let mut mapped = BTreeSet::new();
    for m in &a.vcpu_maps {
        let (name, map) = parse_vcpu_map(m)?;
        let Some(g) = guests.iter_mut().find(|g| g.name == name) else { bail!("--vcpu-map names guest {name:?}, which no --guest defines") };
        if !mapped.insert(name.clone()) {
            bail!("--vcpu-map {m:?}: guest {name} already has a --vcpu-map; give all its CPUs in one");
        }
        g.vcpu_map = map;
    }
    for o in &a.tsc_offsets {
        let (target, rest) = match o.split_once(':') {
            Some((n, r)) if !n.contains('=') => (Some(n), r),
            _ => (None, o.as_str()),
        };
        let (vcpu, off) = rest.split_once('=').with_context(|| format!("--tsc-offset {o:?}: expected [NAME:]VCPU=OFFSET"))?;
        let vcpu: u32 = vcpu.trim().parse().with_context(|| format!("--tsc-offset {o:?}: vCPU {:?} is not a number from 0 to {}", vcpu.trim(), u32::MAX))?;
        let off = parse_offset(off).with_context(|| format!("--tsc-offset {o:?}: bad offset"))?;
        let n = guests.len();
        let g = match target {
            Some(name) => match guests.iter_mut().find(|g| g.name == name) {
                Some(g) => g,
                None => bail!("--tsc-offset names guest {name:?}, which no --guest defines"),
            },
            None if n == 1 => &mut guests[0],
            None => bail!("--tsc-offset {o:?}: with several guests, say which: NAME:VCPU=OFFSET"),
        };
        // One vCPU has one offset before its first write; two would be a typo.
        if let Some((_, prev)) = g.tsc_offsets.iter().find(|(v, _)| *v == vcpu) {
            bail!("--tsc-offset {o:?}: guest {} vCPU {vcpu} already has offset {prev}", g.name);
        }
        g.tsc_offsets.push((vcpu, off));
    }
    let scaling = match &a.tsc_scaling {
        Some(s) => Some(Scaling::parse(s).with_context(|| format!("--tsc-scaling {s:?}: expected RATIO:FRAC_BITS, e.g. 0xc000000000000:48"))?),
        None => None,
    };
    let debugfs = load_debugfs(&a.kvm_debugfs)?;
    let offsets = match a.offsets {
        Offsets::Tracepoint => OffsetSource::Tracepoint,
        Offsets::Debugfs => OffsetSource::Debugfs,
        Offsets::Auto => OffsetSource::Auto,
    };
    Ok(MergeSpec { hosts: a.hosts.clone(), guests, scaling, offsets, debugfs, threads: 1 })
}

/// Threads for the merge: as asked, else 2 when this process may run on
/// two CPUs (`taskset` and cgroup limits count), else 1.
pub fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2))).max(1)
}

/// The merge plan of the inputs, said on stderr as it was made (its notes,
/// which VM each guest is and why); refuses an output that is an input.
pub fn open_plan(a: &InputArgs, threads: usize, output: Option<&std::path::Path>) -> anyhow::Result<tscmerge::plan::Plan> {
    let spec = spec(a)?;
    if let Some(o) = output {
        crate::output::refuse_input_as_output(o, &spec, &a.kvm_debugfs)?;
    }
    let plan = tscmerge::plan::Plan::new(MergeSpec { threads, ..spec })?;
    for n in &plan.notes {
        eprintln!("tscmerge: {n}");
    }
    for g in &plan.guests {
        eprintln!("tscmerge: guest {} is {} ({})", g.spec.name, plan.timeline.vms[g.vm].name(), g.reason);
    }
    Ok(plan)
}
