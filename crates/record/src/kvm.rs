//! Snapshots of KVM's debugfs (`kvm/<pid>-<fd>/vcpuN/tsc-offset`, and the
//! scaling ratio where the CPU has TSC scaling), taken by a sampler thread when
//! a VM or vCPU appears, every interval, and at the end. They are the ground
//! truth for the offset actually applied, which the tracepoint may not be
//! (see FACTS.md on PVM), and the only source of the scaling ratio.
//!
//! `kvm_debugfs.txt` line format (one snapshot of one vCPU a line, `#` comments):
//! ```text
//! <taken_at_tsc> <reason> <vm_dir> <pid> <vcpu> <tsc_offset> <scaling_ratio|-> <frac_bits|->
//! ```
//! `reason` is `new` (a VM or vCPU appeared), `periodic` or `end`; `tsc_offset`
//! is signed decimal; `taken_at_tsc` is the host TSC (rdtsc) just before the
//! VM's files were read.
//!
//! `processes.txt`: `<pid> <tgid|-> <comm|->` a line, sorted by pid: union of
//! saved_cmdlines, saved_tgids and `/proc/<creator>/task/*` read when a VM appeared.

use crate::error::{Error, Result};
use crate::sys;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One vCPU's TSC state as debugfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmVcpuSnapshot {
    /// `<pid>-<fd>`.
    pub vm_dir: String,
    /// From `vm_dir`: the id of the *thread* that issued KVM_CREATE_VM
    /// (virt/kvm/kvm_main.c `kvm_create_vm_debugfs` uses `task_pid_nr(current)`),
    /// which is the VMM's pid only when its main thread created the VM.
    pub pid: i32,
    /// vCPU index.
    pub vcpu: u32,
    /// `tsc-offset`, signed.
    pub tsc_offset: i64,
    /// `tsc-scaling-ratio` (present only with TSC scaling).
    pub scaling_ratio: Option<u64>,
    /// `tsc-scaling-ratio-frac-bits`.
    pub frac_bits: Option<u32>,
    /// Host TSC just before this VM's files were read.
    pub taken_at_tsc: u64,
}

impl KvmVcpuSnapshot {
    /// One `kvm_debugfs.txt` line (without newline).
    pub fn to_line(&self, reason: &str) -> String {
        let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        format!(
            "{} {} {} {} {} {} {} {}",
            self.taken_at_tsc,
            reason,
            self.vm_dir,
            self.pid,
            self.vcpu,
            self.tsc_offset,
            opt(self.scaling_ratio.map(|v| v.to_string())),
            opt(self.frac_bits.map(|v| v.to_string()))
        )
    }

    /// Parse a line written by [`KvmVcpuSnapshot::to_line`]; returns the reason too.
    pub fn parse_line(line: &str) -> Option<(KvmVcpuSnapshot, String)> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [tsc, reason, vm, pid, vcpu, off, ratio, frac] = f.as_slice() else {
            return None;
        };
        let opt = |s: &str| {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        Some((
            KvmVcpuSnapshot {
                vm_dir: vm.to_string(),
                pid: pid.parse().ok()?,
                vcpu: vcpu.parse().ok()?,
                tsc_offset: off.parse().ok()?,
                scaling_ratio: opt(ratio)?,
                frac_bits: opt(frac)?.map(|v: u64| v as u32),
                taken_at_tsc: tsc.parse().ok()?,
            },
            reason.to_string(),
        ))
    }
}

fn read_num<T: std::str::FromStr>(p: &Path) -> Option<T> {
    sys::read_text(p).ok()?.trim().parse().ok()
}

/// Snapshot every vCPU under `<debugfs_root>/kvm`. VMs that vanish while being
/// read are skipped; a missing `kvm` directory gives an empty list.
pub fn snapshot_kvm_debugfs(debugfs_root: &Path) -> Vec<KvmVcpuSnapshot> {
    let kvm = debugfs_root.join("kvm");
    let Ok(rd) = fs::read_dir(&kvm) else {
        return Vec::new();
    };
    let mut vms: Vec<(String, i32)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split_once('-')?.0.parse().ok()?;
            Some((name, pid))
        })
        .collect();
    vms.sort();
    let mut out = Vec::new();
    for (vm_dir, pid) in vms {
        let d = kvm.join(&vm_dir);
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut vcpus: Vec<u32> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("vcpu")?.parse().ok())
            .collect();
        vcpus.sort_unstable();
        let taken_at_tsc = sys::rdtsc();
        for vcpu in vcpus {
            let v = d.join(format!("vcpu{vcpu}"));
            let Some(tsc_offset) = read_num::<i64>(&v.join("tsc-offset")) else {
                continue;
            };
            out.push(KvmVcpuSnapshot {
                vm_dir: vm_dir.clone(),
                pid,
                vcpu,
                tsc_offset,
                scaling_ratio: read_num(&v.join("tsc-scaling-ratio")),
                frac_bits: read_num(&v.join("tsc-scaling-ratio-frac-bits")),
                taken_at_tsc,
            });
        }
    }
    out
}

