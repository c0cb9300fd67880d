//! The monitor: N VMs × M vCPUs, one host thread per vCPU, each running the program of
//! [`crate::program`] and recording every guest TSC read.
//!
//! Where each value comes from: the instruction after every read (`rdtsc`, or `rdmsr` of
//! IA32_TSC with [`ReadInsn::Rdmsr`]) exits to us (`out` or
//! `hlt`), and `out`/`hlt` leave eax and edx alone, so `KVM_GET_REGS` at that exit gives the
//! exact edx:eax the read returned. That is the reported value. It is cross-checked against
//! the `out` data (low 32 bits), the guest's own store in its memory (all reads but the last),
//! and SI (the read index).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::error::{kvm, Error, Result};
use crate::program::{self, Program, ReadInsn};

/// Default marker leaf: "MVM1", outside every leaf range CPUs define.
pub const DEFAULT_MARKER_LEAF: u32 = 0x4d56_4d31;
/// IA32_TSC.
pub const MSR_IA32_TSC: u32 = 0x10;
/// IA32_TSC_ADJUST.
pub const MSR_IA32_TSC_ADJUST: u32 = 0x3b;
/// Where KVM publishes per-VM state (`kvm/<pid>-<vm fd>/vcpuN/`).
pub const DEBUGFS_KVM: &str = "/sys/kernel/debug/kvm";

/// A single MSR write the guest performs once, right after storing read `after_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrmsrPlan {
    /// Index of the read after which the write happens (must be < reads-1, so that a read follows).
    pub after_read: usize,
    /// [`MSR_IA32_TSC`] or [`MSR_IA32_TSC_ADJUST`] (any MSR is passed through as given).
    pub msr: u32,
    /// edx:eax of the write.
    pub value: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of VMs, each its own `VmFd` and memory (1 ..= 16).
    pub vms: usize,
    /// vCPUs per VM (1 ..= [`program::MAX_VCPUS`]).
    pub vcpus: usize,
    /// TSC reads per vCPU (1 ..= [`program::MAX_READS`]).
    pub reads: usize,
    /// The instruction that reads the TSC.
    pub read: ReadInsn,
    /// Optional MSR write midway.
    pub wrmsr: Option<WrmsrPlan>,
    /// Leaf of the `cpuid` executed before every read (seen by the host as `kvm_cpuid`).
    pub cpuid_marker_leaf: u32,
    /// How long the VMs exist before their vCPUs run and again after they
    /// halt, so that an outside debugfs sampler sees them.
    pub hold: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vms: 1,
            vcpus: 1,
            reads: 16,
            read: ReadInsn::Rdtsc,
            wrmsr: None,
            cpuid_marker_leaf: DEFAULT_MARKER_LEAF,
            hold: std::time::Duration::ZERO,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(1..=16).contains(&self.vms) {
            return bad(format!("vms {} not in 1..=16", self.vms));
        }
        if !(1..=program::MAX_VCPUS).contains(&self.vcpus) {
            return bad(format!(
                "vcpus {} not in 1..={}",
                self.vcpus,
                program::MAX_VCPUS
            ));
        }
        if !(1..=program::MAX_READS).contains(&self.reads) {
            return bad(format!(
                "reads {} not in 1..={}",
                self.reads,
                program::MAX_READS
            ));
        }
        if let Some(w) = self.wrmsr {
            if w.after_read + 1 >= self.reads {
                return bad(format!(
                    "wrmsr after_read {} must leave a read after it (reads {})",
                    w.after_read, self.reads
                ));
            }
        }
        Ok(())
    }
}

/// The instruction that directly follows a read in the guest program.
///
/// The program only produces `Out` and `Hlt`; `Cpuid` and `Wrmsr` consume eax/edx, which
/// `rdtsc` has just overwritten, so they never directly follow a read (see [`crate::program`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    Out,
    Cpuid,
    Wrmsr,
    Hlt,
}

impl Insn {
    /// Lower-case mnemonic, as used in the guest trace (`next=out`).
    pub fn mnemonic(self) -> &'static str {
        match self {
            Insn::Out => "out",
            Insn::Cpuid => "cpuid",
            Insn::Wrmsr => "wrmsr",
            Insn::Hlt => "hlt",
        }
    }
}

