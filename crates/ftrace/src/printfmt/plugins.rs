//! The event handlers trace-cmd 3.1.6 installs over the print format:
//! libtraceevent 1.7.1 plugins (plugins/plugin_sched_switch.c,
//! plugin_hrtimer.c, plugin_kvm.c) and trace-cmd's own function override
//! (lib/trace-cmd/trace-ftrace.c, registered after the plugins so it wins
//! over plugin_function.c). Each returns `false` when libtraceevent's
//! handler would return non-zero, in which case the print format is
//! rendered after what the handler wrote.

use super::cfmt::{dec, put_hex as hex, w};

/// `{v}` for an unsigned value.
fn dec_u(out: &mut Vec<u8>, v: u64) {
    crate::put::dec(out, v, 0, b' ');
}
use super::eval::Env;
use crate::format::until_nul;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plugin {
    SchedSwitch,
    SchedWakeup,
    HrtimerExpireEntry,
    HrtimerStart,
    KvmExit,
    KvmEntry,
    Function,
    /// plugin_kmem.c `call_site_handler`.
    KmemCallSite,
    /// plugin_tlb.c `tlb_flush_handler`.
    TlbFlush,
    /// plugin_function.c `trace_stack_handler`.
    KernelStack,
    /// trace-cmd lib/trace-cmd/trace-ftrace.c `fgraph_ent_handler`, its
    /// nested form (`func() {`); the leaf form (`func();`, the exit folded
    /// in) needs the next record and is [`graph_leaf`].
    FuncGraphEntry,
    /// trace-ftrace.c `fgraph_ret_handler`.
    FuncGraphExit,
    /// plugin_kvm.c `kvm_emulate_insn_handler`.
    KvmEmulateInsn,
    /// plugin_kvm.c `kvm_nested_vmexit_handler`.
    KvmNestedVmexit,
    /// plugin_kvm.c `kvm_nested_vmexit_inject_handler`.
    KvmNestedVmexitInject,
    /// plugin_kvm.c `kvm_mmu_get_page_handler`.
    KvmMmuGetPage,
    /// plugin_kvm.c `kvm_mmu_print_role` (sync, unsync, zap, prepare_zap).
    KvmMmuRole,
    /// plugin_futex.c `futex_handler`.
    Futex,
    /// plugin_mac80211.c `drv_bss_info_changed`.
    Mac80211BssInfo,
}

impl Plugin {
    pub(crate) fn find(system: &str, name: &str) -> Option<Plugin> {
        Some(match (system, name) {
            ("sched", "sched_switch") => Plugin::SchedSwitch,
            ("sched", "sched_wakeup" | "sched_wakeup_new") => Plugin::SchedWakeup,
            ("timer", "hrtimer_expire_entry") => Plugin::HrtimerExpireEntry,
            ("timer", "hrtimer_start") => Plugin::HrtimerStart,
            ("kvm", "kvm_exit") => Plugin::KvmExit,
            ("kvm", "kvm_entry") => Plugin::KvmEntry,
            ("ftrace", "function") => Plugin::Function,
            ("kmem", "kfree" | "kmalloc" | "kmalloc_node" | "kmem_cache_alloc" | "kmem_cache_alloc_node" | "kmem_cache_free") => {
                Plugin::KmemCallSite
            }
            ("tlb", "tlb_flush") => Plugin::TlbFlush,
            ("ftrace", "kernel_stack") => Plugin::KernelStack,
            ("ftrace", "funcgraph_entry") => Plugin::FuncGraphEntry,
            ("ftrace", "funcgraph_exit") => Plugin::FuncGraphExit,
            ("kvm", "kvm_emulate_insn") => Plugin::KvmEmulateInsn,
            ("kvm", "kvm_nested_vmexit") => Plugin::KvmNestedVmexit,
            ("kvm", "kvm_nested_vmexit_inject") => Plugin::KvmNestedVmexitInject,
            ("kvmmmu", "kvm_mmu_get_page") => Plugin::KvmMmuGetPage,
            ("kvmmmu", "kvm_mmu_sync_page" | "kvm_mmu_unsync_page" | "kvm_mmu_zap_page" | "kvm_mmu_prepare_zap_page") => {
                Plugin::KvmMmuRole
            }
            ("syscalls", "sys_enter_futex") => Plugin::Futex,
            ("mac80211", "drv_bss_info_changed") => Plugin::Mac80211BssInfo,
            _ => return None,
        })
    }
}

/// Every field a plugin reads, found in the event's fields once when the
/// format compiles ([`PluginFields::resolve`]): the per-event path indexes
/// instead of comparing names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum F {
    PrevComm,
    PrevPid,
    PrevPrio,
    PrevState,
    NextComm,
    NextPid,
    NextPrio,
    Pid,
    Comm,
    Prio,
    Success,
    TargetCpu,
    Timer,
    Hrtimer,
    Now,
    Function,
    Expires,
    Softexpires,
    ExitReason,
    Isa,
    GuestRip,
    Info1,
    Info2,
    VcpuId,
    Rip,
    Ip,
    ParentIp,
    CallSite,
    Pages,
    Reason,
    Caller,
    Func,
    Depth,
    Calltime,
    Rettime,
    Csbase,
    Len,
    Flags,
    Failed,
    Insn,
    ExitCode,
    ExitInfo1,
    ExitInfo2,
    ExitIntInfo,
    ExitIntInfoErr,
    Role,
    RootCount,
    Unsync,
    Created,
    Gfn,
    Uaddr,
    Op,
    Val,
    Utime,
    Uaddr2,
    Val3,
}

const NAMES: [&str; 56] = ["prev_comm", "prev_pid", "prev_prio", "prev_state", "next_comm", "next_pid", "next_prio", "pid", "comm", "prio", "success", "target_cpu", "timer", "hrtimer", "now", "function", "expires", "softexpires", "exit_reason", "isa", "guest_rip", "info1", "info2", "vcpu_id", "rip", "ip", "parent_ip", "call_site", "pages", "reason", "caller", "func", "depth", "calltime", "rettime", "csbase", "len", "flags", "failed", "insn", "exit_code", "exit_info1", "exit_info2", "exit_int_info", "exit_int_info_err", "role", "root_count", "unsync", "created", "gfn", "uaddr", "op", "val", "utime", "uaddr2", "val3"];

impl F {
    fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// Where each [`F`] lies in a record (byte offset and size), when the
/// format has it: found once, so the per-event path reads bytes at known
/// places instead of going through the field list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    offset: usize,
    size: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct PluginFields([Option<Slot>; NAMES.len()]);

impl PluginFields {
    pub(crate) fn resolve(fields: &[crate::format::Field]) -> PluginFields {
        let mut at = [None; NAMES.len()];
        for (slot, name) in at.iter_mut().zip(NAMES) {
            *slot = fields.iter().find(|f| f.name == name).map(|f| Slot { offset: f.offset as usize, size: f.size as usize });
        }
        PluginFields(at)
    }
}

/// The plugin's view of one record: the record and its resolved fields.
pub(crate) struct PEnv<'e, 'a> {
    pub env: &'e Env<'a>,
    pub pf: &'e PluginFields,
}

impl<'a> PEnv<'_, 'a> {
    /// The field's bytes (`Field::raw`): `None` when absent or out of the record.
    #[inline(always)]
    fn raw(&self, f: F) -> Option<&'a [u8]> {
        let s = self.pf.0[f as usize]?;
        self.env.rec.get(s.offset..s.offset.checked_add(s.size)?)
    }
}

