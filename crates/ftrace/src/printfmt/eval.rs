//! Evaluation of a compiled print format against one record.
//!
//! trace-cmd mode follows libtraceevent 1.7.1 (`eval_num_arg`,
//! `print_str_arg`, `print_arg_pointer`): fields are read unsigned, casts
//! only mask, `^` evaluates to 0, `%p` prints like glibc. Kernel mode
//! follows the C the kernel compiled: signed fields are sign-extended,
//! casts truncate/extend, `%p` prints the raw address (the kernel hashes it
//! with a boot-time key, which cannot be reproduced).

use super::addr;
use super::cfmt::{put_int, put_str, w, Kind, Piece, Spec};
use super::parse::{strtoull, Expr, Op};
use super::RenderCtx;
use crate::format::{until_nul, Field, FieldKind};

pub(crate) struct Env<'a> {
    pub rec: &'a [u8],
    pub fields: &'a [Field],
    pub ctx: &'a RenderCtx<'a>,
    pub kernel: bool,
}

/// Names that print formats use without the kernel converting them to
/// numbers: libtraceevent's `flags[]` table plus enum hrtimer_mode
/// (include/linux/hrtimer_types.h), which 6.x hrtimer_start prints by name.
const KNOWN: &[(&str, u64)] = &[
    ("HI_SOFTIRQ", 0), ("TIMER_SOFTIRQ", 1), ("NET_TX_SOFTIRQ", 2), ("NET_RX_SOFTIRQ", 3),
    ("BLOCK_SOFTIRQ", 4), ("IRQ_POLL_SOFTIRQ", 5), ("TASKLET_SOFTIRQ", 6), ("SCHED_SOFTIRQ", 7),
    ("HRTIMER_SOFTIRQ", 8), ("RCU_SOFTIRQ", 9), ("HRTIMER_NORESTART", 0), ("HRTIMER_RESTART", 1),
];
const KERNEL_ONLY: &[(&str, u64)] = &[
    ("HRTIMER_MODE_ABS", 0), ("HRTIMER_MODE_REL", 1), ("HRTIMER_MODE_PINNED", 2), ("HRTIMER_MODE_SOFT", 4),
    ("HRTIMER_MODE_HARD", 8), ("HRTIMER_MODE_ABS_PINNED", 2), ("HRTIMER_MODE_REL_PINNED", 3),
    ("HRTIMER_MODE_ABS_SOFT", 4), ("HRTIMER_MODE_REL_SOFT", 5), ("HRTIMER_MODE_ABS_PINNED_SOFT", 6),
    ("HRTIMER_MODE_REL_PINNED_SOFT", 7), ("HRTIMER_MODE_ABS_HARD", 8), ("HRTIMER_MODE_REL_HARD", 9),
    ("HRTIMER_MODE_ABS_PINNED_HARD", 10), ("HRTIMER_MODE_REL_PINNED_HARD", 11),
];

/// libtraceevent `eval_flag`: a symbol-table value, -1 when unknown.
pub(crate) fn eval_flag(v: &str, kernel: bool) -> i64 {
    if v.as_bytes().first().is_some_and(|c| c.is_ascii_digit()) {
        return strtoull(v) as i64;
    }
    let hit = KNOWN.iter().chain(if kernel { KERNEL_ONLY } else { &[] }).find(|(n, _)| *n == v);
    match hit {
        Some(&(_, x)) => x as i64,
        None if kernel && v.starts_with('-') => strtoull(v) as i64,
        None => -1,
    }
}

/// libtraceevent `eval_type_str`: casts only mask unsigned widths.
pub(crate) fn tep_cast(val: u64, ty: &str, pointer: bool) -> u64 {
    let ty = ty.trim();
    if ty.len() < 2 {
        return val;
    }
    if pointer {
        return match ty.strip_suffix('*') {
            Some(r) => tep_cast(val, r.trim_end(), false),
            None => val,
        };
    }
    if ty.ends_with('*') || ty.starts_with("struct") {
        return val;
    }
    match ty {
        "u8" => return val & 0xff,
        "u16" => return val & 0xffff,
        "u32" => return val & 0xffff_ffff,
        "u64" | "s64" => return val,
        "s8" => return val & 0xff,
        "s16" => return val & 0xffff,
        "s32" => return val & 0xffff_ffff,
        _ => {}
    }
    match ty.strip_prefix("unsigned ").unwrap_or(ty) {
        "char" => val & 0xff,
        "short" => val & 0xffff,
        "int" => val & 0xffff_ffff,
        _ => val,
    }
}

