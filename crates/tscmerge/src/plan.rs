//! A merge, planned: the inputs opened, the offset timeline built from every
//! host buffer, each guest tied to a VM, every clock checked. The plan then
//! hands out the cursors the merge runs over.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::clock::{GuestCursor, OffsetTimeline, Scaling, VcpuClock, VcpuTimeline};
use crate::merge;
use crate::source::Input;
use crate::time::VcpuId;
use crate::{Error, Result};

/// One guest as the user named it (`--guest NAME=FILE[,FILE...][,pid=PID]`).
#[derive(Clone, Debug, Default)]
pub struct GuestSpec {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// The VMM process (or one of its vCPU threads) this guest ran in.
    pub pid: Option<i32>,
    /// Guest CPU → vCPU, where not the identity.
    pub vcpu_map: BTreeMap<u32, u32>,
    /// Offsets assumed from the beginning of time, per vCPU.
    pub tsc_offsets: Vec<(u32, u64)>,
    pub scaling: Option<Scaling>,
}

impl GuestSpec {
    /// Parses `NAME=FILE[,FILE...][,pid=PID]`.
    pub fn parse(s: &str) -> std::result::Result<GuestSpec, String> {
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("--guest {s:?}: expected NAME=FILE[,FILE...][,pid=PID]"))?;
        if name.is_empty() || name == "host" {
            return Err(format!("--guest {s:?}: the guest needs a name other than 'host'"));
        }
        let mut g = GuestSpec { name: name.to_string(), ..Default::default() };
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            match part.strip_prefix("pid=") {
                Some(pid) => g.pid = Some(pid.parse().map_err(|_| format!("--guest {s:?}: pid {pid:?} is not a number"))?),
                None => g.files.push(PathBuf::from(part)),
            }
        }
        if g.files.is_empty() {
            return Err(format!("--guest {s:?}: no file given"));
        }
        Ok(g)
    }
}

#[derive(Clone, Debug, Default)]
pub struct MergeSpec {
    pub hosts: Vec<PathBuf>,
    pub guests: Vec<GuestSpec>,
    /// TSC scaling for every guest that has none of its own.
    pub scaling: Option<Scaling>,
}

pub struct PlannedGuest {
    pub spec: GuestSpec,
    pub inputs: Vec<Input>,
    pub vm: usize,
    /// Why this VM (pinned, the only one, ...), for the user.
    pub reason: String,
}

pub struct Plan {
    pub hosts: Vec<Input>,
    pub guests: Vec<PlannedGuest>,
    pub timeline: OffsetTimeline,
}

static NO_TIMELINE: VcpuTimeline = VcpuTimeline { pid: None, periods: Vec::new(), scaling: None };

fn require_tsc(input: &Input) -> Result<()> {
    for b in input.buffers() {
        if !b.is_tsc() {
            return Err(Error::WrongClock { input: input.name(), buffer: b.display_name().to_string(), clock: b.clock.clone() });
        }
    }
    Ok(())
}

impl Plan {
    pub fn new(spec: MergeSpec) -> Result<Plan> {
        if spec.hosts.is_empty() {
            return Err(Error::Usage("no host input given".into()));
        }
        let hosts = spec.hosts.iter().map(|p| Input::open(p)).collect::<Result<Vec<_>>>()?;
        let writes = hosts.iter().flat_map(|i| i.offset_writes().iter().cloned()).collect();
        let mut timeline = OffsetTimeline::build(writes);
        if !spec.guests.is_empty() {
            for h in &hosts {
                require_tsc(h)?;
            }
        }
        let mut guests = Vec::new();
        for g in spec.guests {
            let inputs = g.files.iter().map(|p| Input::open(p)).collect::<Result<Vec<_>>>()?;
            for i in &inputs {
                require_tsc(i)?;
            }
            let (vm, reason) = choose_vm(&mut timeline, &g, guests.len())?;
            let scaling = g.scaling.or(spec.scaling);
            for &(vcpu, off) in &g.tsc_offsets {
                timeline.assume_initial_offset(vm, VcpuId(vcpu), off);
            }
            if let Some(s) = scaling {
                timeline.set_scaling(vm, None, s);
            }
            guests.push(PlannedGuest { spec: g, inputs, vm, reason });
        }
        Ok(Plan { hosts, guests, timeline })
    }