/// `tep_get_field_val`: an integer field read unsigned (no sign extension).
#[inline(always)]
fn val(env: &PEnv, f: F) -> Option<u64> {
    env.env.ctx.endian.uint(env.raw(f)?)
}

/// `tep_get_field_val(..., err=1)` writes this when the field is missing.
fn missing(out: &mut Vec<u8>, name: F) {
    w(out, format_args!("CAN'T FIND FIELD \"{}\"", name.name()));
}

/// event-parse.c `get_field_val` with `err` set (what `tep_get_field_val(...,
/// 1)` does): `<CANT FIND FIELD name>` when the event lacks the field,
/// ` name=INVALID` when it is not a 1, 2, 4 or 8-byte number.
fn get_val(env: &PEnv, out: &mut Vec<u8>, f: F) -> Option<u64> {
    match env.raw(f) {
        None if env.pf.0[f as usize].is_none() => {
            w(out, format_args!("<CANT FIND FIELD {}>", f.name()))
        }
        _ => match num(env, f) {
            Some(v) => return Some(v),
            None => w(out, format_args!(" {}=INVALID", f.name())),
        },
    }
    None
}

/// event-parse.c `tep_print_num_field`: `print(value)`, else (with `err`)
/// `CAN'T FIND FIELD "name"`; `false` on failure.
fn print_num(
    env: &PEnv,
    out: &mut Vec<u8>,
    f: F,
    err: bool,
    print: impl FnOnce(&mut Vec<u8>, u64),
) -> bool {
    match num(env, f) {
        Some(v) => {
            print(out, v);
            true
        }
        None => {
            if err {
                missing(out, f);
            }
            false
        }
    }
}

/// plugin_sched_switch.c `write_and_save_comm`: prints the comm and
/// registers it for `pid`, so later lines of that pid show it when the
/// cmdline table does not (`tep_register_comm` never overrides a known pid).
fn comm(env: &PEnv, out: &mut Vec<u8>, name: F, pid: u64) -> bool {
    let Some(c) = comm_bytes(env, name) else { return false };
    crate::put::bytes(out, c);
    if let Some(state) = env.env.ctx.state {
        state.register_comm(pid as i32, c);
    }
    true
}

/// The comm field `name` up to its NUL.
#[inline(always)]
fn comm_bytes<'a>(env: &PEnv<'_, 'a>, name: F) -> Option<&'a [u8]> {
    let f = env.pf.0[name as usize]?;
    let rec = env.env.rec;
    let start = f.offset.min(rec.len());
    let end = start.saturating_add(f.size).min(rec.len());
    Some(until_nul(&rec[start..end]))
}

/// The comms [`run`] registers, registered without printing: what
/// sched_switch (prev, then next) and sched_wakeup teach the state.
pub(crate) fn learn(p: Plugin, pf: &PluginFields, env: &Env) {
    let env = &PEnv { env, pf };
    let Some(state) = env.env.ctx.state else { return };
    let register = |pid: F, name: F| -> bool {
        let Some(pid) = val(env, pid) else { return false };
        if let Some(c) = comm_bytes(env, name) {
            state.register_comm(pid as i32, c);
        }
        true
    };
    match p {
        // run stops at a missing prev_pid, before next's comm.
        Plugin::SchedSwitch if register(F::PrevPid, F::PrevComm) => {
            register(F::NextPid, F::NextComm);
        }
        Plugin::SchedWakeup => {
            register(F::Pid, F::Comm);
        }
        _ => {}
    }
}

/// plugin_sched_switch.c `write_state`.
fn write_state(out: &mut Vec<u8>, v: i32) {
    const STATES: &[u8] = b"SDTtZXxW";
    let mut found = false;
    for (i, &c) in STATES.iter().enumerate() {
        if v & (1 << i) == 0 {
            continue;
        }
        if found {
            out.push(b'|');
        }
        found = true;
        out.push(c);
    }
    if !found {
        out.push(b'R');
    }
}

fn func_field(env: &PEnv, out: &mut Vec<u8>, name: F) {
    // tep_print_func_field: `name/0x(start - value)` (sic: start minus value).
    let Some(v) = val(env, name) else { return };
    match env.env.ctx.kallsyms.and_then(|k| k.lookup_tep(v)) {
        Some((n, addr)) => {
            out.extend_from_slice(n.as_bytes());
            crate::put::bytes(out, b"/");
            crate::put::hex0x(out, addr.wrapping_sub(v));
        }
        None => w(out, format_args!("0x{v:08x}")),
    }
}

fn num_field(env: &PEnv, out: &mut Vec<u8>, name: F, hex_: bool) -> bool {
    match val(env, name) {
        Some(v) if hex_ => {
            out.extend_from_slice(b"0x");
            hex(out, v);
        }
        Some(v) => dec_u(out, v),
        None => return false,
    }
    true
}