/// Threads seen: pid → (tgid, comm).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Processes {
    /// pid → (tgid, comm).
    pub map: BTreeMap<i32, (Option<i32>, Option<String>)>,
}

impl Processes {
    /// Record what is known of `pid`; known values are kept unless replaced by known ones.
    pub fn add(&mut self, pid: i32, tgid: Option<i32>, comm: Option<&str>) {
        let e = self.map.entry(pid).or_default();
        if tgid.is_some() {
            e.0 = tgid;
        }
        if let Some(c) = comm.filter(|c| !c.is_empty()) {
            e.1 = Some(c.replace(char::is_whitespace, "_"));
        }
    }

    /// Every thread of the process that thread `tid` belongs to, from
    /// `/proc/<tid>/status` (Tgid) and `/proc/<tid>/task/*/comm`.
    pub fn add_proc_tasks(&mut self, proc_root: &Path, tid: i32) {
        let status =
            fs::read_to_string(proc_root.join(format!("{tid}/status"))).unwrap_or_default();
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<i32>().ok());
        let Ok(rd) = fs::read_dir(proc_root.join(format!("{tid}/task"))) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let Some(t) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let comm = fs::read_to_string(e.path().join("comm")).ok();
            self.add(t, tgid, comm.as_deref().map(str::trim));
        }
    }

    /// Merge a tracefs `saved_cmdlines` text (`<pid> <comm>` lines).
    pub fn add_saved_cmdlines(&mut self, text: &str) {
        for l in text.lines() {
            if let Some((p, c)) = l.trim().split_once(' ') {
                if let Ok(p) = p.parse() {
                    self.add(p, None, Some(c.trim()));
                }
            }
        }
    }

    /// Merge a tracefs `saved_tgids` text (`<pid> <tgid>` lines).
    pub fn add_saved_tgids(&mut self, text: &str) {
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if let (Some(Ok(p)), Some(Ok(t))) =
                (it.next().map(str::parse), it.next().map(str::parse))
            {
                self.add(p, Some(t), None);
            }
        }
    }

    /// `processes.txt` text.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# pid tgid comm\n");
        for (pid, (tgid, comm)) in &self.map {
            let t = tgid.map_or("-".to_string(), |t| t.to_string());
            s.push_str(&format!("{pid} {t} {}\n", comm.as_deref().unwrap_or("-")));
        }
        s
    }
}

/// The debugfs sampler thread.
pub struct KvmSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<usize>>>,
    processes: Arc<Mutex<Processes>>,
}

struct SamplerState {
    debugfs: PathBuf,
    proc_root: PathBuf,
    out: fs::File,
    out_path: PathBuf,
    seen: BTreeSet<(String, u32)>,
    vms_seen: BTreeSet<String>,
    lines: usize,
    processes: Arc<Mutex<Processes>>,
}

impl SamplerState {
    fn take(&mut self, force: Option<&str>) -> Result<()> {
        let snaps = snapshot_kvm_debugfs(&self.debugfs);
        let new = snaps
            .iter()
            .any(|s| !self.seen.contains(&(s.vm_dir.clone(), s.vcpu)));
        // "new" wins over "periodic" so a reader can find when each vCPU appeared.
        let reason = match (force, new) {
            (Some(r @ ("start" | "end")), _) => r,
            (_, true) => "new",
            (Some(r), false) => r,
            (None, false) => return Ok(()),
        };
        let mut text = String::new();
        for s in &snaps {
            if self.vms_seen.insert(s.vm_dir.clone()) {
                if let Ok(mut p) = self.processes.lock() {
                    p.add_proc_tasks(&self.proc_root, s.pid);
                }
            }
            self.seen.insert((s.vm_dir.clone(), s.vcpu));
            text.push_str(&s.to_line(reason));
            text.push('\n');
        }
        self.lines += snaps.len();
        self.out
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("writing", &self.out_path, e))
    }
}