    /// `host`, then each guest's name: the machine column.
    pub fn machines(&self) -> Vec<String> {
        std::iter::once("host".to_string()).chain(self.guests.iter().map(|g| g.spec.name.clone())).collect()
    }

    /// Cursors for the merge: host first, then guests in the order given,
    /// each guest CPU converted with its vCPU's offsets.
    pub fn cursors(&self) -> Result<Vec<merge::Input<'_>>> {
        let mut out = Vec::new();
        for h in &self.hosts {
            for b in 0..h.buffers().len() {
                for (_, cursor) in h.cursors(b, false)? {
                    out.push(merge::Input { machine: 0, cursor });
                }
            }
        }
        for (gi, g) in self.guests.iter().enumerate() {
            let vm = &self.timeline.vms[g.vm];
            for input in &g.inputs {
                for b in 0..input.buffers().len() {
                    for (cpu, cursor) in input.cursors(b, true)? {
                        let cpu = cpu.unwrap_or(0);
                        let vcpu = g.spec.vcpu_map.get(&cpu).copied().unwrap_or(cpu);
                        let tl = vm.vcpus.get(&VcpuId(vcpu)).unwrap_or(&NO_TIMELINE);
                        let cursor = GuestCursor::new(cursor, VcpuClock::new(tl), &g.spec.name, vcpu)?;
                        out.push(merge::Input { machine: gi + 1, cursor: Box::new(cursor) });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Ties a guest to a VM of the timeline.
fn choose_vm(tl: &mut OffsetTimeline, g: &GuestSpec, already: usize) -> Result<(usize, String)> {
    if let Some(pid) = g.pid {
        return match tl.vm_of_pid(pid) {
            Some(vm) => Ok((vm, format!("pinned by pid={pid}"))),
            None => Err(Error::Usage(format!(
                "guest {}: no VM has pid {pid}: {}",
                g.name,
                describe_vms(tl)
            ))),
        };
    }
    if tl.vms.is_empty() && !g.tsc_offsets.is_empty() {
        let vm = tl.vms.len();
        tl.vms.push(crate::clock::Vm { index: vm, tgid: None, vcpus: BTreeMap::new(), first_write: crate::HostTsc(0) });
        return Ok((vm, "offsets given with --tsc-offset".into()));
    }
    match tl.vms.len() {
        0 => Err(Error::Usage(format!(
            "guest {}: the host inputs hold no kvm_write_tsc_offset event: record kvm:kvm_write_tsc_offset in its own tracefs instance (x86-tsc) before the guest boots, or pass --tsc-offset VCPU=OFFSET",
            g.name
        ))),
        1 => Ok((0, "the only VM in the host recording".into())),
        _ if already < tl.vms.len() && g.tsc_offsets.is_empty() => Err(Error::Usage(format!(
            "guest {}: the host ran {} VMs; say which one with --guest {}=FILE,pid=PID ({})",
            g.name,
            tl.vms.len(),
            g.name,
            describe_vms(tl)
        ))),
        _ => Err(Error::Usage(format!("guest {}: more guests than VMs in the host recording ({})", g.name, describe_vms(tl)))),
    }
}

pub fn describe_vms(tl: &OffsetTimeline) -> String {
    tl.vms
        .iter()
        .map(|vm| {
            let pids: Vec<String> = vm.pids().map(|p| p.to_string()).collect();
            match vm.tgid {
                Some(t) => format!("{}: pid {t}, {} vCPUs (threads {})", vm.name(), vm.vcpus.len(), pids.join(" ")),
                None => format!("{}: {} vCPUs (threads {})", vm.name(), vm.vcpus.len(), pids.join(" ")),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