pub(crate) fn run(p: Plugin, pf: &PluginFields, env: &Env, out: &mut Vec<u8>) -> bool {
    let env = &PEnv { env, pf };
    match p {
        Plugin::SchedSwitch => {
            let Some(pid) = val(env, F::PrevPid) else {
                out.push(b'!');
                return true;
            };
            if comm(env, out, F::PrevComm, pid) {
                out.push(b':');
            }
            dec(out, pid as i64);
            out.push(b' ');
            if let Some(p) = val(env, F::PrevPrio) {
                out.push(b'[');
                dec(out, p as i32 as i64);
                out.extend_from_slice(b"] ");
            }
            if let Some(s) = val(env, F::PrevState) {
                write_state(out, s as i32);
            }
            out.extend_from_slice(b" ==> ");
            let Some(pid) = val(env, F::NextPid) else {
                out.push(b'!');
                return true;
            };
            if comm(env, out, F::NextComm, pid) {
                out.push(b':');
            }
            dec(out, pid as i64);
            if let Some(p) = val(env, F::NextPrio) {
                out.extend_from_slice(b" [");
                dec(out, p as i32 as i64);
                out.push(b']');
            }
            true
        }
        Plugin::SchedWakeup => {
            let Some(pid) = val(env, F::Pid) else {
                out.push(b'!');
                return true;
            };
            if comm(env, out, F::Comm, pid) {
                out.push(b':');
            }
            dec(out, pid as i64);
            if let Some(p) = val(env, F::Prio) {
                out.extend_from_slice(b" [");
                dec(out, p as i64);
                out.push(b']');
            }
            if let Some(s) = val(env, F::Success) {
                out.extend_from_slice(b" success=");
                dec(out, s as i64);
            }
            if let Some(c) = val(env, F::TargetCpu) {
                w(out, format_args!(" CPU:{c:03}"));
            }
            true
        }
        Plugin::HrtimerExpireEntry | Plugin::HrtimerStart => {
            out.extend_from_slice(b"hrtimer=");
            if !num_field(env, out, F::Timer, true) && !num_field(env, out, F::Hrtimer, true) {
                missing(out, F::Hrtimer);
            }
            if p == Plugin::HrtimerExpireEntry {
                out.extend_from_slice(b" now=");
                if !num_field(env, out, F::Now, false) {
                    missing(out, F::Now);
                }
                if val(env, F::Function).is_some() {
                    out.extend_from_slice(b" function=");
                    func_field(env, out, F::Function);
                }
            } else {
                if val(env, F::Function).is_some() {
                    out.extend_from_slice(b" function=");
                    func_field(env, out, F::Function);
                }
                for f in [F::Expires, F::Softexpires] {
                    w(out, format_args!(" {}=", f.name()));
                    if !num_field(env, out, f, false) {
                        missing(out, f);
                    }
                }
            }
            true
        }
        Plugin::KvmExit => {
            // plugin_kvm.c kvm_exit_handler (add_rip_function prints nothing
            // for one input: trace-cmd's tep_plugin_kvm_get_func maps guest
            // addresses only across host and guest files).
            if !exit_reason_of(env, out, F::ExitReason) {
                return false;
            }
            let Some(rip) = get_val(env, out, F::GuestRip) else {
                return false;
            };
            out.extend_from_slice(b" rip 0x");
            hex(out, rip);
            if let (Some(a), Some(b)) = (num(env, F::Info1), num(env, F::Info2)) {
                out.extend_from_slice(b" info ");
                hex(out, a);
                out.push(b' ');
                hex(out, b);
            }
            true
        }
        Plugin::KvmEntry => {
            // plugin_kvm.c kvm_entry_handler.
            print_num(env, out, F::VcpuId, true, |out, v| {
                out.extend_from_slice(b" vcpu ");
                dec_u(out, v as u32 as u64);
            });
            let Some(rip) = get_val(env, out, F::Rip) else {
                return false;
            };
            out.extend_from_slice(b" rip 0x");
            hex(out, rip);
            true
        }
        Plugin::KvmEmulateInsn => {
            // plugin_kvm.c kvm_emulate_insn_handler, built without udis86:
            // `disassemble` prints the first `len` bytes as `%02x ` and cuts
            // the last blank.
            let Some(rip) = get_val(env, out, F::Rip) else {
                return false;
            };
            let Some(csbase) = get_val(env, out, F::Csbase) else {
                return false;
            };
            let Some(len) = get_val(env, out, F::Len) else {
                return false;
            };
            if get_val(env, out, F::Flags).is_none() {
                return false;
            }
            let Some(failed) = get_val(env, out, F::Failed) else {
                return false;
            };
            // tep_get_field_raw: the bytes from the field's start, which the
            // C reads `len` of whatever the field's size (its buffer holds 15).
            let Some(slot) = env.pf.0[F::Insn as usize] else {
                out.extend_from_slice(b"<CANT FIND FIELD insn>");
                return false;
            };
            let rec = env.env.rec;
            let insn = rec.get(slot.offset..).unwrap_or(&[]);
            let insn = &insn[..insn.len().min(len.min(15) as usize)];
            hex(out, csbase);
            out.push(b':');
            hex(out, rip);
            out.extend_from_slice(b": ");
            for (i, &b) in insn.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                crate::put::hex2(out, b);
            }
            if failed != 0 {
                out.extend_from_slice(b" FAIL");
            }
            true
        }
        Plugin::KvmNestedVmexit => {
            // plugin_kvm.c kvm_nested_vmexit_handler: the rip, then as
            // kvm_nested_vmexit_inject_handler.
            let Some(rip) = get_val(env, out, F::Rip) else {
                return false;
            };
            out.extend_from_slice(b" rip ");
            hex(out, rip);
            nested_vmexit_inject(env, out)
        }
        Plugin::KvmNestedVmexitInject => nested_vmexit_inject(env, out),
        Plugin::KvmMmuGetPage => {
            // plugin_kvm.c kvm_mmu_get_page_handler.
            let Some(created) = get_val(env, out, F::Created) else {
                return false;
            };
            out.extend_from_slice(if created != 0 { b"new " } else { b"existing " });
            let Some(gfn) = get_val(env, out, F::Gfn) else {
                return false;
            };
            out.extend_from_slice(b"sp gfn ");
            hex(out, gfn);
            out.push(b' ');
            mmu_print_role(env, out)
        }
        Plugin::KvmMmuRole => mmu_print_role(env, out),
        Plugin::Futex => futex(env, out),
        Plugin::Mac80211BssInfo => {
            bss_info_changed(env, out);
            true
        }
        Plugin::Function => {
            // plugin_function.c `function_handler`: indent by the parent's
            // depth in this CPU's call stack (option "indent", on), then the
            // function; the parent only with option "parent" (off by default).
            let Some(ip) = val(env, F::Ip) else {
                missing(out, F::Ip);
                out.push(b'!');
                return true;
            };
            let k = env.env.ctx.kallsyms;
            let func = k.and_then(|k| k.lookup_tep(ip)).map(|(n, _)| n);
            let Some(pip) = val(env, F::ParentIp) else {
                missing(out, F::ParentIp);
                out.push(b'!');
                return true;
            };
            let parent = k.and_then(|k| k.lookup_tep(pip)).map(|(n, _)| n);
            let index = match (parent, env.env.ctx.state) {
                (Some(p), Some(state)) => state.functions.add_and_get_index(env.env.ctx.cpu, p, func),
                _ => 0,
            };
            out.extend(std::iter::repeat_n(b' ', index * 3));
            match func {
                Some(n) => out.extend_from_slice(n.as_bytes()),
                None => {
                    out.extend_from_slice(b"0x");
                    hex(out, ip);
                }
            }
            true
        }
        Plugin::KmemCallSite => {
            // `(func+0xoff) ` before the print format, when the call site
            // resolves; the offset printed as `(int)` with %x.
            if let Some(v) = num(env, F::CallSite) {
                if let Some((n, addr)) = env.env.ctx.kallsyms.and_then(|k| k.lookup_tep(v)) {
                    crate::put::bytes(out, b"(");
                    crate::put::bytes(out, n.as_bytes());
                    crate::put::bytes(out, b"+");
                    crate::put::hex0x(out, v.wrapping_sub(addr) as u32 as u64);
                    crate::put::bytes(out, b") ");
                }
            }
            false
        }
        Plugin::TlbFlush => {
            out.extend_from_slice(b"pages=");
            // tep_print_num_field(s, "%ld", ...): the value, read unsigned,
            // as the 64-bit long of the machine running the report.
            match num(env, F::Pages) {
                Some(v) => dec(out, v as i64),
                None => missing(out, F::Pages),
            }
            let Some(v) = num(env, F::Reason) else {
                // tep_get_field_val(..., err=1) then `return -1`: the print
                // format follows what was written.
                match env.raw(F::Reason) {
                    None => w(out, format_args!("<CANT FIND FIELD reason>")),
                    Some(_) => w(out, format_args!(" reason=INVALID")),
                }
                return false;
            };
            out.extend_from_slice(b" reason=");
            // TLB_FLUSH_ON_TASK_SWITCH, TLB_REMOTE_SHOOTDOWN,
            // TLB_LOCAL_SHOOTDOWN, TLB_LOCAL_MM_SHOOTDOWN.
            out.extend_from_slice(match v {
                0 => b"flush on task switch".as_slice(),
                1 => b"remote shootdown",
                2 => b"local shootdown",
                3 => b"local mm shootdown",
                _ => b"",
            });
            w(out, format_args!(" ({})", v as i64));
            true
        }
        Plugin::KernelStack => {
            // One `=> name (addr)` line per return address from `caller` to
            // the record's end, stopping at a -1 (ULONG_MAX, or a low 32
            // bits of all ones: the C tests `(int)addr == -1` too).
            let Some(slot) = env.pf.0[F::Caller as usize] else {
                out.extend_from_slice(b"<CANT FIND FIELD caller>");
                return true;
            };
            out.extend_from_slice(b"<stack trace >\n");
            let ls = env.env.ctx.long_size as usize;
            let rec = env.env.rec;
            let k = env.env.ctx.kallsyms;
            let mut at = slot.offset;
            while let Some(b) = rec.get(at..at.saturating_add(ls)).filter(|_| ls > 0) {
                at += ls;
                let Some(addr) = env.env.ctx.endian.uint(b) else { break };
                if (ls == 8 && addr == u64::MAX) || addr as u32 == u32::MAX {
                    break;
                }
                match k.and_then(|k| k.lookup_tep(addr)) {
                    Some((n, _)) => w(out, format_args!("=> {n} ({addr:x})\n")),
                    None => w(out, format_args!("=> {addr:x}\n")),
                }
            }
            true
        }
        Plugin::FuncGraphEntry => {
            // print_graph_nested: no overhead mark, no time.
            out.extend_from_slice(b"  ");
            out.extend_from_slice(b"           |  ");
            graph_func(env, out, b"() {")
        }
        Plugin::FuncGraphExit => {
            let (Some(ret), Some(call)) = (num(env, F::Rettime), num(env, F::Calltime)) else {
                return graph_missing(env, out, &[F::Rettime, F::Calltime]);
            };
            graph_duration(out, ret.wrapping_sub(call));
            let Some(depth) = num(env, F::Depth) else { return graph_missing(env, out, &[F::Depth]) };
            graph_indent(out, depth);
            out.push(b'}');
            true
        }
    }
}

