//! `tscmerge synth`: recordings of a modelled KVM host with exact ground truth.
//!
//! Outputs, in a directory:
//! - `host.txt`: the host's top-level buffer (kvm_entry, kvm_exit, kvm_cpuid,
//!   sched_switch), tracefs text with the tgid column;
//! - `host-tsc_offset.txt`: the `tsc_offset` instance (kvm_write_tsc_offset);
//! - `guest-vmN.txt`: each VM's guest trace (sched_switch and markers), stamped
//!   with the guest TSC;
//! - `truth.tsv`: for every guest event, in guest file order, its true host TSC.
//!
//! or, with [`write_dat`], the same events as `host.dat` (both buffers) and
//! `guest-vmN.dat` (see [`dat`]).

pub mod dat;
mod model;
pub mod story;
mod text;
pub mod tracecmd;

use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::io::{self, BufWriter, Write};
use std::path::Path;

pub use dat::write_dat;
pub use tracecmd::{write_tracecmd_pair, PairConfig, Sampling};
pub use model::{Happening, HostNoise, Patterns, Rng, RunWindowEvents, SynthConfig, SynthEvent, VcpuEntity};
pub use text::{write_guest_line, write_header, write_host_line};

/// Merges event streams by `key`, keeping each stream's own order (as the
/// kernel's `trace` file merges per-CPU buffers).
pub struct MergeBy<I: Iterator<Item = SynthEvent>, F: Fn(&SynthEvent) -> u64> {
    streams: Vec<std::iter::Peekable<I>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    key: F,
}

impl<I: Iterator<Item = SynthEvent>, F: Fn(&SynthEvent) -> u64> MergeBy<I, F> {
    pub fn new(streams: Vec<I>, key: F) -> Self {
        let mut streams: Vec<_> = streams.into_iter().map(Iterator::peekable).collect();
        let mut heap = BinaryHeap::new();
        for (i, s) in streams.iter_mut().enumerate() {
            if let Some(e) = s.peek() {
                heap.push(Reverse((key(e), i)));
            }
        }
        MergeBy { streams, heap, key }
    }
}

impl<I: Iterator<Item = SynthEvent>, F: Fn(&SynthEvent) -> u64> Iterator for MergeBy<I, F> {
    type Item = SynthEvent;
    fn next(&mut self) -> Option<SynthEvent> {
        let Reverse((_, i)) = self.heap.pop()?;
        let ev = self.streams[i].next()?;
        if let Some(e) = self.streams[i].peek() {
            self.heap.push(Reverse(((self.key)(e), i)));
        }
        Some(ev)
    }
}

type Stream = Box<dyn Iterator<Item = SynthEvent>>;

/// Every host-side event (vCPU threads and background CPUs), by host time.
pub fn host_events(cfg: &SynthConfig) -> impl Iterator<Item = SynthEvent> {
    let mut streams: Vec<Stream> = Vec::new();
    for cpu in 0..cfg.background_cpus {
        streams.push(Box::new(HostNoise::new(cfg, cpu)));
    }
    for (vm, &n) in cfg.vms.iter().enumerate() {
        for vcpu in 0..n {
            let c = cfg.clone();
            streams.push(Box::new(VcpuEntity::new(cfg, vm, vcpu).filter(move |e| !e.is_guest() && c.keeps(e))));
        }
    }
    MergeBy::new(streams, |e| e.host.0)
}

/// VM `vm`'s guest events, merged by guest TSC as the guest's `trace` file is.
pub fn guest_events(cfg: &SynthConfig, vm: usize) -> impl Iterator<Item = SynthEvent> {
    let streams: Vec<Stream> = (0..cfg.vms[vm])
        .map(|vcpu| Box::new(VcpuEntity::new(cfg, vm, vcpu).filter(SynthEvent::is_guest)) as Stream)
        .collect();
    MergeBy::new(streams, |e| e.guest.unwrap_or_default())
}

/// Writes `path` through an unguessable temporary file renamed into place
/// when complete ([`safefs::AtomicFile`]; removed on error).
pub fn write_atomically(path: &Path, f: impl FnOnce(&mut BufWriter<safefs::AtomicFile>) -> io::Result<()>) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, safefs::AtomicFile::create(path)?);
    f(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    Ok(file.commit()?)
}

/// Counts per output, for the caller's summary.
#[derive(Clone, Debug, Default)]
pub struct SynthSummary {
    pub host_events: u64,
    pub offset_writes: u64,
    pub guest_events: Vec<u64>,
}