fn sext(v: u64, bits: u32) -> u64 {
    if bits == 0 || bits >= 64 {
        v
    } else {
        (((v << (64 - bits)) as i64) >> (64 - bits)) as u64
    }
}

/// A C cast as the kernel compiles it.
fn kernel_cast(val: u64, ty: &str, long_size: u8) -> u64 {
    let ty = ty.trim();
    if ty.ends_with('*') {
        return if long_size == 4 { val & 0xffff_ffff } else { val };
    }
    let unsigned = ty.starts_with("unsigned") || ty.starts_with('u') || ty == "bool" || ty.starts_with("__u");
    let base = ty.trim_start_matches("unsigned ").trim_start_matches("signed ").trim_start_matches("__");
    let bits = match base {
        "char" | "u8" | "s8" | "bool" => 8,
        "short" | "u16" | "s16" => 16,
        "int" | "u32" | "s32" | "unsigned" | "signed" => 32,
        "long" | "unsigned long" => long_size as u32 * 8,
        "long long" | "u64" | "s64" => 64,
        _ => return val,
    };
    let m = if bits >= 64 { val } else { val & ((1u64 << bits) - 1) };
    if unsigned { m } else { sext(m, bits) }
}

impl<'a> Env<'a> {
    fn field(&self, i: usize) -> Option<&'a Field> {
        self.fields.get(i)
    }

    #[inline]
    fn read(&self, off: usize, size: usize) -> Option<u64> {
        let b = self.rec.get(off..off.checked_add(size)?)?;
        self.ctx.endian.uint(b)
    }

    #[inline]
    fn read_field(&self, f: &Field) -> u64 {
        let v = self.read(f.offset as usize, f.size as usize).unwrap_or(0);
        if self.kernel && f.signed && f.kind == FieldKind::Int {
            sext(v, f.size * 8)
        } else {
            v
        }
    }

    /// Offset and length of a dynamic field (`dynamic_offset_field`): (0, 0)
    /// when the field lies outside the record.
    fn dyn_of(&self, f: &Field) -> (usize, usize) {
        f.dyn_range(self.rec, self.ctx.endian).unwrap_or((0, 0))
    }

    /// [`num`](Self::num) with the commonest argument, a field, read in
    /// line: `num` is recursive and never inlined, and its call costs more
    /// than the read.
    #[inline(always)]
    fn leaf(&self, e: &Expr) -> u64 {
        match e {
            Expr::Field(i) => self.field(*i).map_or(0, |f| self.read_field(f)),
            _ => self.num(e),
        }
    }

    /// The value of `e` as libtraceevent's `eval_num_arg` computes it. The
    /// arms every record takes (numbers, fields, casts, operators) are
    /// here; the rest is in [`num_other`](Self::num_other), so that this
    /// recursive function stays small (its frame is set up at every node).
    pub(crate) fn num(&self, e: &Expr) -> u64 {
        match e {
            Expr::Num(v, _) => *v,
            Expr::Field(i) => self.field(*i).map_or(0, |f| self.read_field(f)),
            Expr::Cast { ty, item, tep_mask } => {
                let v = self.leaf(item);
                if self.kernel { kernel_cast(v, ty, self.ctx.long_size) } else { v & tep_mask }
            }
            Expr::Op { op, left, right, .. } if !matches!(op, Op::Index | Op::Cond) => {
                let l = self.num(left);
                let r = self.num(right);
                apply(*op, l, r, self.kernel)
            }
            // `REC->array[N]`, the commonest index (sys_enter's args).
            Expr::Op { op: Op::Index, left, right, .. } => match (&**left, &**right) {
                (Expr::Field(i), Expr::Num(n, _)) => match self.field(*i) {
                    Some(f) => self.element(f, *n),
                    None => 0,
                },
                _ => self.num_other(e),
            },
            _ => self.num_other(e),
        }
    }

    /// Element `idx` of array field `f`, as [`index`](Self::index) reads it
    /// without a cast.
    #[inline]
    fn element(&self, f: &Field, idx: u64) -> u64 {
        let es = f.elem_size(self.ctx.long_size);
        let Ok(off) = usize::try_from((f.offset as u64).wrapping_add(idx.wrapping_mul(es as u64))) else { return 0 };
        let v = self.read(off, es as usize).unwrap_or(0);
        if self.kernel && f.signed { sext(v, es * 8) } else { v }
    }
}