/// One guest TSC read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRead {
    /// Read index on this vCPU, from 0.
    pub seq: u32,
    /// The reading instruction.
    pub insn: ReadInsn,
    /// edx:eax returned by the read.
    pub guest_tsc: u64,
    /// The instruction right after the read.
    pub before: Insn,
}

/// debugfs `kvm/<pid>-<fd>/vcpuN/` TSC files, each `None` when absent or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugfsTsc {
    /// `tsc-offset` (signed) read right after the vCPU was created.
    pub offset_at_create: Option<i64>,
    /// `tsc-offset` read after the vCPU halted (after any guest wrmsr).
    pub offset_at_end: Option<i64>,
    /// `tsc-scaling-ratio`.
    pub scaling_ratio: Option<u64>,
    /// `tsc-scaling-ratio-frac-bits`.
    pub scaling_frac_bits: Option<u32>,
    /// Host TSC just before `offset_at_create` was read.
    pub create_read_at_tsc: u64,
    /// Host TSC just before `offset_at_end` was read.
    pub end_read_at_tsc: u64,
}

/// The host TSC, to stamp debugfs reads on the traces' `x86-tsc` timeline.
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One vCPU's run.
#[derive(Debug, Clone)]
pub struct VcpuReport {
    /// vCPU id (KVM_CREATE_VCPU argument).
    pub vcpu: u32,
    /// Host thread id of the thread that ran `KVM_RUN`: the pid of this vCPU's host events.
    pub tid: i32,
    /// Every read, in program order.
    pub reads: Vec<GuestRead>,
    /// debugfs TSC state.
    pub debugfs: DebugfsTsc,
}

/// One VM's run.
#[derive(Debug, Clone)]
pub struct VmReport {
    /// Index of the VM in this run (0-based).
    pub index: usize,
    /// Host process id (the VMM; the vCPU threads' tgid).
    pub pid: u32,
    /// Thread id of the thread that called KVM_CREATE_VM. debugfs names the VM after it, not
    /// after the process (virt/kvm/kvm_main.c `kvm_create_vm_debugfs`: `task_pid_nr(current)`),
    /// and the creation-time `kvm_write_tsc_offset` events carry it as their pid.
    pub creator_tid: i32,
    /// The VM file descriptor: debugfs names the VM `kvm/<creator_tid>-<vm_fd>/`.
    pub vm_fd: i32,
    /// The MSR write every vCPU performed, if any.
    pub wrmsr: Option<WrmsrPlan>,
    /// Guest rip of the looping `rdtsc` (reads 0 ..= reads-2) and of the last one: what the
    /// host's `kvm_emulate_insn` shows for each read.
    pub loop_rdtsc_rip: u64,
    /// See `loop_rdtsc_rip`.
    pub last_rdtsc_rip: u64,
    /// The instruction at those rips.
    pub read: ReadInsn,
    /// Per vCPU, by id.
    pub vcpus: Vec<VcpuReport>,
}