/// Writes the text recording into `dir` (created if needed).
pub fn write_text(cfg: &SynthConfig, dir: &Path) -> io::Result<SynthSummary> {
    std::fs::create_dir_all(dir)?;
    let mut sum = SynthSummary::default();
    // Counting first lets the header carry the kernel's entries line.
    let (mut n_host, mut n_off) = (0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0);
    for e in host_events(cfg) {
        if e.is_offset_write() { n_off += 1 } else { n_host += 1 }
        (first, last) = (first.min(e.host.0), last.max(e.host.0));
    }
    if cfg.host_story {
        write_state_truth(cfg, dir, first, last)?;
    }
    write_atomically(&dir.join("host.txt"), |w| {
        write_header(w, n_host, cfg.host_cpus(), true, "")?;
        for e in host_events(cfg).filter(|e| !e.is_offset_write()) {
            write_host_line(w, cfg, &e)?;
        }
        Ok(())
    })?;
    write_atomically(&dir.join("host-tsc_offset.txt"), |w| {
        write_header(w, n_off, cfg.host_cpus(), true, "")?;
        for e in host_events(cfg).filter(SynthEvent::is_offset_write) {
            write_host_line(w, cfg, &e)?;
        }
        Ok(())
    })?;
    sum.host_events = n_host;
    sum.offset_writes = n_off;
    write_atomically(&dir.join("truth.tsv"), |t| {
        writeln!(t, "guest\tcpu\tguest_tsc\thost_tsc")?;
        for vm in 0..cfg.vms.len() {
            let n = guest_events(cfg, vm).count() as u64;
            sum.guest_events.push(n);
            write_atomically(&dir.join(format!("guest-vm{vm}.txt")), |w| {
                let note = format!("synthetic guest vm{vm} written by tscmerge synth (seed {})", cfg.seed);
                write_header(w, n, cfg.vms[vm], false, &note)?;
                for e in guest_events(cfg, vm) {
                    write_guest_line(w, &e)?;
                    writeln!(t, "vm{vm}\t{}\t{}\t{}", e.vcpu, e.guest.unwrap_or_default(), e.host.0)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(sum)
}

/// `truth-states.tsv` (with [`SynthConfig::host_story`]): per vCPU, the
/// cycles of each state over the host recording `[first, last]` event, and
/// per exit reason and guest task the exits followed by an entry with their
/// exit-to-entry cycles, and the cycles per state of the intervals
/// [`story::STALL`] names, summed ([`story::truth`]); kind `irq`: the host
/// IRQs on the vCPU's CPU while its thread ran there (count: entries,
/// cycles: exclusive), `stall-irq`: those inside the stalls, summed.
pub fn write_state_truth(cfg: &SynthConfig, dir: &Path, first: u64, last: u64) -> io::Result<()> {
    write_atomically(&dir.join("truth-states.tsv"), |w| {
        writeln!(w, "# host recording {first}..{last}")?;
        writeln!(w, "guest\tvcpu\tkind\tname\tguest_task\tcount\tcycles")?;
        for (vm, &n) in cfg.vms.iter().enumerate() {
            for vcpu in 0..n {
                let t = story::truth(cfg, vm, vcpu, first, last);
                for (s, c) in &t.states {
                    writeln!(w, "vm{vm}\t{vcpu}\tstate\t{s}\t\t\t{c}")?;
                }
                for ((r, task), (count, c)) in &t.exits {
                    writeln!(w, "vm{vm}\t{vcpu}\texit\t{r}\t{task}\t{count}\t{c}")?;
                }
                for (s, c) in &t.stall_states {
                    writeln!(w, "vm{vm}\t{vcpu}\tstall\t{s}\t\t{}\t{c}", t.stalls)?;
                }
                for (k, (n, c)) in &t.irqs {
                    writeln!(w, "vm{vm}\t{vcpu}\tirq\t{k}\t\t{n}\t{c}")?;
                }
                for (k, (n, c)) in &t.stall_irqs {
                    writeln!(w, "vm{vm}\t{vcpu}\tstall-irq\t{k}\t\t{n}\t{c}")?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_ordered_and_deterministic() {
        let cfg = SynthConfig::default();
        let a: Vec<u64> = host_events(&cfg).map(|e| e.host.0).collect();
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        let b: Vec<u64> = host_events(&cfg).map(|e| e.host.0).collect();
        assert_eq!(a, b);
        // Offsets rise and fall: some guest TSC steps backward on a vCPU.
        let g: Vec<SynthEvent> = VcpuEntity::new(&cfg, 1, 1).filter(SynthEvent::is_guest).collect();
        assert!(g.windows(2).any(|w| w[1].guest < w[0].guest));
        assert!(g.windows(2).all(|w| w[0].host < w[1].host));
    }
}