/// A binary or unary operator on evaluated operands (`eval_num_arg`'s
/// operator cases; `^` only in kernel style: libtraceevent gives 0).
#[inline(always)]
pub(crate) fn apply(op: Op, l: u64, r: u64, kernel: bool) -> u64 {
        match op {
            Op::Not => (r == 0) as u64,
            Op::BitNot => !r,
            Op::BitOr => l | r,
            Op::Or => (l != 0 || r != 0) as u64,
            Op::BitAnd => l & r,
            Op::And => (l != 0 && r != 0) as u64,
            Op::Lt => (l < r) as u64,
            Op::Shl => l.wrapping_shl(r as u32),
            Op::Le => (l <= r) as u64,
            Op::Gt => (l > r) as u64,
            Op::Shr => l.wrapping_shr(r as u32),
            Op::Ge => (l >= r) as u64,
            Op::Eq => (l == r) as u64,
            Op::Ne => (l != r) as u64,
            Op::Sub => l.wrapping_sub(r),
            Op::Add => l.wrapping_add(r),
            Op::Div => l.checked_div(r).unwrap_or(0),
            Op::Mod => l.checked_rem(r).unwrap_or(0),
            Op::Mul => l.wrapping_mul(r),
            Op::Xor if kernel => l ^ r,
            _ => 0,
        }
}

impl<'a> Env<'a> {
    /// [`num`](Self::num) for the rarer nodes.
    #[inline(never)]
    fn num_other(&self, e: &Expr) -> u64 {
        match e {
            Expr::Atom(a) => {
                let v = strtoull(a);
                if v != 0 || a.as_bytes().first().is_some_and(|c| c.is_ascii_digit()) {
                    return v;
                }
                if self.kernel {
                    let x = eval_flag(a, true);
                    return if x < 0 { 0 } else { x as u64 };
                }
                // libtraceevent `test_for_symbol`: a kernel symbol's address.
                self.ctx.kallsyms.and_then(|k| k.addr_of(a)).unwrap_or(0)
            }
            Expr::SizeofLong => self.ctx.long_size as u64,
            Expr::Func { func, args } => super::plugins::call(*func, self, args, None),
            Expr::DynArrayLen(i) => self.field(*i).map_or(0, |f| self.dyn_of(f).1 as u64),
            Expr::DynArray(i) => self.field(*i).map_or(0, |f| self.dyn_of(f).0 as u64),
            Expr::Op { op: Op::Index, left, right, .. } => self.index(left, right),
            Expr::Op { op: Op::Cond, left, right, .. } => {
                let c = self.num(left);
                match &**right {
                    Expr::Op { left: a, right: b, .. } => self.num(if c != 0 { a } else { b }),
                    _ => 0,
                }
            }
            // Null, NoField and the printing-only nodes.
            _ => 0,
        }
    }

    /// `left[right]` on a field or dynamic array (eval_num_arg's `[` case).
    fn index(&self, left: &Expr, right: &Expr) -> u64 {
        let idx = self.num(right);
        let mut larg = left;
        let mut typearg = None;
        while let Expr::Cast { ty, item, .. } = larg {
            typearg.get_or_insert(ty);
            larg = item;
        }
        let (off, size, signed) = match larg {
            Expr::DynArray(i) => {
                let Some(f) = self.field(*i) else { return 0 };
                let es = match f.elem_size(self.ctx.long_size) {
                    0 => self.ctx.long_size as u32,
                    n => n,
                };
                ((self.dyn_of(f).0 as u64).wrapping_add(idx), es, f.signed)
            }
            Expr::Field(i) => {
                let Some(f) = self.field(*i) else { return 0 };
                let es = f.elem_size(self.ctx.long_size);
                ((f.offset as u64).wrapping_add(idx.wrapping_mul(es as u64)), es, f.signed)
            }
            _ => return 0,
        };
        let Ok(off) = usize::try_from(off) else { return 0 };
        let mut v = self.read(off, size as usize).unwrap_or(0);
        if self.kernel && signed {
            v = sext(v, size * 8);
        }
        match typearg {
            Some(ty) if self.kernel => kernel_cast(v, ty, self.ctx.long_size),
            Some(ty) => tep_cast(v, ty, true),
            None => v,
        }
    }