/// plugin_kvm.c `print_exit_reason`: `reason NAME` from the plugin's own
/// tables by the `isa` field (1 when absent); `false` (nothing more to
/// print by the handler) when the reason field cannot be read.
fn exit_reason_of(env: &PEnv, out: &mut Vec<u8>, f: F) -> bool {
    let Some(reason) = get_val(env, out, f) else {
        return false;
    };
    let isa = num(env, F::Isa).unwrap_or(1);
    match exit_reason(isa as u32 as u64, reason as i32) {
        Some(r) => {
            out.extend_from_slice(b"reason ");
            crate::put::bytes(out, r.as_bytes());
        }
        None => w(out, format_args!("reason UNKNOWN ({reason})")),
    }
    true
}

/// plugin_kvm.c `kvm_nested_vmexit_inject_handler`.
fn nested_vmexit_inject(env: &PEnv, out: &mut Vec<u8>) -> bool {
    if !exit_reason_of(env, out, F::ExitCode) {
        return false;
    }
    for (f, label) in [
        (F::ExitInfo1, " info1 "),
        (F::ExitInfo2, " info2 "),
        (F::ExitIntInfo, " int_info "),
        (F::ExitIntInfoErr, " int_info_err "),
    ] {
        print_num(env, out, f, true, |out, v| {
            out.extend_from_slice(label.as_bytes());
            hex(out, v);
        });
    }
    true
}

/// plugin_kvm.c `kvm_mmu_print_role`: the role word through the plugin's
/// (old) `union kvm_mmu_page_role` bit layout when the file has this
/// machine's byte order, else the word in hex; the root count; then
/// `sync`/`unsync` and a NUL, where trace-cmd's output of the line stops.
fn mmu_print_role(env: &PEnv, out: &mut Vec<u8>) -> bool {
    const ACCESS: [&str; 8] = ["---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux"];
    let Some(v) = get_val(env, out, F::Role) else {
        return false;
    };
    let word = v as u32;
    if env.env.ctx.endian == crate::Endian::NATIVE {
        let bit = |n: u32| (word >> n) & 1 != 0;
        let not = |b: bool| if b { "" } else { "!" };
        w(
            out,
            format_args!(
                "{} q{}{} {}{} {}pae {}nxe {}wp{}{}{}",
                word & 0xf,
                (word >> 5) & 3,
                if bit(7) { " direct" } else { "" },
                ACCESS[((word >> 8) & 7) as usize],
                if bit(11) { " invalid" } else { "" },
                not(bit(4)),
                not(bit(12)),
                not(bit(13)),
                if bit(14) { " smep" } else { "" },
                if bit(15) { " smap" } else { "" },
                if word >> 24 != 0 { " smm" } else { "" },
            ),
        );
    } else {
        w(out, format_args!("WORD: {word:08x}"));
    }
    print_num(env, out, F::RootCount, true, |out, v| {
        w(out, format_args!(" root {} ", v as u32))
    });
    let Some(unsync) = get_val(env, out, F::Unsync) else {
        return false;
    };
    out.extend_from_slice(if unsync != 0 { b"unsync\0" } else { b"sync\0" });
    true
}

/// plugin_futex.c `futex_handler`: the operation's name and flags, then the
/// arguments the operation uses (`futex_op_tbl`, `futex_print`); non-zero
/// (the print format follows) when a field is missing or the command unknown.
fn futex(env: &PEnv, out: &mut Vec<u8>) -> bool {
    const PRIVATE: u64 = 128;
    const REALTIME: u64 = 256;
    // name, then how val, utime (val2), uaddr2, val3 print: 0 not at all,
    // 1 as %llu, 2 as 0x%08llx.
    const OPS: [(&str, [u8; 4]); 13] = [
        ("FUTEX_WAIT", [2, 2, 0, 0]),
        ("FUTEX_WAKE", [1, 0, 0, 0]),
        ("FUTEX_FD", [1, 0, 0, 0]),
        ("FUTEX_REQUEUE", [1, 1, 2, 0]),
        ("FUTEX_CMP_REQUEUE", [1, 1, 2, 2]),
        ("FUTEX_WAKE_OP", [1, 1, 2, 2]),
        ("FUTEX_LOCK_PI", [0, 2, 0, 0]),
        ("FUTEX_UNLOCK_PI", [0, 0, 0, 0]),
        ("FUTEX_TRYLOCK_PI", [0, 0, 0, 0]),
        ("FUTEX_WAIT_BITSET", [2, 2, 0, 2]),
        ("FUTEX_WAKE_BITSET", [1, 0, 0, 2]),
        ("FUTEX_WAIT_REQUEUE_PI", [2, 2, 2, 2]),
        ("FUTEX_CMP_REQUEUE_PI", [1, 1, 2, 2]),
    ];
    let mut v = [0u64; 6];
    for (slot, f) in v
        .iter_mut()
        .zip([F::Uaddr, F::Op, F::Val, F::Utime, F::Uaddr2, F::Val3])
    {
        match get_val(env, out, f) {
            Some(x) => *slot = x,
            None => return false,
        }
    }
    let [uaddr, op, rest @ ..] = v;
    let Some((name, how)) = OPS.get((op & !(PRIVATE | REALTIME)) as usize) else {
        return false;
    };
    w(out, format_args!("op={name}"));
    if op & PRIVATE != 0 {
        out.extend_from_slice(b"|FUTEX_PRIVATE_FLAG");
    }
    if op & REALTIME != 0 {
        out.extend_from_slice(b"|FUTEX_CLOCK_REALTIME");
    }
    w(out, format_args!(" uaddr=0x{uaddr:08x}"));
    for ((label, how), x) in [
        "val",
        if how[1] == 1 { "val2" } else { "utime" },
        "uaddr2",
        "val3",
    ]
    .iter()
    .zip(how)
    .zip(rest)
    {
        match how {
            1 => w(out, format_args!(" {label}={x}")),
            2 => w(out, format_args!(" {label}=0x{x:08x}")),
            _ => {}
        }
    }
    true
}

