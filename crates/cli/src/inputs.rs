//! The inputs of a merge, shared by `merge` and `check`: host recordings,
//! guests, offsets and clock options, turned into a [`MergeSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tscmerge::clock::{parse_offset, DebugfsSnapshot, Scaling};
use tscmerge::plan::{GuestSpec, MergeSpec, OffsetSource};

#[derive(clap::Args)]
pub struct InputArgs {
    /// Host recordings (trace.dat, text of each tracefs buffer, raw capture directories).
    #[arg(required = true)]
    pub hosts: Vec<PathBuf>,
    /// A guest: NAME=FILE[,FILE...][,pid=PID]; pid pins it to the VM of that VMM process or vCPU thread.
    #[arg(long = "guest", value_name = "NAME=FILE,...")]
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
    #[arg(long = "tsc-khz")]
    pub tsc_khz: Option<u64>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Offsets {
    Tracepoint,
    Debugfs,
    Auto,
}

fn parse_vcpu_map(s: &str) -> anyhow::Result<(String, BTreeMap<u32, u32>)> {
    let (name, pairs) = s.split_once(':').context("--vcpu-map: expected NAME:GCPU=VCPU,...")?;
    let mut map = BTreeMap::new();
    for p in pairs.split(',') {
        let (a, b) = p.split_once('=').with_context(|| format!("--vcpu-map {s:?}: {p:?} is not GCPU=VCPU"))?;
        map.insert(a.trim().parse()?, b.trim().parse()?);
    }
    Ok((name.to_string(), map))
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
    for m in &a.vcpu_maps {
        let (name, map) = parse_vcpu_map(m)?;
        let Some(g) = guests.iter_mut().find(|g| g.name == name) else { bail!("--vcpu-map names guest {name:?}, which no --guest defines") };
        g.vcpu_map = map;
    }
    for o in &a.tsc_offsets {
        let (target, rest) = match o.split_once(':') {
            Some((n, r)) if !n.contains('=') => (Some(n), r),
            _ => (None, o.as_str()),
        };
        let (vcpu, off) = rest.split_once('=').with_context(|| format!("--tsc-offset {o:?}: expected [NAME:]VCPU=OFFSET"))?;
        let vcpu: u32 = vcpu.trim().parse().with_context(|| format!("--tsc-offset {o:?}: bad vCPU"))?;
        let off = parse_offset(off).with_context(|| format!("--tsc-offset {o:?}: bad offset"))?;
        let n = guests.len();
        match target {
            Some(name) => match guests.iter_mut().find(|g| g.name == name) {
                Some(g) => g.tsc_offsets.push((vcpu, off)),
                None => bail!("--tsc-offset names guest {name:?}, which no --guest defines"),
            },
            None if n == 1 => guests[0].tsc_offsets.push((vcpu, off)),
            None => bail!("--tsc-offset {o:?}: with several guests, say which: NAME:VCPU=OFFSET"),
        }
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
