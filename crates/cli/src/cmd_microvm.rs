//! `tscmerge microvm -o DIR`: run real-mode KVM micro-VMs whose guest TSC
//! reads are ground truth, one VMM process per VM as QEMU runs them, and
//! write each guest's trace. Record the host meanwhile (`tscmerge record
//! --host -- tscmerge microvm -o DIR`), then merge and check.
//!
//! Each guest trace is written by the micro-VM monitor, not by a guest
//! kernel: tracefs text whose CPU column is the vCPU and whose timestamps are
//! the TSC values the guest read (crates/microvm/src/guest_trace.rs).
//!
//! `--read rdmsr` (the default) reads with `rdmsr IA32_TSC`: KVM's emulator
//! fires `kvm_msr` right after the read, which closes the read's truth
//! window ~200 cycles later; `rdtsc`'s window runs to the next instruction
//! (~1,300 cycles or more), too loose to catch a −1,000-cycle offset error.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// The guest instruction that reads the TSC.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Rdtsc,
    Rdmsr,
}

impl Read {
    fn insn(self) -> microvm::ReadInsn {
        match self {
            Read::Rdtsc => microvm::ReadInsn::Rdtsc,
            Read::Rdmsr => microvm::ReadInsn::Rdmsr,
        }
    }
    fn name(self) -> &'static str {
        self.insn().mnemonic()
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Directory for guest-vmN.txt and vms.txt.
    #[arg(short = 'o', long = "output")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub vms: usize,
    #[arg(long, default_value_t = 2)]
    pub vcpus: usize,
    /// TSC reads per vCPU.
    #[arg(long, default_value_t = 24)]
    pub reads: usize,
    /// How the guest reads the TSC: `rdmsr` of IA32_TSC (tightest truth
    /// window: it ends at the host's kvm_msr) or `rdtsc`.
    #[arg(long, value_enum, default_value = "rdmsr")]
    pub read: Read,
    /// After this many reads each vCPU writes IA32_TSC (--msr 0x10) or IA32_TSC_ADJUST (0x3b).
    #[arg(long)]
    pub wrmsr_after: Option<usize>,
    #[arg(long, default_value = "0x10")]
    pub msr: String,
    /// Value written by the wrmsr.
    #[arg(long, default_value = "0x10000000000")]
    pub value: String,
    /// Keep each VM this long before its vCPUs run and after they halt, so that a
    /// recorder's KVM debugfs sampler (tscmerge record samples every 50 ms) sees it.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// Internal: run VM number N in this process.
    #[arg(long, hide = true)]
    pub child: Option<usize>,
}

/// A decimal or 0x-hex number given to `option`.
fn num(option: &str, s: &str) -> anyhow::Result<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .with_context(|| format!("{option} {s:?}: expected a number from 0 to {} (decimal or 0x-hex)", u64::MAX))
}

fn run_one(a: &Args, index: usize) -> anyhow::Result<()> {
    let wrmsr = match a.wrmsr_after {
        Some(after) => Some(microvm::WrmsrPlan { after_read: after, msr: u32::try_from(num("--msr", &a.msr)?).map_err(|_| anyhow::anyhow!("--msr {:?}: MSR numbers are 32 bits", a.msr))?, value: num("--value", &a.value)? }),
        None => None,
    };
    let cfg = microvm::Config {
        vms: 1,
        vcpus: a.vcpus,
        reads: a.reads,
        read: a.read.insn(),
        wrmsr,
        hold: std::time::Duration::from_millis(a.hold_ms),
        ..Default::default()
    };
    let mut report = microvm::run(&cfg).context("running the micro-VM")?;
    let Some(vm) = report.vms.first_mut() else { bail!("the micro-VM run reported no VM") };
    vm.index = index;
    let path = a.dir.join(format!("guest-vm{index}.txt"));
    let mut f = std::io::BufWriter::new(safefs::AtomicFile::create(&path)?);
    microvm::write_guest_trace(vm, &mut f)?;
    f.into_inner().map_err(|e| anyhow::Error::new(e.into_error()).context(format!("writing {}", path.display())))?.commit()?;
    // KVM debugfs as the VMM read it, in tscmerge's kvm_debugfs.txt lines
    // (crates/record/src/kvm.rs): at vCPU creation and after the halt.
    let mut snaps = String::new();
    for v in &vm.vcpus {
        let d = &v.debugfs;
        let scaling = match (d.scaling_ratio, d.scaling_frac_bits) {
            (Some(r), Some(f)) => format!("{r} {f}"),
            _ => "- -".into(),
        };
        for (at, reason, off) in [(d.create_read_at_tsc, "new", d.offset_at_create), (d.end_read_at_tsc, "end", d.offset_at_end)] {
            if let Some(off) = off {
                snaps.push_str(&format!("{at} {reason} {}-{} {} {} {off} {scaling}\n", vm.creator_tid, vm.vm_fd, vm.creator_tid, v.vcpu));
            }
        }
    }
    let mut f = safefs::AtomicFile::create(&a.dir.join(format!("kvm_debugfs-vm{index}.txt")))?;
    std::io::Write::write_all(&mut f, snaps.as_bytes()).with_context(|| format!("writing {}", f.tmp_path().display()))?;
    f.commit()?;
    let tids: Vec<String> = vm.vcpus.iter().map(|v| v.tid.to_string()).collect();
    let offs: Vec<String> = vm.vcpus.iter().map(|v| format!("{:?}", v.debugfs.offset_at_end)).collect();
    // One line per VM: how to find it on the host (pid = tgid of its threads).
    println!("vm{index} pid={} creator={} vm_fd={} vcpu_tids={} debugfs_offsets={}", vm.pid, vm.creator_tid, vm.vm_fd, tids.join(","), offs.join(","));
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(i) = a.child {
        run_one(&a, i)?;
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..a.vms {
        let mut c = Command::new(&exe);
        c.arg("microvm").arg("-o").arg(&a.dir).args(["--vcpus", &a.vcpus.to_string(), "--reads", &a.reads.to_string(), "--read", a.read.name()]);
        if let Some(w) = a.wrmsr_after {
            c.args(["--wrmsr-after", &w.to_string(), "--msr", &a.msr, "--value", &a.value]);
        }
        c.args(["--hold-ms", &a.hold_ms.to_string(), "--child", &i.to_string()]).stdout(std::process::Stdio::piped());
        children.push(c.spawn().context("starting a micro-VM process")?);
    }
    let mut lines = String::new();
    let mut failed = false;
    for c in children {
        let out = c.wait_with_output()?;
        failed |= !out.status.success();
        lines.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    std::fs::write(a.dir.join("vms.txt"), &lines)?;
    // One kvm_debugfs.txt for all VMs, for --kvm-debugfs.
    let mut snaps = String::from("# tscmerge kvm_debugfs 1: taken_at_tsc reason vm_dir pid vcpu tsc_offset scaling_ratio frac_bits (read by the micro-VM monitor)\n");
    for i in 0..a.vms {
        let p = a.dir.join(format!("kvm_debugfs-vm{i}.txt"));
        if let Ok(t) = std::fs::read_to_string(&p) {
            snaps.push_str(&t);
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::write(a.dir.join("kvm_debugfs.txt"), snaps)?;
    print!("{lines}");
    if failed {
        bail!("a micro-VM process failed (see its message above)");
    }
    Ok(ExitCode::SUCCESS)
}