/// plugin_mac80211.c `drv_bss_info_changed` (fields looked up by name, as
/// the C does for this one event).
fn bss_info_changed(env: &PEnv, out: &mut Vec<u8>) {
    let e = env.env;
    let field = |name: &str| e.fields.iter().find(|f| f.name == name);
    let number = |name: &str| {
        field(name)
            .filter(|f| matches!(f.size, 1 | 2 | 4 | 8))
            .and_then(|f| e.ctx.endian.uint(f.raw(e.rec)?))
    };
    // print_string: `%.*s` of the field (a __data_loc's own offset and length).
    let string = |out: &mut Vec<u8>, name: &str| {
        let Some(f) = field(name) else {
            w(out, format_args!("NOTFOUND:{name}"));
            return;
        };
        let (mut off, mut len) = (f.offset as usize, f.size as usize);
        if f.type_name.starts_with("__data_loc") {
            let Some(v) = f
                .raw(e.rec)
                .filter(|r| matches!(r.len(), 1 | 2 | 4 | 8))
                .and_then(|r| e.ctx.endian.uint(r))
            else {
                out.extend_from_slice(b"invalid_data_loc");
                return;
            };
            off = (v & 0xffff) as usize;
            len = ((v >> 16) & 0xffff) as usize;
        }
        let data = e.rec.get(off..).unwrap_or(&[]);
        crate::put::bytes(out, until_nul(&data[..len.min(data.len())]));
    };
    const INDENT: usize = 65;
    let newline = |out: &mut Vec<u8>| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', INDENT));
    };
    // SF: `name:%d`, SFX: `name:%#x`, nothing when the field is missing.
    let sf = |out: &mut Vec<u8>, name: &str, hex_: bool| {
        if let Some(v) = number(name) {
            match (hex_, v as u32) {
                (true, 0) => w(out, format_args!("{name}:0")),
                (true, x) => w(out, format_args!("{name}:0x{x:x}")),
                (false, x) => w(out, format_args!("{name}:{}", x as i32)),
            }
        }
    };
    string(out, "wiphy_name");
    out.extend_from_slice(b" vif:");
    string(out, "vif_name");
    match number("vif_type") {
        Some(v) => w(out, format_args!("({})", v as u32 as i32)),
        None => out.extend_from_slice(b"CAN'T FIND FIELD \"vif_type\""),
    }
    newline(out);
    for n in ["assoc", "aid", "cts", "shortpre", "shortslot", "dtimper"] {
        sf(out, n, false);
        out.push(b' ');
    }
    newline(out);
    sf(out, "bcnint", false);
    out.push(b' ');
    sf(out, "assoc_cap", true);
    out.push(b' ');
    sf(out, "basic_rates", true);
    out.push(b' ');
    sf(out, "enable_beacon", false);
    newline(out);
    sf(out, "ht_operation_mode", false);
}

/// tep_get_field_val(..., err=1) failing in a graph handler: its message,
/// then `!`, and the handler's non-zero return prints the format after.
fn graph_missing(env: &PEnv, out: &mut Vec<u8>, fields: &[F]) -> bool {
    if let Some(&f) = fields.iter().find(|&&f| num(env, f).is_none()) {
        match env.raw(f) {
            None => w(out, format_args!("<CANT FIND FIELD {}>", f.name())),
            Some(_) => w(out, format_args!(" {}=INVALID", f.name())),
        }
    }
    out.push(b'!');
    false
}

/// `depth * TRACE_GRAPH_INDENT` blanks (the C loop's bound is an `int`).
fn graph_indent(out: &mut Vec<u8>, depth: u64) {
    let n = (depth as i32).max(0) as usize * 2;
    out.extend(std::iter::repeat_n(b' ', n.min(1 << 16)));
}

/// The indent and function of an entry, then `tail` (`() {` or `();`).
fn graph_func(env: &PEnv, out: &mut Vec<u8>, tail: &[u8]) -> bool {
    let Some(depth) = num(env, F::Depth) else { return graph_missing(env, out, &[F::Depth]) };
    graph_indent(out, depth);
    let Some(func) = num(env, F::Func) else { return graph_missing(env, out, &[F::Func]) };
    match env.env.ctx.kallsyms.and_then(|k| k.lookup_tep(func)) {
        Some((n, _)) => out.extend_from_slice(n.as_bytes()),
        None => hex(out, func),
    }
    out.extend_from_slice(tail);
    true
}

/// trace-ftrace.c print_graph_overhead + print_graph_duration: a mark for
/// long calls, microseconds with three decimals while they fit in seven
/// characters, padded to seven, then `|  `.
fn graph_duration(out: &mut Vec<u8>, duration: u64) {
    out.extend_from_slice(match duration {
        d if d > 1_000_000_000 => b"$ ",
        d if d > 1_000_000 => b"# ",
        d if d > 100_000 => b"! ",
        d if d > 10_000 => b"+ ",
        _ => b"  ",
    });
    let start = out.len();
    dec_u(out, duration / 1000);
    if out.len() - start < 7 {
        w(out, format_args!(".{:03}", duration % 1000));
    }
    let len = out.len() - start;
    out.extend_from_slice(b" us ");
    out.extend(std::iter::repeat_n(b' ', 7usize.saturating_sub(len)));
    out.extend_from_slice(b"|  ");
}

/// trace-ftrace.c `get_return_for_leaf`'s test: the (pid, func) an entry
/// or exit record carries, for matching an entry with the record after it.
pub(crate) fn graph_key(pf: &PluginFields, env: &Env) -> Option<u64> {
    num(&PEnv { env, pf }, F::Func)
}

/// trace-ftrace.c `print_graph_entry_leaf`: an entry whose next record (in
/// the buffer's time order) is its own function's exit, by the same pid,
/// prints as one line with the exit's duration; the exit is not printed.
pub(crate) fn graph_leaf(entry: (&PluginFields, &Env), exit: (&PluginFields, &Env), out: &mut Vec<u8>) -> bool {
    let (xpf, xenv) = exit;
    let x = &PEnv { env: xenv, pf: xpf };
    let (Some(ret), Some(call)) = (num(x, F::Rettime), num(x, F::Calltime)) else {
        return graph_missing(x, out, &[F::Rettime, F::Calltime]);
    };
    graph_duration(out, ret.wrapping_sub(call));
    graph_func(&PEnv { env: entry.1, pf: entry.0 }, out, b"();")
}