impl VmReport {
    /// debugfs directory of this VM.
    pub fn debugfs_dir(&self) -> PathBuf {
        PathBuf::from(format!("{DEBUGFS_KVM}/{}-{}", self.creator_tid, self.vm_fd))
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub vms: Vec<VmReport>,
}

/// A VM that is set up but whose vCPUs have not run yet.
struct Vm {
    index: usize,
    // Fields drop in order: vCPU fds, then the VM fd, then the memory the VM maps, so no fd
    // that can reach the memory outlives it.
    vcpus: Vec<(VcpuFd, DebugfsTsc)>,
    fd: VmFd,
    mem: GuestMemoryMmap,
}

/// Runs `cfg`: creates every VM and vCPU, starts all vCPUs together, waits for all of them to
/// halt and returns what each read. Every fd is closed and every thread joined on return,
/// error or not.
pub fn run(cfg: &Config) -> Result<RunReport> {
    cfg.validate()?;
    let kvm_sys = Kvm::new().map_err(Error::NoKvm)?;
    let cpuid = kvm_sys
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let wr = cfg.wrmsr.map(|w| (w.after_read, w.msr, w.value));
    let prog = program::assemble(cfg.reads, cfg.cpuid_marker_leaf, wr, cfg.read);
    let pid = std::process::id();
    let creator_tid = current_tid()?;

    let mut vms = Vec::with_capacity(cfg.vms);
    for index in 0..cfg.vms {
        vms.push(make_vm(
            &kvm_sys,
            &cpuid,
            &prog,
            index,
            cfg.vcpus,
            creator_tid,
        )?);
    }

    // One start gate for every vCPU of every VM, so that reads of different vCPUs interleave.
    let total = cfg.vms * cfg.vcpus;
    let gate = Arc::new(Gate::default());
    let mut handles = Vec::with_capacity(total);
    let mut pending = Vec::with_capacity(cfg.vms);
    for vm in vms {
        let Vm {
            index,
            fd,
            mem,
            vcpus,
        } = vm;
        let vm_fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
        for (id, (vcpu, debugfs)) in vcpus.into_iter().enumerate() {
            let ctx = VcpuCtx {
                vm: index,
                vcpu: id as u32,
                reads: cfg.reads,
                read: cfg.read,
                debugfs_dir: format!("{DEBUGFS_KVM}/{creator_tid}-{vm_fd}/vcpu{id}"),
                gate: Arc::clone(&gate),
            };
            let spawned = thread::Builder::new()
                .name(format!("microvm-vcpu{id}"))
                .spawn(move || run_vcpu(vcpu, debugfs, ctx));
            match spawned {
                Ok(h) => handles.push((index, h)),
                Err(e) => {
                    // Release the threads already waiting (they return without running), join
                    // them, then drop every fd.
                    gate.open(false);
                    for (_, h) in handles {
                        let _ = h.join();
                    }
                    return Err(Error::Thread(format!("spawn: {e}")));
                }
            }
        }
        pending.push((index, fd, mem, vm_fd));
    }
    // Real VMs live long enough for a debugfs sampler to see them; these
    // would be gone in about a millisecond, so they may wait before running
    // and again after halting (their vCPUs stay halted meanwhile).
    thread::sleep(cfg.hold);
    gate.open(true);

    let mut per_vm: Vec<Vec<VcpuReport>> = vec![Vec::new(); cfg.vms];
    let mut first_err = None;
    for (index, h) in handles {
        match h.join() {
            Ok(Ok(rep)) => per_vm[index].push(rep),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err
                    .get_or_insert(Error::Thread(format!("vm{index}: a vCPU thread panicked")));
            }
        }
    }
    thread::sleep(cfg.hold);
    if let Some(e) = first_err {
        return Err(e);
    }

    let mut out = Vec::with_capacity(cfg.vms);
    for ((index, fd, mem, vm_fd), vcpus) in pending.into_iter().zip(per_vm) {
        check_memory(&mem, index, &vcpus)?;
        drop(fd);
        drop(mem);
        out.push(VmReport {
            index,
            pid,
            creator_tid,
            vm_fd,
            wrmsr: cfg.wrmsr,
            loop_rdtsc_rip: prog.loop_rdtsc,
            last_rdtsc_rip: prog.last_rdtsc,
            read: prog.read,
            vcpus,
        });
    }
    Ok(RunReport { vms: out })
}