impl KvmSampler {
    /// Start sampling `<debugfs_root>/kvm` into `out` (created, with a header
    /// comment): a check for new VMs/vCPUs every `min(interval, 20 ms)`, a full
    /// snapshot every `interval`, and one at [`KvmSampler::stop`].
    pub fn start(debugfs_root: &Path, out: &Path, interval: Duration) -> Result<KvmSampler> {
        let mut f = fs::File::create(out).map_err(|e| Error::io("creating", out, e))?;
        f.write_all(b"# tscmerge kvm_debugfs 1: taken_at_tsc reason vm_dir pid vcpu tsc_offset scaling_ratio frac_bits\n")
            .map_err(|e| Error::io("writing", out, e))?;
        let processes = Arc::new(Mutex::new(Processes::default()));
        let mut st = SamplerState {
            debugfs: debugfs_root.to_path_buf(),
            proc_root: PathBuf::from("/proc"),
            out: f,
            out_path: out.to_path_buf(),
            seen: BTreeSet::new(),
            vms_seen: BTreeSet::new(),
            lines: 0,
            processes: processes.clone(),
        };
        // The first snapshot before returning, so every VM made after start is "new".
        st.take(Some("start"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let interval = interval.max(Duration::from_millis(1));
        let tick = interval.min(Duration::from_millis(20));
        let handle = std::thread::Builder::new()
            .name("rec-kvm-debugfs".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !stop2.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    if Instant::now() >= next {
                        st.take(Some("periodic"))?;
                        next = Instant::now() + interval;
                    } else {
                        st.take(None)?;
                    }
                }
                st.take(Some("end"))?;
                st.out
                    .sync_data()
                    .map_err(|e| Error::io("syncing", &st.out_path, e))?;
                Ok(st.lines)
            })
            .map_err(|e| Error::io("spawning sampler for", out, e))?;
        Ok(KvmSampler {
            stop,
            handle: Some(handle),
            processes,
        })
    }

    /// Threads seen so far in VMM processes.
    pub fn processes(&self) -> Arc<Mutex<Processes>> {
        self.processes.clone()
    }

    /// Take the final snapshot and end the thread; returns the number of lines written.
    pub fn stop(mut self) -> Result<usize> {
        self.stop.store(true, Ordering::Release);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::ThreadPanic {
                instance: "kvm debugfs sampler".into(),
                cpu: 0,
            }),
            None => Ok(0),
        }
    }
}

impl Drop for KvmSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_debugfs_tree_and_line_round_trip() {
        let root = std::env::temp_dir().join(format!("record_test_kvmfake_{}", std::process::id()));
        let v0 = root.join("kvm/1234-11/vcpu0");
        let v1 = root.join("kvm/1234-11/vcpu1");
        fs::create_dir_all(&v0).unwrap();
        fs::create_dir_all(&v1).unwrap();
        fs::create_dir_all(root.join("kvm/not-a-vm")).unwrap();
        fs::write(v0.join("tsc-offset"), "-197302807524\n").unwrap();
        fs::write(v1.join("tsc-offset"), "5\n").unwrap();
        fs::write(v1.join("tsc-scaling-ratio"), "225179981368524\n").unwrap();
        fs::write(v1.join("tsc-scaling-ratio-frac-bits"), "48\n").unwrap();
        let s = snapshot_kvm_debugfs(&root);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].pid, s[0].vcpu, s[0].tsc_offset, s[0].scaling_ratio),
            (1234, 0, -197302807524, None)
        );
        assert_eq!(
            (s[1].scaling_ratio, s[1].frac_bits),
            (Some(225179981368524), Some(48))
        );
        for x in &s {
            let l = x.to_line("new");
            assert_eq!(
                KvmVcpuSnapshot::parse_line(&l),
                Some((x.clone(), "new".into())),
                "{l}"
            );
        }
        assert!(KvmVcpuSnapshot::parse_line("1 new a 1 0 x - -").is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn processes_merge() {
        let mut p = Processes::default();
        p.add_saved_cmdlines("12 qemu-system-x86\n13 CPU 0/KVM\n");
        p.add_saved_tgids("13 12\n99 99\n");
        assert_eq!(
            p.to_text(),
            "# pid tgid comm\n12 - qemu-system-x86\n13 12 CPU_0/KVM\n99 99 -\n"
        );
    }
}