/// `tep_read_number_field`: only fields of 1, 2, 4 or 8 bytes are numbers.
fn num(env: &PEnv, f: F) -> Option<u64> {
    env.raw(f).filter(|r| matches!(r.len(), 1 | 2 | 4 | 8)).and_then(|r| env.env.ctx.endian.uint(r))
}

/// The per-CPU call stacks of libtraceevent's plugin_function.c, which
/// trace-cmd report uses to indent function-tracer events: a stack of
/// function names per CPU, where an event's parent is looked up from the
/// bottom and its function stored just above it; stale entries above stay,
/// as in the C (`add_child` never clears). Rendering order matters: events of
/// one CPU must be rendered in their order, as a report does.
#[derive(Debug, Default)]
pub struct FunctionStacks {
    stacks: std::sync::Mutex<std::collections::HashMap<u32, Vec<Option<String>>>>,
}

/// What trace-cmd report's plugins remember between events of one input:
/// the function plugin's call stacks and the comms sched events taught it.
/// Output depends on rendering events in report order, as trace-cmd does.
pub struct TraceCmdState {
    pub functions: FunctionStacks,
    /// Append-only, so a looked-up comm stays valid while the state lives.
    comms: elsa::sync::FrozenMap<i32, Box<str>>,
    learned: std::sync::atomic::AtomicUsize,
    /// pids registered lately, direct-mapped by the low bits: a sched_switch
    /// registers two comms, nearly always of pids already known, and this
    /// spares the map's lock and hash.
    recent: [std::sync::atomic::AtomicI32; RECENT],
}

const RECENT: usize = 256;

impl Default for TraceCmdState {
    fn default() -> Self {
        TraceCmdState {
            functions: FunctionStacks::default(),
            comms: Default::default(),
            learned: Default::default(),
            recent: std::array::from_fn(|_| std::sync::atomic::AtomicI32::new(0)),
        }
    }
}

/// A bound on learned comms, so a crafted trace cannot grow the table without end.
const MAX_LEARNED_COMMS: usize = 1 << 20;

impl std::fmt::Debug for TraceCmdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceCmdState").field("functions", &self.functions).field("comms", &self.learned.load(std::sync::atomic::Ordering::Relaxed)).finish()
    }
}

impl TraceCmdState {
    /// `tep_register_comm`: the first comm seen for a pid sticks.
    #[inline]
    pub fn register_comm(&self, pid: i32, comm: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        // pid 0 never reaches here as a fresh slot's value could mislead:
        // slots start at 0 and pid 0 is the idle task, named by its own rule.
        let slot = &self.recent[pid as usize % RECENT];
        if pid != 0 && slot.load(Relaxed) == pid {
            return;
        }
        slot.store(pid, Relaxed);
        self.register_new(pid, comm);
    }

    /// [`register_comm`](Self::register_comm) for a pid not registered lately.
    #[inline(never)]
    fn register_new(&self, pid: i32, comm: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.comms.get(&pid).is_none() && self.learned.load(Relaxed) < MAX_LEARNED_COMMS {
            self.comms.insert(pid, String::from_utf8_lossy(comm).into());
            self.learned.fetch_add(1, Relaxed);
        }
    }

    /// A comm learned from the events rendered so far.
    pub fn comm(&self, pid: i32) -> Option<&str> {
        self.comms.get(&pid)
    }
}

/// A bound on a stack's depth, so a crafted trace cannot grow it without end.
const MAX_FUNCTION_DEPTH: usize = 4096;

impl FunctionStacks {
    /// `add_and_get_index`: the parent's depth (0 when not on the stack, in
    /// which case the stack restarts with the parent at the bottom).
    pub fn add_and_get_index(&self, cpu: u32, parent: &str, child: Option<&str>) -> usize {
        let mut all = self.stacks.lock().unwrap_or_else(|p| p.into_inner());
        let st = all.entry(cpu).or_default();
        let add = |st: &mut Vec<Option<String>>, child: Option<&str>, pos: usize| {
            let Some(child) = child else { return };
            if pos >= MAX_FUNCTION_DEPTH {
                return;
            }
            if pos >= st.len() {
                st.resize(pos + 1, None);
            }
            st[pos] = Some(child.to_string());
        };
        let found = st.iter().take_while(|e| e.is_some()).position(|e| e.as_deref() == Some(parent));
        match found {
            Some(i) => {
                add(st, child, i + 1);
                i
            }
            None => {
                add(st, Some(parent), 0);
                add(st, child, 1);
                0
            }
        }
    }
}