fn make_vm(
    kvm_sys: &Kvm,
    cpuid: &CpuId,
    prog: &Program,
    index: usize,
    vcpus: usize,
    creator_tid: i32,
) -> Result<Vm> {
    let fd = kvm_sys
        .create_vm()
        .map_err(kvm(format!("vm{index}: KVM_CREATE_VM")))?;
    let size = program::mem_size(vcpus);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)])
        .map_err(|e| Error::Memory(format!("vm{index}: mmap {size} bytes: {e}")))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| Error::Memory(format!("vm{index}: host address: {e}")))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: size as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `host..host+size` is one anonymous mapping owned by `mem`, which outlives `fd`
    // (see `Vm` and the drop order in `run`), so the guest never sees freed memory; the region
    // does not overlap any other slot of this fresh VM.
    unsafe { fd.set_user_memory_region(region) }
        .map_err(kvm(format!("vm{index}: KVM_SET_USER_MEMORY_REGION")))?;
    mem.write_slice(&prog.code, GuestAddress(program::CODE_ADDR))
        .map_err(|e| Error::Memory(format!("vm{index}: load code: {e}")))?;

    let vm_fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut out = Vec::with_capacity(vcpus);
    for id in 0..vcpus {
        let ctx = |what: &str| format!("vm{index} vcpu{id}: {what}");
        let vcpu = fd
            .create_vcpu(id as u64)
            .map_err(kvm(ctx("KVM_CREATE_VCPU")))?;
        vcpu.set_cpuid2(cpuid).map_err(kvm(ctx("KVM_SET_CPUID2")))?;

        let mut sregs = vcpu.get_sregs().map_err(kvm(ctx("KVM_GET_SREGS")))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        let base = program::data_base(id as u32);
        sregs.ds.base = base;
        sregs.ds.selector = (base >> 4) as u16;
        sregs.ds.limit = 0xffff;
        vcpu.set_sregs(&sregs).map_err(kvm(ctx("KVM_SET_SREGS")))?;

        let mut regs = vcpu.get_regs().map_err(kvm(ctx("KVM_GET_REGS")))?;
        regs.rip = program::CODE_ADDR;
        regs.rflags = 0x2; // bit 1 is reserved-one; IF clear, no interrupts are ever injected
        regs.rsi = 0;
        regs.rdi = 0;
        vcpu.set_regs(&regs).map_err(kvm(ctx("KVM_SET_REGS")))?;

        let dir = format!("{DEBUGFS_KVM}/{creator_tid}-{vm_fd}/vcpu{id}");
        let create_read_at_tsc = rdtsc();
        let debugfs = DebugfsTsc {
            offset_at_create: read_num(&dir, "tsc-offset"),
            offset_at_end: None,
            scaling_ratio: read_num(&dir, "tsc-scaling-ratio"),
            scaling_frac_bits: read_num(&dir, "tsc-scaling-ratio-frac-bits"),
            create_read_at_tsc,
            end_read_at_tsc: 0,
        };
        out.push((vcpu, debugfs));
    }
    Ok(Vm {
        index,
        fd,
        mem,
        vcpus: out,
    })
}

/// Reads one decimal debugfs number; `None` when the file is missing or not a number.
fn read_num<T: std::str::FromStr>(dir: &str, file: &str) -> Option<T> {
    std::fs::read_to_string(format!("{dir}/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The calling thread's id, from `/proc/thread-self` (a link to `<pid>/task/<tid>`).
pub fn current_tid() -> Result<i32> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|source| Error::Io {
        what: "readlink /proc/thread-self".into(),
        source,
    })?;
    link.file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::Thread(format!(
                "cannot parse /proc/thread-self -> {}",
                link.display()
            ))
        })
}

struct VcpuCtx {
    vm: usize,
    vcpu: u32,
    reads: usize,
    read: ReadInsn,
    debugfs_dir: String,
    gate: Arc<Gate>,
}