    /// Runs the pieces of a print format.
    pub(crate) fn print(&self, out: &mut Vec<u8>, pieces: &[Piece], args: &[Expr], bstrings: &[Option<Vec<u8>>]) {
        for p in pieces {
            match p {
                Piece::Lit(b) => crate::put::bytes(out, b),
                Piece::Conv { spec, kind, arg, len_arg } => {
                    let Some(a) = args.get(*arg) else { continue };
                    let star = len_arg.and_then(|i| args.get(i)).map(|e| self.num(e) as i32 as i64);
                    let bstr = bstrings.get(*arg).and_then(|b| b.as_deref());
                    match kind {
                        Kind::Digit => {
                            let v = self.leaf(a);
                            let bits = match spec.ls {
                                -2 => 8,
                                -1 => 16,
                                0 => 32,
                                1 if self.kernel => self.ctx.long_size as u32 * 8,
                                _ => 64,
                            };
                            put_int(out, spec, star, v, bits);
                        }
                        Kind::Str => match bstr {
                            Some(b) => put_str(out, spec, star, b),
                            None => self.print_str(out, spec, star, a),
                        },
                        Kind::Pointer => match bstr {
                            Some(b) => out.extend_from_slice(b),
                            None => self.print_pointer(out, spec, a, star),
                        },
                    }
                }
            }
        }
    }

    fn print_str(&self, out: &mut Vec<u8>, spec: &Spec, star: Option<i64>, e: &Expr) {
        match e {
            Expr::Atom(a) | Expr::Num(_, a) => put_str(out, spec, star, a.as_bytes()),
            Expr::Field(i) => {
                let Some(f) = self.field(*i) else { return };
                if !f.is_array() && f.size == self.ctx.long_size as u32 {
                    // A pointer: a constant string the printk table knows, else hex.
                    let addr = self.read_field(f);
                    match self.ctx.printk.and_then(|p| p.get(addr)) {
                        Some(s) => out.extend_from_slice(s.as_bytes()),
                        None => crate::put::hex(out, addr),
                    }
                    return;
                }
                let start = (f.offset as usize).min(self.rec.len());
                let end = if f.size == 0 { self.rec.len() } else { (start + f.size as usize).min(self.rec.len()) };
                put_str(out, spec, star, until_nul(&self.rec[start..end]));
            }
            Expr::Flags { field, delim, flags } => {
                let mut val = self.num(field);
                let delim = delim.as_deref().unwrap_or("");
                let mut printed = false;
                if self.kernel {
                    // kernel/trace/trace_output.c trace_print_flags_seq
                    for f in flags {
                        if val == 0 {
                            break;
                        }
                        let (mask, name) = (f.kernel as u64, &f.name);
                        if val & mask != mask {
                            continue;
                        }
                        val &= !mask;
                        if printed {
                            out.extend_from_slice(delim.as_bytes());
                        }
                        put_str(out, spec, star, name.as_bytes());
                        printed = true;
                    }
                } else {
                    for f in flags {
                        let (fval, name) = (f.tep, &f.name);
                        if val == 0 && fval < 0 {
                            put_str(out, spec, star, name.as_bytes());
                            break;
                        }
                        if fval > 0 && val & fval as u64 == fval as u64 {
                            if printed {
                                out.extend_from_slice(delim.as_bytes());
                            }
                            put_str(out, spec, star, name.as_bytes());
                            printed = true;
                            val &= !(fval as u64);
                        }
                    }
                }
                if val != 0 {
                    if printed {
                        out.extend_from_slice(delim.as_bytes());
                    }
                    crate::put::hex0x(out, val);
                }
            }
            Expr::Symbol { field, syms } => {
                let val = self.num(field);
                match syms.iter().find(|s| (if self.kernel { s.kernel } else { s.tep }) as u64 == val) {
                    Some(s) => put_str(out, spec, star, s.name.as_bytes()),
                    None => crate::put::hex0x(out, val),
                }
            }
            Expr::Hex { as_str, field, size } => {
                let Some(start) = self.array_start(field) else { return };
                let len = self.num(size);
                let data = self.rec.get(start..).unwrap_or(&[]);
                for (i, &b) in data.iter().take(len.min(1 << 20) as usize).enumerate() {
                    if i > 0 && !as_str {
                        out.push(b' ');
                    }
                    crate::put::hex2(out, b);
                }
            }
            Expr::IntArray { field, count, el_size } => {
                let Some(start) = self.array_start(field) else { return };
                let n = self.num(count).min(1 << 20) as usize;
                let es = self.num(el_size) as usize;
                // kernel/trace/trace_output.c trace_print_array_seq prints `{0x1,0x2}`.
                if self.kernel {
                    out.push(b'{');
                }
                let mut off = start;
                for i in 0..n {
                    if i > 0 {
                        out.push(if self.kernel { b',' } else { b' ' });
                    }
                    let es = if matches!(es, 1 | 2 | 4 | 8) { es } else { 1 };
                    let Some(v) = self.read(off, es) else { break };
                    if self.kernel {
                        w(out, format_args!("0x{v:x}"));
                    } else {
                        w(out, format_args!("{v}"));
                    }
                    off += es;
                }
                if self.kernel {
                    out.push(b'}');
                }
            }
            Expr::Str(Some(i)) => {
                let Some(f) = self.field(*i) else { return };
                let (off, len) = self.dyn_of(f);
                if len == 0 {
                    return;
                }
                put_str(out, spec, star, until_nul(&self.rec[off..]));
            }
            Expr::Bitmask(Some(i)) => {
                let Some(f) = self.field(*i) else { return };
                let (off, len) = self.dyn_of(f);
                let data = &self.rec[off..off + len];
                // Highest byte first, a comma every 32 bits (print_bitmask_to_seq).
                let mut s = Vec::with_capacity(len * 2 + len / 4);
                for n in 0..len {
                    let idx = if self.ctx.endian == crate::Endian::Big { n } else { len - 1 - n };
                    if n > 0 && (len - n) % 4 == 0 {
                        s.push(b',');
                    }
                    crate::put::hex2(&mut s, data[idx]);
                }
                put_str(out, spec, star, &s);
            }
            Expr::Op { op: Op::Cond, left, right, .. } => {
                let c = self.num(left);
                if let Expr::Op { left: a, right: b, .. } = &**right {
                    self.print_str(out, spec, star, if c != 0 { a } else { b });
                }
            }
            // process_defined_func writes straight to the line: no width.
            Expr::Func { func, args } => {
                super::plugins::call(*func, self, args, Some(out));
            }
            _ => {}
        }
    }