/// plugin_kvm.c `find_exit_reason`: its own (older) VMX/SVM tables, not the
/// kernel's `__print_symbolic` lists. `None` prints "UNKNOWN (n)".
fn exit_reason(isa: u64, val: i32) -> Option<&'static str> {
    const VMX: &[(i32, &str)] = &[
        (0, "EXCEPTION_NMI"), (1, "EXTERNAL_INTERRUPT"), (2, "TRIPLE_FAULT"), (7, "PENDING_INTERRUPT"),
        (8, "NMI_WINDOW"), (9, "TASK_SWITCH"), (10, "CPUID"), (12, "HLT"), (13, "INVD"), (14, "INVLPG"),
        (15, "RDPMC"), (16, "RDTSC"), (18, "VMCALL"), (19, "VMCLEAR"), (20, "VMLAUNCH"), (21, "VMPTRLD"),
        (22, "VMPTRST"), (23, "VMREAD"), (24, "VMRESUME"), (25, "VMWRITE"), (26, "VMOFF"), (27, "VMON"),
        (28, "CR_ACCESS"), (29, "DR_ACCESS"), (30, "IO_INSTRUCTION"), (31, "MSR_READ"), (32, "MSR_WRITE"),
        (36, "MWAIT_INSTRUCTION"), (39, "MONITOR_INSTRUCTION"), (40, "PAUSE_INSTRUCTION"),
        (41, "MCE_DURING_VMENTRY"), (43, "TPR_BELOW_THRESHOLD"), (44, "APIC_ACCESS"), (45, "EOI_INDUCED"),
        (48, "EPT_VIOLATION"), (49, "EPT_MISCONFIG"), (50, "INVEPT"), (52, "PREEMPTION_TIMER"),
        (54, "WBINVD"), (55, "XSETBV"), (56, "APIC_WRITE"), (58, "INVPCID"), (62, "PML_FULL"),
        (63, "XSAVES"), (64, "XRSTORS"),
    ];
    const SVM: &[(i32, &str)] = &[
        (0x000, "EXIT_READ_CR0"), (0x003, "EXIT_READ_CR3"), (0x004, "EXIT_READ_CR4"), (0x008, "EXIT_READ_CR8"),
        (0x010, "EXIT_WRITE_CR0"), (0x013, "EXIT_WRITE_CR3"), (0x014, "EXIT_WRITE_CR4"),
        (0x018, "EXIT_WRITE_CR8"), (0x020, "EXIT_READ_DR0"), (0x021, "EXIT_READ_DR1"),
        (0x022, "EXIT_READ_DR2"), (0x023, "EXIT_READ_DR3"), (0x024, "EXIT_READ_DR4"),
        (0x025, "EXIT_READ_DR5"), (0x026, "EXIT_READ_DR6"), (0x027, "EXIT_READ_DR7"),
        (0x030, "EXIT_WRITE_DR0"), (0x031, "EXIT_WRITE_DR1"), (0x032, "EXIT_WRITE_DR2"),
        (0x033, "EXIT_WRITE_DR3"), (0x034, "EXIT_WRITE_DR4"), (0x035, "EXIT_WRITE_DR5"),
        (0x036, "EXIT_WRITE_DR6"), (0x037, "EXIT_WRITE_DR7"), (0x040, "EXIT_EXCP_DE"),
        (0x041, "EXIT_EXCP_DB"), (0x043, "EXIT_EXCP_BP"), (0x044, "EXIT_EXCP_OF"), (0x045, "EXIT_EXCP_BR"),
        (0x046, "EXIT_EXCP_UD"), (0x047, "EXIT_EXCP_NM"), (0x048, "EXIT_EXCP_DF"), (0x04a, "EXIT_EXCP_TS"),
        (0x04b, "EXIT_EXCP_NP"), (0x04c, "EXIT_EXCP_SS"), (0x04d, "EXIT_EXCP_GP"), (0x04e, "EXIT_EXCP_PF"),
        (0x050, "EXIT_EXCP_MF"), (0x051, "EXIT_EXCP_AC"), (0x052, "EXIT_EXCP_MC"), (0x053, "EXIT_EXCP_XF"),
        (0x060, "EXIT_INTR"), (0x061, "EXIT_NMI"), (0x062, "EXIT_SMI"), (0x063, "EXIT_INIT"),
        (0x064, "EXIT_VINTR"), (0x065, "EXIT_CR0_SEL_WRITE"), (0x066, "EXIT_IDTR_READ"),
        (0x067, "EXIT_GDTR_READ"), (0x068, "EXIT_LDTR_READ"), (0x069, "EXIT_TR_READ"),
        (0x06a, "EXIT_IDTR_WRITE"), (0x06b, "EXIT_GDTR_WRITE"), (0x06c, "EXIT_LDTR_WRITE"),
        (0x06d, "EXIT_TR_WRITE"), (0x06e, "EXIT_RDTSC"), (0x06f, "EXIT_RDPMC"), (0x070, "EXIT_PUSHF"),
        (0x071, "EXIT_POPF"), (0x072, "EXIT_CPUID"), (0x073, "EXIT_RSM"), (0x074, "EXIT_IRET"),
        (0x075, "EXIT_SWINT"), (0x076, "EXIT_INVD"), (0x077, "EXIT_PAUSE"), (0x078, "EXIT_HLT"),
        (0x079, "EXIT_INVLPG"), (0x07a, "EXIT_INVLPGA"), (0x07b, "EXIT_IOIO"), (0x07c, "EXIT_MSR"),
        (0x07d, "EXIT_TASK_SWITCH"), (0x07e, "EXIT_FERR_FREEZE"), (0x07f, "EXIT_SHUTDOWN"),
        (0x080, "EXIT_VMRUN"), (0x081, "EXIT_VMMCALL"), (0x082, "EXIT_VMLOAD"), (0x083, "EXIT_VMSAVE"),
        (0x084, "EXIT_STGI"), (0x085, "EXIT_CLGI"), (0x086, "EXIT_SKINIT"), (0x087, "EXIT_RDTSCP"),
        (0x088, "EXIT_ICEBP"), (0x089, "EXIT_WBINVD"), (0x08a, "EXIT_MONITOR"), (0x08b, "EXIT_MWAIT"),
        (0x08c, "EXIT_MWAIT_COND"), (0x08d, "EXIT_XSETBV"), (0x400, "EXIT_NPF"),
        (0x401, "EXIT_AVIC_INCOMPLETE_IPI"), (0x402, "EXIT_AVIC_UNACCELERATED_ACCESS"), (-1, "EXIT_ERR"),
    ];
    let table = match isa {
        1 => VMX,
        2 => SVM,
        _ => return Some("UNKNOWN-ISA"),
    };
    table.iter().find(|e| e.0 == val).map(|e| e.1)
}

#[cfg(test)]
mod function_stack_tests {
    use super::FunctionStacks;

    #[test]
    fn indents_like_plugin_function() {
        let s = FunctionStacks::default();
        // a → b → c, then back to b's child d: depth by the parent's position.
        assert_eq!(s.add_and_get_index(0, "a", Some("b")), 0);
        assert_eq!(s.add_and_get_index(0, "b", Some("c")), 1);
        assert_eq!(s.add_and_get_index(0, "c", Some("x")), 2);
        assert_eq!(s.add_and_get_index(0, "a", Some("d")), 0);
        // Stale entries above stay, as add_child never clears: c is still at 2.
        assert_eq!(s.add_and_get_index(0, "c", Some("y")), 2);
        // Unknown parent: the stack restarts from it.
        assert_eq!(s.add_and_get_index(0, "z", Some("w")), 0);
        assert_eq!(s.add_and_get_index(0, "w", None), 1);
        // CPUs are independent.
        assert_eq!(s.add_and_get_index(1, "w", Some("q")), 0);
    }
}

/// The functions libtraceevent 1.7.1's plugins register with
/// `tep_register_print_function`, callable from print formats. Evaluated
/// as event-parse.c `process_defined_func`: numeric arguments by
/// `eval_num_arg`; as a number the call gives its return value, as a `%s`
/// argument it prints what the function writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrintFunc {
    /// plugin_kvm.c `process_is_writable_pte`.
    IsWritablePte,
    /// plugin_jbd2.c `process_jbd2_dev_to_name`.
    Jbd2DevToName,
    /// plugin_jbd2.c `process_jiffies_to_msecs`.
    JiffiesToMsecs,
    /// plugin_xen.c `process_xen_hypercall_name`.
    XenHypercallName,
    /// plugin_cfg80211.c `process___le16_to_cpup`.
    Le16ToCpup,
    /// plugin_scsi.c `process_scsi_trace_parse_cdb`.
    ScsiTraceParseCdb,
}

impl PrintFunc {
    pub(crate) fn find(name: &str) -> Option<PrintFunc> {
        Some(match name {
            "is_writable_pte" => PrintFunc::IsWritablePte,
            "jbd2_dev_to_name" => PrintFunc::Jbd2DevToName,
            "jiffies_to_msecs" => PrintFunc::JiffiesToMsecs,
            "xen_hypercall_name" => PrintFunc::XenHypercallName,
            "__le16_to_cpup" => PrintFunc::Le16ToCpup,
            "scsi_trace_parse_cdb" => PrintFunc::ScsiTraceParseCdb,
            _ => return None,
        })
    }

    /// The number of parameters it was registered with.
    pub(crate) fn nr_args(self) -> usize {
        match self {
            PrintFunc::ScsiTraceParseCdb => 3,
            _ => 1,
        }
    }
}