/// A one-shot start signal: `Some(true)` run, `Some(false)` give up.
#[derive(Default)]
struct Gate {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some(go);
        self.cv.notify_all();
    }
    fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *s {
                Some(go) => return go,
                None => s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

fn run_vcpu(mut vcpu: VcpuFd, mut debugfs: DebugfsTsc, ctx: VcpuCtx) -> Result<VcpuReport> {
    let tid = current_tid();
    let (vm, id) = (ctx.vm, ctx.vcpu);
    if !ctx.gate.wait() {
        return Err(Error::Thread(format!("vm{vm} vcpu{id}: start cancelled")));
    }
    let tid = tid?;
    let guest = |what: String| Error::Guest { vm, vcpu: id, what };
    let mut reads: Vec<GuestRead> = Vec::with_capacity(ctx.reads);
    let mut announced = 0usize; // SEQ_PORT writes seen
                                // Two `out`s per read and a `hlt`: anything beyond means the program went astray.
    let max_exits = 2 * ctx.reads + 64;
    let mut exits = 0usize;
    loop {
        exits += 1;
        if exits > max_exits {
            return Err(guest(format!("more than {max_exits} exits")));
        }
        // Copy what the exit borrows from kvm_run before touching the vCPU again.
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut buf = [0u8; 4];
                let n = data.len().min(4);
                buf[..n].copy_from_slice(&data[..n]);
                Exit::Out(port, n, u32::from_le_bytes(buf))
            }
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Intr) => continue,
            Ok(VcpuExit::MmioRead(addr, _)) => {
                Exit::Other(format!("KVM_EXIT_MMIO read at {addr:#x}"))
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                Exit::Other(format!("KVM_EXIT_MMIO write at {addr:#x}"))
            }
            Ok(VcpuExit::IoIn(port, _)) => {
                Exit::Other(format!("KVM_EXIT_IO in from port {port:#x}"))
            }
            Ok(other) => Exit::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(kvm(format!("vm{vm} vcpu{id}: KVM_RUN"))(e)),
        };
        match exit {
            Exit::Out(program::SEQ_PORT, 2, val) => {
                if val as usize != announced {
                    return Err(guest(format!(
                        "SEQ_PORT announced {val}, expected {announced}"
                    )));
                }
                announced += 1;
            }
            Exit::Out(program::TSC_PORT, 4, low) => {
                let r = read_after(&vcpu, vm, id, reads.len(), ctx.read, Insn::Out)?;
                if r.guest_tsc as u32 != low {
                    return Err(guest(format!("out data {low:#x} != eax of read {}", r.seq)));
                }
                reads.push(r);
            }
            Exit::Hlt => {
                let r = read_after(&vcpu, vm, id, reads.len(), ctx.read, Insn::Hlt)?;
                reads.push(r);
                break;
            }
            Exit::Out(port, size, val) => {
                return Err(Error::UnexpectedExit {
                    vm,
                    vcpu: id,
                    reason: format!("KVM_EXIT_IO out port {port:#x} size {size} val {val:#x}"),
                    reads: reads.len(),
                })
            }
            Exit::Other(reason) => {
                return Err(Error::UnexpectedExit {
                    vm,
                    vcpu: id,
                    reason,
                    reads: reads.len(),
                })
            }
        }
        if announced != reads.len() + 1 && announced != reads.len() {
            return Err(guest(format!(
                "{announced} announced vs {} reads",
                reads.len()
            )));
        }
    }
    if reads.len() != ctx.reads || announced != ctx.reads {
        return Err(guest(format!(
            "halted after {} reads ({announced} announced), expected {}",
            reads.len(),
            ctx.reads
        )));
    }
    debugfs.end_read_at_tsc = rdtsc();
    debugfs.offset_at_end = read_num(&ctx.debugfs_dir, "tsc-offset");
    Ok(VcpuReport {
        vcpu: id,
        tid,
        reads,
        debugfs,
    })
}

enum Exit {
    Out(u16, usize, u32),
    Hlt,
    Other(String),
}

/// The read whose result is in edx:eax now; SI must be its index.
fn read_after(
    vcpu: &VcpuFd,
    vm: usize,
    id: u32,
    seq: usize,
    insn: ReadInsn,
    before: Insn,
) -> Result<GuestRead> {
    let regs = vcpu
        .get_regs()
        .map_err(kvm(format!("vm{vm} vcpu{id}: KVM_GET_REGS")))?;
    if regs.rsi & 0xffff != seq as u64 {
        return Err(Error::Guest {
            vm,
            vcpu: id,
            what: format!("SI {} at read {seq}", regs.rsi & 0xffff),
        });
    }
    Ok(GuestRead {
        seq: seq as u32,
        insn,
        guest_tsc: (regs.rdx & 0xffff_ffff) << 32 | (regs.rax & 0xffff_ffff),
        before,
    })
}

/// Every read followed by `out` was also stored by the guest at DS:8*seq: compare.
fn check_memory(mem: &GuestMemoryMmap, vm: usize, vcpus: &[VcpuReport]) -> Result<()> {
    for v in vcpus {
        for r in v.reads.iter().filter(|r| r.before == Insn::Out) {
            let addr = program::data_base(v.vcpu) + 8 * u64::from(r.seq);
            let stored: u64 = mem
                .read_obj(GuestAddress(addr))
                .map_err(|e| Error::Memory(format!("vm{vm}: read {addr:#x}: {e}")))?;
            if stored != r.guest_tsc {
                return Err(Error::Guest {
                    vm,
                    vcpu: v.vcpu,
                    what: format!(
                        "read {}: memory has {stored:#x}, registers had {:#x}",
                        r.seq, r.guest_tsc
                    ),
                });
            }
        }
    }
    Ok(())
}