    fn array_start(&self, e: &Expr) -> Option<usize> {
        match e {
            Expr::DynArray(i) => Some(self.dyn_of(self.field(*i)?).0),
            Expr::Field(i) => Some(self.field(*i)?.offset as usize),
            _ => None,
        }
    }

    /// The bytes an address printer reads (print_mac_arg, print_ipv4_arg,
    /// print_ipsa_arg...): casts skipped, a field's own bytes (or, for a
    /// sockaddr, a dynamic array's); any other argument writes
    /// libtraceevent's `ARG TYPE NOT FIELD BUT n` (its `tep_print_arg_type`).
    /// `None` when nothing more is to be written.
    fn addr_arg(&self, out: &mut Vec<u8>, mut e: &'a Expr, dyn_ok: bool) -> Option<&'a [u8]> {
        while let Expr::Cast { item, .. } = e {
            e = item;
        }
        let (off, len) = match e {
            Expr::Field(i) => {
                let f = self.field(*i)?;
                (f.offset as usize, f.size as usize)
            }
            Expr::DynArray(i) if dyn_ok => self.dyn_of(self.field(*i)?),
            // tep_find_any_field failed: a warning, nothing printed.
            Expr::NoField(_) => return None,
            other => {
                let ty = match other {
                    Expr::Null => 0,
                    Expr::Flags { .. } => 3,
                    Expr::Symbol { .. } => 4,
                    Expr::Hex { as_str: false, .. } => 5,
                    Expr::Hex { as_str: true, .. } => 15,
                    Expr::IntArray { .. } => 6,
                    Expr::Str(_) => 8,
                    Expr::DynArray(_) => 10,
                    Expr::Op { .. } => 11,
                    Expr::Bitmask(_) => 13,
                    Expr::DynArrayLen(_) => 14,
                    _ => 1,
                };
                if dyn_ok {
                    w(out, format_args!("ARG NOT FIELD NOR DYNAMIC ARRAY BUT TYPE {ty}"));
                } else {
                    w(out, format_args!("ARG TYPE NOT FIELD BUT {ty}"));
                }
                return None;
            }
        };
        self.rec.get(off..off.checked_add(len)?)
    }

    fn print_pointer(&self, out: &mut Vec<u8>, spec: &Spec, e: &'a Expr, star: Option<i64>) {
        let ext = spec.ext.as_bytes();
        match ext.first() {
            Some(c @ (b'F' | b'f' | b'S' | b's')) => {
                let val = self.leaf(e);
                let with_off = matches!(c, b'F' | b'S');
                self.print_function(out, val, with_off);
            }
            Some(b'M' | b'm') => {
                // print_mac_arg: `%pMF` dashes, `R` reversed.
                let Some(b) = self.addr_arg(out, e, false) else { return };
                let Ok(b) = <[u8; 6]>::try_from(b) else {
                    out.extend_from_slice(b"INVALIDMAC");
                    return;
                };
                let sep: &[u8] = match (ext[0], ext.get(1)) {
                    (b'm', _) => b"",
                    (_, Some(b'F')) => b"-",
                    _ => b":",
                };
                let reverse = ext[1..].contains(&b'R');
                for i in 0..6 {
                    if i > 0 {
                        out.extend_from_slice(sep);
                    }
                    crate::put::hex2(out, b[if reverse { 5 - i } else { i }]);
                }
            }
            Some(&c @ (b'I' | b'i')) => {
                let lower = c == b'i';
                // parse_ip4_print_args: `h` host order (reversed on a
                // little-endian file), `l` reversed, `n`/`b` as stored.
                let reverse = |m: Option<&u8>| match m {
                    Some(b'h') => self.ctx.endian != crate::Endian::Big,
                    Some(b'l') => true,
                    _ => false,
                };
                match ext.get(1) {
                    Some(b'4') => {
                        let Some(b) = self.addr_arg(out, e, false) else { return };
                        match <[u8; 4]>::try_from(b) {
                            Ok(b) => addr::ip4(out, lower, reverse(ext.get(2)), b),
                            Err(_) => out.extend_from_slice(b"INVALIDIPv4"),
                        }
                    }
                    Some(b'6') => {
                        let Some(b) = self.addr_arg(out, e, false) else { return };
                        match <&[u8; 16]>::try_from(b) {
                            Ok(b) if !lower && ext.get(2) == Some(&b'c') => addr::ip6c(out, b),
                            Ok(b) => addr::ip6(out, !lower, b),
                            Err(_) => out.extend_from_slice(b"INVALIDIPv6"),
                        }
                    }
                    Some(b'S') => {
                        let mods = &ext[2..];
                        let (port, compressed) = if lower { (false, false) } else {
                            let p = mods.first() == Some(&b'p');
                            (p, mods.get(p as usize) == Some(&b'c'))
                        };
                        let rest = &mods[if lower { 0 } else { port as usize + compressed as usize }..];
                        let Some(b) = self.addr_arg(out, e, true) else { return };
                        addr::ipsa(out, lower, port, compressed, reverse(rest.first()), b);
                    }
                    _ => {}
                }
            }
            Some(b'U') => {
                let Some(b) = self.addr_arg(out, e, false) else { return };
                match <&[u8; 16]>::try_from(b) {
                    Ok(b) => addr::uuid(out, ext.get(1).copied().unwrap_or(0), b),
                    Err(_) => out.extend_from_slice(b"INVALIDUUID"),
                }
            }
            Some(b'h') => {
                // print_raw_buff_arg: a dynamic array only (no cast skipped),
                // `*` bytes at most (none given: the whole array), `C`/`D`/`N`
                // for `:`/`-`/no delimiter.
                let delim: &[u8] = match ext.get(1) {
                    Some(b'C') => b":",
                    Some(b'D') => b"-",
                    Some(b'N') => b"",
                    _ => b" ",
                };
                let Expr::DynArray(i) = e else {
                    let ty = match e {
                        Expr::Field(_) | Expr::NoField(_) => 2,
                        Expr::Cast { .. } => 7,
                        Expr::Op { .. } => 11,
                        _ => 1,
                    };
                    w(out, format_args!("ARG TYPE NOT FIELD BUT {ty}"));
                    return;
                };
                let Some(f) = self.field(*i) else { return };
                let (off, len) = self.dyn_of(f);
                let n = match star {
                    Some(p) if p < len as i64 => p.max(0) as usize,
                    _ => len,
                };
                for (k, b) in self.rec.get(off..off + n).unwrap_or_default().iter().enumerate() {
                    if k > 0 {
                        out.extend_from_slice(delim);
                    }
                    crate::put::hex2(out, *b);
                }
            }
            _ => {
                let val = self.num(e);
                if self.kernel {
                    let val = if self.ctx.long_size == 4 { val & 0xffff_ffff } else { val };
                    w(out, format_args!("{:0width$x}", val, width = self.ctx.long_size as usize * 2));
                } else if val == 0 {
                    out.extend_from_slice(b"(nil)");
                } else {
                    crate::put::hex0x(out, val);
                }
            }
        }
    }

    /// `%ps`/`%pS`: libtraceevent `print_function`, or the kernel's
    /// `sprint_symbol` (`name+0xoff/0xsize [module]`).
    pub(crate) fn print_function(&self, out: &mut Vec<u8>, val: u64, with_off: bool) {
        let k = self.ctx.kallsyms;
        if self.kernel {
            match k.and_then(|k| k.lookup_full(val)) {
                Some((name, off, size, module)) => {
                    out.extend_from_slice(name.as_bytes());
                    if with_off {
                        w(out, format_args!("+0x{off:x}/0x{size:x}"));
                    }
                    if let Some(m) = module {
                        w(out, format_args!(" [{m}]"));
                    }
                }
                None => w(out, format_args!("0x{val:x}")),
            }
            return;
        }
        match k.and_then(|k| k.lookup_tep(val)) {
            Some((name, addr)) => {
                out.extend_from_slice(name.as_bytes());
                if with_off {
                    crate::put::bytes(out, b"+");
                    crate::put::hex0x(out, val.wrapping_sub(addr));
                }
            }
            None if self.ctx.long_size == 4 => crate::put::hex0x(out, val & 0xffff_ffff),
            None => crate::put::hex0x(out, val),
        }
    }

    /// libtraceevent `print_field_raw`, used after a failed parse.
    pub(crate) fn field_raw(&self, out: &mut Vec<u8>, f: &Field) {
        if f.is_array() {
            let (off, len) = match f.kind {
                FieldKind::DataLoc | FieldKind::RelLoc => self.dyn_of(f),
                _ => (f.offset as usize, f.size as usize),
            };
            let data = self.rec.get(off..off.saturating_add(len).min(self.rec.len())).unwrap_or(&[]);
            let is_string = {
                let t = &f.type_name;
                t.contains("char") || t.contains("u8") || t.contains("s8")
            };
            let printable = until_nul(data).iter().all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace());
            if is_string && printable {
                out.extend_from_slice(until_nul(data));
            } else {
                out.extend_from_slice(b"ARRAY[");
                for (i, b) in data.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b", ");
                    }
                    crate::put::hex2(out, *b);
                }
                out.push(b']');
            }
            return;
        }
        let val = self.read(f.offset as usize, f.size as usize).unwrap_or(0);
        let is_long = f.type_name.contains("long");
        if f.type_name.contains('*') {
            w(out, format_args!("0x{val:x}"));
        } else if f.signed {
            match f.size {
                4 if is_long => w(out, format_args!("0x{:x}", val as u32)),
                4 => w(out, format_args!("{}", val as u32 as i32)),
                2 => w(out, format_args!("{:2}", val as u16 as i16)),
                1 => w(out, format_args!("{}", val as u8 as i8)),
                _ => w(out, format_args!("{}", val as i64)),
            }
        } else if is_long {
            w(out, format_args!("0x{val:x}"));
        } else {
            w(out, format_args!("{val}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tep_cast;

    /// `Expr::Cast` keeps `tep_cast(u64::MAX, ty)` as a mask: that holds
    /// only while every cast of libtraceevent's is an identity or a mask.
    #[test]
    fn tep_casts_are_masks() {
        let types = ["u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "char", "unsigned char", "short", "unsigned short", "int", "unsigned int", "long", "unsigned long", "long long", "void *", "struct foo *", "struct rq", "x", "", " u8 ", "bool", "pid_t"];
        let values = [0u64, 1, 0x7f, 0x80, 0xff, 0x1234, 0xffff_ffff, 0x8000_0000_0000_0001, u64::MAX];
        for ty in types {
            let mask = tep_cast(u64::MAX, ty, false);
            for v in values {
                assert_eq!(tep_cast(v, ty, false), v & mask, "({ty}){v:#x}");
            }
        }
        assert_eq!(tep_cast(u64::MAX, "u16", false), 0xffff);
    }
}