/// Runs `f` on `args` evaluated in `env`: its return value, and what it
/// writes into `out` (dropped when `None`, as for a numeric use). Pointer
/// arguments are offsets into the record (`__get_dynamic_array(...)`
/// evaluates to one); any other pointer the C would dereference reads nothing.
pub(crate) fn call(
    f: PrintFunc,
    env: &Env,
    args: &[super::parse::Expr],
    out: Option<&mut Vec<u8>>,
) -> u64 {
    let arg = |i: usize| args.get(i).map_or(0, |a| env.num(a));
    let ptr_arg = |i: usize| -> Option<&[u8]> {
        match args.get(i)? {
            super::parse::Expr::DynArray(_) => {
                env.rec.get(usize::try_from(env.num(&args[i])).ok()?..)
            }
            _ => None,
        }
    };
    let mut sink = Vec::new();
    let out = out.unwrap_or(&mut sink);
    match f {
        PrintFunc::IsWritablePte => arg(0) & 2,
        PrintFunc::Jbd2DevToName => {
            let dev = arg(0) as u32;
            w(
                out,
                format_args!("{}:{}", (dev >> 20) as i32, dev & ((1 << 20) - 1)),
            );
            0
        }
        PrintFunc::JiffiesToMsecs => {
            let j = arg(0);
            dec(out, j as i64);
            j
        }
        PrintFunc::XenHypercallName => {
            out.extend_from_slice(xen_hypercall_name(arg(0) as u32).as_bytes());
            0
        }
        PrintFunc::Le16ToCpup => ptr_arg(0)
            .and_then(|b| b.get(..2))
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u64),
        PrintFunc::ScsiTraceParseCdb => {
            let cdb = ptr_arg(1).unwrap_or(&[]);
            scsi_trace_parse_cdb(out, cdb);
            0
        }
    }
}

/// plugin_xen.c `xen_hypercall_name`: `(name)` by hypercall number, else "".
fn xen_hypercall_name(op: u32) -> &'static str {
    const NAMES: [&str; 56] = [
        "(set_trap_table)",
        "(mmu_update)",
        "(set_gdt)",
        "(stack_switch)",
        "(set_callbacks)",
        "(fpu_taskswitch)",
        "(sched_op_compat)",
        "(dom0_op)",
        "(set_debugreg)",
        "(get_debugreg)",
        "(update_descriptor)",
        "",
        "(memory_op)",
        "(multicall)",
        "(update_va_mapping)",
        "(set_timer_op)",
        "(event_channel_op_compat)",
        "(xen_version)",
        "(console_io)",
        "(physdev_op_compat)",
        "(grant_table_op)",
        "(vm_assist)",
        "(update_va_mapping_otherdomain)",
        "(iret)",
        "(vcpu_op)",
        "(set_segment_base)",
        "(mmuext_op)",
        "(acm_op)",
        "(nmi_op)",
        "(sched_op)",
        "(callback_op)",
        "(xenoprof_op)",
        "(event_channel_op)",
        "(physdev_op)",
        "(hvm_op)",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "(arch_0)",
        "(arch_1)",
        "(arch_2)",
        "(arch_3)",
        "(arch_4)",
        "(arch_5)",
        "(arch_6)",
        "(arch_7)",
    ];
    NAMES.get(op as usize).copied().unwrap_or("")
}

/// plugin_scsi.c `scsi_trace_parse_cdb`: the command block's fields by
/// opcode, each form ending with a NUL (`trace_seq_putc(p, 0)`), where
/// trace-cmd's output of the line stops. Bytes past the record read as 0.
fn scsi_trace_parse_cdb(out: &mut Vec<u8>, cdb: &[u8]) {
    let b = |i: usize| cdb.get(i).copied().unwrap_or(0) as u64;
    // Big-endian number from bytes [from, to).
    let be = |from: usize, to: usize| (from..to).fold(0u64, |v, i| (v << 8) | b(i));
    // Four bytes as the C assembles them (`cdb[i] << 24` is an int, so a
    // high bit set sign-extends into the 64-bit sector_t).
    let s32 = |from: usize| be(from, from + 4) as u32 as i32 as i64 as u64;
    // Eight bytes: the high four as u64, ORed with the low four as above.
    let s64 = |from: usize| (be(from, from + 4) << 32) | s32(from + 4);
    let sa32 = (b(8) << 8) | b(9);
    match b(0) {
        // READ_6, WRITE_6 (scsi_trace_rw6)
        0x08 | 0x0a => w(
            out,
            format_args!("lba={} txlen={}", ((b(1) & 0x1f) << 16) | be(2, 4), b(4)),
        ),
        // READ_10, VERIFY, WRITE_10, WRITE_SAME (scsi_trace_rw10)
        op @ (0x28 | 0x2f | 0x2a | 0x41) => {
            w(
                out,
                format_args!("lba={} txlen={} protect={}", s32(2), be(7, 9), b(1) >> 5),
            );
            if op == 0x41 {
                w(out, format_args!(" unmap={}", (b(1) >> 3) & 1));
            }
        }
        // READ_12, VERIFY_12, WRITE_12 (scsi_trace_rw12)
        0xa8 | 0xaf | 0xaa => w(
            out,
            format_args!("lba={} txlen={} protect={}", s32(2), s32(6), b(1) >> 5),
        ),
        // READ_16, VERIFY_16, WRITE_16, WRITE_SAME_16 (scsi_trace_rw16)
        op @ (0x88 | 0x8f | 0x8a | 0x93) => {
            w(
                out,
                format_args!("lba={} txlen={} protect={}", s64(2), s32(10), b(1) >> 5),
            );
            if op == 0x93 {
                w(out, format_args!(" unmap={}", (b(1) >> 3) & 1));
            }
        }
        // UNMAP (scsi_trace_unmap): `(regions - 8) / 16` in unsigned int.
        0x42 => w(
            out,
            format_args!("regions={}", (be(7, 9) as u32).wrapping_sub(8) / 16),
        ),
        // SERVICE_ACTION_IN_16 (scsi_trace_service_action_in)
        0x9e => match b(1) & 0x1f {
            sa @ (0x10 | 0x12) => {
                let cmd = if sa == 0x10 {
                    "READ_CAPACITY_16"
                } else {
                    "GET_LBA_STATUS"
                };
                w(
                    out,
                    format_args!("{cmd} lba={} alloc_len={}", s64(2), be(10, 14)),
                );
            }
            _ => out.extend_from_slice(b"UNKNOWN"),
        },
        // VARIABLE_LENGTH_CMD (scsi_trace_varlen, scsi_trace_rw32)
        0x7f if matches!(sa32, 0x09 | 0x0a | 0x0b | 0x0d) => {
            let cmd = match sa32 {
                0x09 => "READ",
                0x0a => "VERIFY",
                0x0b => "WRITE",
                _ => "WRITE_SAME",
            };
            w(
                out,
                format_args!(
                    "{cmd}_32 lba={} txlen={} protect={} ei_lbrt={}",
                    s64(12),
                    s32(28),
                    b(10) >> 5,
                    be(20, 24)
                ),
            );
            if sa32 == 0x0d {
                w(out, format_args!(" unmap={}", (b(10) >> 3) & 1));
            }
        }
        // scsi_trace_misc
        _ => out.push(b'-'),
    }
    out.push(0);
}
