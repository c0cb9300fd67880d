use super::*;
use crate::event::{Body, Record};
use crate::explain::IrqTotal;

fn ev<'a>(ts: u64, cpu: u32, pid: i32, name: &'a str, text: &'a str) -> EventView<'a> {
    let system = if name.starts_with("kvm") { "kvm" } else { "sched" };
    EventView { ts, orig_ts: None, placed: Default::default(), cpu, payload: Payload::Event(Record { pid, tgid: None, comm: "qemu", system, name, body: Body::Text(text) }) }
}

fn run(cfg: ExplainConfig, events: &[(u64, usize, u32, i32, &str, &str)]) -> (ExplainReport, Vec<Segment>) {
    let mut x = Explainer::new(cfg);
    x.keep_segments();
    for &(ts, m, cpu, pid, name, text) in events {
        x.event(m, &ev(ts, cpu, pid, name, text));
    }
    x.finish();
    (x.report(), x.take_segments())
}

/// A VMX vCPU (thread 10 on host CPU 1; guest vm CPU 0) through every state.
const VMX: [(u64, usize, u32, i32, &str, &str); 19] = [
    (100, 0, 0, 5, "x", "first host event"),
    (200, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x1"),
    (300, 1, 0, 42, "sched_switch", "prev_comm=init prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=app next_pid=42 next_prio=120"),
    (500, 0, 1, 10, "kvm_exit", "reason EPT_VIOLATION rip 0x1 info 0 0"),
    (550, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x1"),
    (700, 0, 1, 10, "kvm_exit", "reason IO_INSTRUCTION rip 0x2 info 0 0"),
    (720, 0, 1, 10, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)"),
    (800, 0, 1, 10, "kvm_fpu", "load"),
    (820, 0, 1, 10, "sched_switch", "prev_comm=qemu prev_pid=10 prev_prio=120 prev_state=R+ ==> next_comm=stress next_pid=77 next_prio=120"),
    (900, 0, 1, 77, "sched_switch", "prev_comm=stress prev_pid=77 prev_prio=120 prev_state=S ==> next_comm=qemu next_pid=10 next_prio=120"),
    (950, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x2"),
    (960, 1, 0, 42, "sched_switch", "prev_comm=app prev_pid=42 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120"),
    (1000, 0, 1, 10, "kvm_exit", "reason HLT rip 0x3 info 0 0"),
    (1010, 0, 1, 10, "sched_switch", "prev_comm=qemu prev_pid=10 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120"),
    (1500, 0, 0, 3, "sched_waking", "comm=qemu pid=10 prio=120 target_cpu=001"),
    (1520, 0, 1, 0, "sched_switch", "prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=qemu next_pid=10 next_prio=120"),
    (1530, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x4"),
    (1600, 1, 0, 42, "x", "a guest event changes no state"),
    (2000, 0, 0, 5, "x", "last host event"),
];

fn vmx_cfg() -> ExplainConfig {
    ExplainConfig { machines: vec!["host".into(), "vm".into()], vcpus: vec![KnownVcpu { pid: 10, machine: 1, vcpu: 0, guest_cpu: 0 }], ..Default::default() }
}

#[test]
fn every_cycle_has_one_state() {
    let (r, segs) = run(vmx_cfg(), &VMX);
    assert_eq!((r.start, r.end, r.length), (100, 2000, 1900));
    let v = &r.vcpus[0];
    assert_eq!((v.machine.as_str(), v.vcpu, v.thread), ("vm", Some(0), 10));
    let got: Vec<(&str, Option<&str>, u64)> = v.states.iter().map(|s| (s.state, s.detail.as_deref(), s.cycles)).collect();
    assert_eq!(
        got,
        [
            ("unknown", None, 100),
            ("guest", None, 300 + 150 + 50 + 470),
            ("exit", Some("EPT_VIOLATION"), 50),
            ("exit", Some("IO_INSTRUCTION"), 20 + 20 + 50),
            ("exit", Some("HLT"), 10 + 10),
            ("userspace", Some("KVM_EXIT_IO"), 80),
            ("preempted", Some("stress-77"), 80),
            ("preempted", Some("swapper/1-0"), 20),
            ("halted", None, 490),
        ]
    );
    assert_eq!(v.total, r.length);
    // Segments tile the recording.
    assert_eq!(segs.first().map(|s| s.start), Some(100));
    assert!(segs.windows(2).all(|w| w[0].end == w[1].start));
    assert_eq!(segs.last().map(|s| s.end), Some(2000));
    let exits: Vec<(&str, u64, u128, u64, &str)> =
        v.exits.iter().map(|e| (e.reason.as_str(), e.summary.count, e.summary.total, e.summary.max, e.guest_tasks[0].0.as_str())).collect();
    assert_eq!(exits, [("EPT_VIOLATION", 1, 50, 50, "app-42"), ("IO_INSTRUCTION", 1, 250, 250, "app-42"), ("HLT", 1, 530, 530, "swapper/0-0")]);
    assert_eq!((v.unpaired_exits, v.missed_exits, v.open_exit.clone()), (0, 0, None));
    let text = text_of(&r);
    assert!(text.contains("preempted by stress-77"), "{text}");
    assert!(text.contains("  total                                                    1900  100.00%"), "{text}");
}

#[test]
fn threads_are_found_by_their_kvm_events() {
    // No configuration: the thread is found at its first kvm_entry, with
    // the vCPU its event names; its sched_switch before that is unknown time.
    let (r, _) = run(ExplainConfig::default(), &VMX);
    let v = &r.vcpus[0];
    assert_eq!((v.machine.as_str(), v.vcpu), ("vm?", Some(0)));
    assert_eq!(v.total, 1900);
    assert_eq!(v.exits[0].guest_tasks, [("?".to_string(), 1)]);
}

#[test]
fn emulation_windows_are_exits() {
    let events = [
        (100, 0, 0, 20, "kvm_emulate_insn", "0:1000: 89 f0"),
        (110, 0, 0, 20, "kvm_pio", "pio_write at 0xe0 size 2 count 1 val 0x0"),
        (120, 0, 0, 20, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)"),
        (200, 0, 0, 20, "kvm_emulate_insn", "0:1002: e7 e0"),
        (250, 0, 0, 20, "kvm_emulate_insn", "0:1004: f4"),
        (300, 0, 1, 5, "x", "end"),
    ];
    let (r, _) = run(ExplainConfig::default(), &events);
    let v = &r.vcpus[0];
    assert!(v.emulating);
    assert_eq!((v.cycles_of("exit", "EMULATE"), v.cycles_of("userspace", "KVM_EXIT_IO"), v.cycles("guest"), v.total), (120, 80, 0, 200));
    let s = &v.exits[0].summary;
    assert_eq!((v.exits[0].reason.as_str(), s.count, s.total, s.min, s.max), ("EMULATE", 2, 150, 50, 100));
    assert_eq!(v.open_exit, Some(("EMULATE".to_string(), 250)));
}

#[test]
fn reasons_from_rendered_text() {
    assert_eq!(reason_of("reason EPT_VIOLATION rip 0xffffffffa0360413 info d82 0"), Some("EPT_VIOLATION"));
    assert_eq!(reason_of("reason UNKNOWN (77) rip 0x1 info 0 0"), Some("UNKNOWN (77)"));
    assert_eq!(reason_of("reason KVM_EXIT_HLT (5)"), Some("KVM_EXIT_HLT"));
    assert_eq!(reason_of("reason "), None);
    assert_eq!(reason_of("vcpu 0"), None);
}

#[test]
fn hostile_events_do_not_panic() {
    // Missing fields, absurd values, events out of the expected order.
    let events = [
        (5, 0, 0, 10, "kvm_exit", ""),
        (6, 0, u32::MAX, 10, "sched_switch", "prev_state=R"),
        (7, 0, 0, -1, "sched_waking", "pid=10 target_cpu=99999999999"),
        (8, 0, 0, 10, "kvm_entry", "vcpu 99999999999"),
        (9, 0, 0, 10, "kvm_entry", ""),
        (9, 0, 0, 10, "sched_migrate_task", "pid=10 dest_cpu=-4"),
        (4, 0, 0, 10, "kvm_userspace_exit", "reason"),
        (3, 1, 0, 1, "sched_switch", ""),
    ];
    let (r, _) = run(ExplainConfig::default(), &events);
    assert_eq!(r.vcpus[0].total, r.length);
}

#[test]
fn a_scheduling_latency_gets_the_hosts_breakdown() {
    let events = [
        (100, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x1"),
        (200, 1, 0, 9, "sched_waking", "comm=app pid=42 prio=120 target_cpu=000"),
        (250, 1, 0, 9, "sched_waking", "comm=fast pid=43 prio=120 target_cpu=000"),
        (260, 1, 0, 9, "sched_switch", "prev_comm=x prev_pid=9 prev_prio=120 prev_state=S ==> next_comm=fast next_pid=43 next_prio=120"),
        (300, 0, 1, 10, "kvm_exit", "reason HLT rip 0x3 info 0 0"),
        (310, 0, 1, 10, "sched_switch", "prev_comm=qemu prev_pid=10 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120"),
        (400, 0, 0, 3, "sched_waking", "comm=qemu pid=10 prio=120 target_cpu=001"),
        (450, 0, 1, 0, "sched_switch", "prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=qemu next_pid=10 next_prio=120"),
        (460, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x4"),
        (500, 1, 0, 43, "sched_switch", "prev_comm=fast prev_pid=43 prev_prio=120 prev_state=S ==> next_comm=app next_pid=42 next_prio=120"),
        (1000, 0, 0, 5, "x", "last host event"),
    ];
    let cfg = ExplainConfig { sched_latency: Some(100), ..vmx_cfg() };
    let (r, _) = run(cfg, &events);
    let k = &r.stalls[0];
    assert_eq!((k.kind.as_str(), k.count), ("sched latency > 100", 1), "pid 43 waited 10 cycles only");
    let s = &k.longest[0];
    assert_eq!((s.machine.as_str(), s.cpu, s.start, s.end, s.task.as_str(), s.thread), ("vm", 0, 200, 500, "app-42", Some(10)));
    let b: Vec<(&str, u64)> = s.breakdown.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(b, [("guest", 100 + 40), ("exit HLT", 10 + 10), ("preempted by swapper/1-0", 50), ("halted", 90)]);
    assert_eq!(k.sums[0].breakdown.iter().map(|x| x.1).sum::<u64>(), 300);
}

#[test]
fn named_stalls_pair_events_on_one_guest_cpu() {
    assert!(StallSpec::parse("a..").is_err() && StallSpec::parse("ab").is_err());
    let spec = StallSpec::parse("req start..req end").unwrap();
    let events = [
        (100, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x1"),
        (150, 1, 1, 9, "tracing_mark_write", "req start"),
        (200, 1, 0, 9, "tracing_mark_write", "req start 1"),
        (250, 1, 0, 9, "tracing_mark_write", "req start 2"),
        (300, 0, 1, 10, "kvm_exit", "reason EPT_VIOLATION rip 0x3 info 0 0"),
        (350, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x4"),
        (400, 1, 0, 9, "tracing_mark_write", "req end 1"),
        (1000, 0, 0, 5, "x", "last host event"),
    ];
    let (r, _) = run(ExplainConfig { stalls: vec![spec], ..vmx_cfg() }, &events);
    let k = &r.stalls[0];
    // CPU 1's start never ends; CPU 0's runs from its first start.
    assert_eq!((k.count, k.longest[0].start, k.longest[0].end), (1, 200, 400));
    let b: Vec<(&str, u64)> = k.longest[0].breakdown.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(b, [("guest", 150), ("exit EPT_VIOLATION", 50)]);
}

/// Host IRQs on the vCPU thread's CPU (thread 10 on host CPU 1): nested,
/// cut at both ends, elsewhere, and while the thread is off its CPU.
const IRQS: [(u64, usize, u32, i32, &str, &str); 22] = [
    (100, 0, 0, 5, "x", "first host event"),
    (150, 0, 1, 10, "irq_handler_exit", "irq=5 ret=handled"),
    (200, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x1"),
    (300, 0, 1, 10, "kvm_exit", "reason EXTERNAL_INTERRUPT rip 0x1 info 0 0"),
    (305, 1, 0, 9, "tracing_mark_write", "req start"),
    (310, 0, 1, 10, "irq_handler_entry", "irq=33 name=nvme0q3"),
    (330, 0, 1, 10, "irq_handler_exit", "irq=33 ret=handled"),
    (340, 0, 1, 10, "softirq_entry", "vec=3 [action=NET_RX]"),
    (350, 0, 1, 10, "irq_handler_entry", "irq=41 name=eth0-rx"),
    (360, 1, 0, 9, "tracing_mark_write", "req end"),
    (370, 0, 1, 10, "irq_handler_exit", "irq=41 ret=handled"),
    (400, 0, 1, 10, "softirq_exit", "vec=3 [action=NET_RX]"),
    (410, 0, 0, 5, "irq_handler_entry", "irq=1 name=i8042"),
    (420, 0, 1, 10, "kvm_entry", "vcpu 0, rip 0x2"),
    (500, 0, 1, 10, "kvm_exit", "reason HLT rip 0x3 info 0 0"),
    (510, 0, 1, 10, "sched_switch", "prev_comm=qemu prev_pid=10 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120"),
    (600, 0, 1, 0, "irq_handler_entry", "irq=33 name=nvme0q3"),
    (620, 0, 1, 0, "irq_handler_exit", "irq=33 ret=handled"),
    (700, 0, 0, 3, "sched_waking", "comm=qemu pid=10 prio=120 target_cpu=001"),
    (720, 0, 1, 0, "sched_switch", "prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=qemu next_pid=10 next_prio=120"),
    (800, 0, 1, 10, "softirq_entry", "vec=1 [action=TIMER]"),
    (1000, 0, 0, 5, "x", "last host event"),
];

fn irqs(t: &[IrqTotal]) -> Vec<(&str, Option<i64>, &str, u64, u64)> {
    let mut v: Vec<_> = t.iter().map(|t| (t.kind, t.number, t.name.as_str(), t.count, t.cycles)).collect();
    v.sort();
    v
}

#[test]
fn host_irqs_on_the_vcpus_cpu() {
    let spec = StallSpec::parse("req start..req end").unwrap();
    let (r, _) = run(ExplainConfig { stalls: vec![spec.clone()], ..vmx_cfg() }, &IRQS);
    let v = &r.vcpus[0];
    // Not irq 33 at 600 (the thread asleep), not irq 1 (another CPU); the
    // softirq's cycles exclude the hard IRQ over it; TIMER is cut at the end.
    assert_eq!(
        irqs(&v.host_irqs),
        [("irq", Some(33), "nvme0q3", 1, 20), ("irq", Some(41), "eth0-rx", 1, 20), ("softirq", Some(1), "TIMER", 1, 200), ("softirq", Some(3), "NET_RX", 1, 10 + 30)]
    );
    assert_eq!((r.irq_events, r.irq_unmatched_exits, r.irq_lost_exits, r.irq_open_at_end), (11, 1, 0, 2));
    // The stall 305..360 ends inside irq 41.
    let s = &r.stalls[0].longest[0];
    assert_eq!((s.start, s.end), (305, 360));
    assert_eq!(irqs(&s.irqs), [("irq", Some(33), "nvme0q3", 1, 20), ("irq", Some(41), "eth0-rx", 1, 10), ("softirq", Some(3), "NET_RX", 1, 10)]);
    assert_eq!(irqs(&r.stalls[0].sums[0].irqs), irqs(&s.irqs));
    // IRQs are a breakdown, not a state: the states are those without them.
    let quiet: Vec<_> = IRQS.iter().copied().filter(|e| !e.4.contains("irq")).collect();
    let (q, _) = run(ExplainConfig { stalls: vec![spec], ..vmx_cfg() }, &quiet);
    let states = |r: &ExplainReport| r.vcpus[0].states.iter().map(|s| (s.state, s.detail.clone(), s.cycles)).collect::<Vec<_>>();
    assert_eq!(states(&r), states(&q));
    assert_eq!(r.stalls[0].longest[0].breakdown, q.stalls[0].longest[0].breakdown);
    let text = text_of(&r);
    assert!(text.contains("softirq 3 NET_RX"), "{text}");
    assert!(text.contains("1 handler exits without their entry"), "{text}");
}

#[test]
fn irqs_without_sched_switch_follow_the_threads_kvm_events() {
    // No sched_switch: the thread is where its kvm events are (CPU 1, then 2).
    let events = [
        (100, 0, 1, 10, "kvm_exit", "reason EXTERNAL_INTERRUPT rip 0x1 info 0 0"),
        (110, 0, 1, 10, "irq_handler_entry", "irq=33 name=nvme0q3"),
        (130, 0, 1, 10, "irq_handler_exit", "irq=33 ret=handled"),
        (140, 0, 2, 10, "kvm_entry", "vcpu 0, rip 0x1"),
        (150, 0, 1, 0, "irq_handler_entry", "irq=33 name=nvme0q3"),
        (160, 0, 1, 0, "irq_handler_exit", "irq=33 ret=handled"),
        (170, 0, 2, 10, "kvm_exit", "reason EXTERNAL_INTERRUPT rip 0x1 info 0 0"),
        (180, 0, 2, 10, "softirq_entry", "vec=9 [action=RCU]"),
        // Lost exits: a new softirq, and a hard IRQ over it whose exit never comes.
        (190, 0, 2, 10, "softirq_entry", "vec=99"),
        (195, 0, 2, 10, "irq_handler_entry", "irq=7 name=x"),
        (196, 0, 2, 10, "softirq_exit", "vec=99"),
        (200, 0, 2, 10, "irq_handler_exit", "irq=7 ret=handled"),
        (210, 0, 2, 10, "softirq_exit", "vec="),
        (300, 0, 0, 5, "x", "end"),
    ];
    let (r, _) = run(ExplainConfig::default(), &events);
    assert_eq!(
        irqs(&r.vcpus[0].host_irqs),
        [("irq", Some(7), "x", 1, 1), ("irq", Some(33), "nvme0q3", 1, 20), ("softirq", Some(9), "RCU", 1, 10), ("softirq", Some(99), "vec 99", 1, 5)]
    );
    // The exit at 200 (its IRQ closed as lost at 196) and the one without a number.
    assert_eq!((r.irq_events, r.irq_unmatched_exits, r.irq_lost_exits, r.irq_open_at_end), (10, 2, 2, 0));
}

#[test]
fn hard_irqs_of_other_lines_nest_and_the_stack_is_bounded() {
    use irq::{IrqEvent, Tracker};
    let mut t = Tracker::default();
    let hard = |num, entry| if entry { IrqEvent::Entry { soft: false, num, name: "x" } } else { IrqEvent::Exit { soft: false, num } };
    // An out-of-band timer (2) inside an in-band handler (1), as the
    // Xenomai guest of the corpus has them; then line 1 again over itself.
    for (ts, ev) in [(10, hard(1, true)), (20, hard(2, true)), (25, hard(2, false)), (40, hard(1, false)), (50, hard(1, true)), (60, hard(1, true)), (65, hard(1, false))] {
        t.event(0, Some(&ev), ts, Some(7));
    }
    let mut got: Vec<(u64, u64)> = t.sums_of(7).unwrap().values().copied().collect();
    got.sort();
    // Line 1: 10+15 (nested) + 10 (its lost exit, closed at 60) + 5; line 2: 5.
    assert_eq!(got, [(1, 5), (3, 40)]);
    assert_eq!((t.lost_exits, t.unmatched_exits), (1, 0));
    // Deeper than MAX_DEPTH: the outermost is dropped; nothing panics.
    for n in 0..3 * irq::MAX_DEPTH as i64 {
        t.event(0, Some(&hard(100 + n, true)), 100 + n as u64, Some(7));
    }
    assert_eq!(t.lost_exits, 1 + 2 * irq::MAX_DEPTH as u64);
    t.event(0, Some(&hard(100, false)), 200, None);
    assert_eq!(t.sums_at(7, 250).values().map(|v| v.0).sum::<u64>(), 4 + 3 * irq::MAX_DEPTH as u64);
    assert_eq!(t.unmatched_exits, 1, "its frame was dropped");
    t.close(0, 300);
    assert_eq!(t.open_at_end, irq::MAX_DEPTH as u64);
}

/// The text report of `r`.
fn text_of(r: &ExplainReport) -> String {
    let mut text = Vec::new();
    write_text(r, None, &mut text).unwrap();
    String::from_utf8(text).unwrap()
}
