//! The `print fmt:` language of tracefs format files: compiled once per
//! event (at [`EventFormat::parse`]) and evaluated per record.
//!
//! Pipeline position: sources stage, used by sinks that print text. Two
//! styles: [`Style::Kernel`] renders the body as tracefs `trace` does (C
//! semantics), [`Style::TraceCmd`] as `trace-cmd report` 3.1.6 does
//! (libtraceevent 1.7.1 semantics and quirks, plus its plugins). A format
//! that cannot be compiled falls back to printing the fields, never fails.

mod addr;
mod cfmt;
mod eval;
mod parse;
mod plugins;

use crate::format::{EventFormat, Field, FieldValue, Kallsyms, PrintkFormats};
use crate::Endian;
use cfmt::{split, w, Piece};
use eval::Env;
use parse::{lex, Expr, Parser, Tok};
pub use plugins::{FunctionStacks, TraceCmdState};
use plugins::{Plugin, PluginFields};

/// What a renderer needs besides the record.
#[derive(Clone, Copy, Debug)]
pub struct RenderCtx<'a> {
    pub endian: Endian,
    /// Size of a C `long` on the traced machine (4 or 8).
    pub long_size: u8,
    pub cpu: u32,
    pub kallsyms: Option<&'a Kallsyms>,
    pub printk: Option<&'a PrintkFormats>,
    /// What trace-cmd's plugins remember between events (function indents,
    /// learned comms); without it each event renders on its own.
    pub state: Option<&'a TraceCmdState>,
    /// Whether trace-cmd style applies the plugins (libtraceevent's and
    /// trace-cmd's own handlers and print functions); `false` renders as
    /// `trace-cmd report -N`.
    pub plugins: bool,
}

/// A function graph record's kind ([`EventFormat::graph_func`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphRole {
    Entry,
    Exit,
}

/// Which program's output to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// As tracefs `trace` prints the body (pointers unhashed: the kernel's
    /// `%p` hash key is not knowable).
    Kernel,
    /// As `trace-cmd report` 3.1.6 prints it, plugins included.
    TraceCmd,
}

#[derive(Clone, Debug)]
struct Program {
    args: Vec<Expr>,
    /// `None` when the format string does not match the arguments.
    pieces: Option<Vec<Piece>>,
    /// Calls a plugin's print function: without plugins (`trace-cmd report
    /// -N`) libtraceevent cannot parse it.
    has_func: bool,
}

/// A print format compiled both ways. Private; built by `EventFormat::parse`.
/// The programs are compiled at the first use of any of them: a trace.dat
/// carries every format of its kernel (trace-cmd extract: ~1,900 here), of
/// which a recording uses a few dozen, and compiling them all was a tenth
/// of a report's instructions.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    progs: std::sync::OnceLock<Programs>,
    bprint: bool,
    plugin: Option<(Plugin, PluginFields)>,
}

/// The format string and its two programs.
#[derive(Clone, Debug)]
struct Programs {
    fmt: Vec<u8>,
    tep: Option<Program>,
    kernel: Option<Program>,
}

fn compile_one(fmt: &[u8], rest: &[Tok], fields: &[Field], kernel: bool) -> Option<Program> {
    let mut has_func = false;
    let args = if rest.is_empty() {
        Vec::new()
    } else {
        let mut p = Parser::new(rest.to_vec(), fields, kernel);
        let mut args = p.args().ok()?;
        has_func = p.has_func;
        args.iter_mut().for_each(|a| parse::resolve_atoms(a, kernel));
        args
    };
    let pieces = split(fmt, args.len(), !kernel).ok();
    Some(Program { args, pieces, has_func })
}

impl Compiled {
    pub(crate) fn compile(system: &str, name: &str, _print_fmt: &str, fields: &[Field]) -> Compiled {
        Compiled {
            progs: std::sync::OnceLock::new(),
            bprint: system == "ftrace" && name == "bprint",
            plugin: Plugin::find(system, name).map(|p| (p, PluginFields::resolve(fields))),
        }
    }
}

impl Programs {
    fn compile(print_fmt: &str, fields: &[Field]) -> Programs {
        let toks = lex(print_fmt.as_bytes());
        let (fmt, rest, ok) = match toks.split_first() {
            Some((Tok::Dquote(s), rest)) => match rest.split_first() {
                None => (s.clone().into_bytes(), &[][..], true),
                Some((Tok::Delim(b','), rest)) => (s.clone().into_bytes(), rest, true),
                _ => (Vec::new(), &[][..], false),
            },
            _ => (Vec::new(), &[][..], false),
        };
        let (tep, kernel) = if ok {
            (compile_one(&fmt, rest, fields, false), compile_one(&fmt, rest, fields, true))
        } else {
            (None, None)
        };
        Programs { fmt, tep, kernel }
    }
}

impl EventFormat {
    /// The compiled print format, compiled now if not yet.
    fn progs(&self) -> &Programs {
        self.compiled.progs.get_or_init(|| Programs::compile(&self.print_fmt, &self.fields))
    }

    /// Whether rendering in trace-cmd style reads the [`TraceCmdState`]
    /// (the function plugin's call stacks): such events must be rendered in
    /// report order, with the state.
    pub fn render_reads_state(&self) -> bool {
        matches!(self.compiled.plugin, Some((Plugin::Function, _)))
    }

    /// For the function graph tracer's events (`ftrace/funcgraph_entry`,
    /// `funcgraph_exit`): which one this is and the record's function.
    /// trace-cmd folds an entry and the next record of its buffer into one
    /// line when that record is the same pid's exit of the same function
    /// ([`render_graph_leaf`](Self::render_graph_leaf)).
    pub fn graph_func(&self, rec: &[u8], ctx: &RenderCtx) -> Option<(GraphRole, u64)> {
        let (p, pf) = self.compiled.plugin.as_ref().filter(|_| ctx.plugins)?;
        let role = match p {
            Plugin::FuncGraphEntry => GraphRole::Entry,
            Plugin::FuncGraphExit => GraphRole::Exit,
            _ => return None,
        };
        let func = plugins::graph_key(pf, &Env { rec, fields: &self.fields, ctx, kernel: false })?;
        Some((role, func))
    }

    /// The body of a function graph entry `rec` whose exit is `exit_rec`
    /// (of format `exit`), as trace-cmd prints a leaf call
    /// (trace-ftrace.c `print_graph_entry_leaf`): `  1.234 us   |    func();`.
    pub fn render_graph_leaf(&self, rec: &[u8], ctx: &RenderCtx, exit: &EventFormat, exit_rec: &[u8], out: &mut Vec<u8>) {
        let (Some((_, pf)), Some((_, xpf))) = (&self.compiled.plugin, &exit.compiled.plugin) else {
            return self.render(rec, ctx, Style::TraceCmd, out);
        };
        let env = Env { rec, fields: &self.fields, ctx, kernel: false };
        let xenv = Env { rec: exit_rec, fields: &exit.fields, ctx, kernel: false };
        if !plugins::graph_leaf((pf, &env), (xpf, &xenv), out) {
            if let Some((p, pieces)) = self.progs().tep.as_ref().and_then(|p| Some((p, p.pieces.as_ref()?))) {
                env.print(out, pieces, &p.args, &[]);
            }
        }
    }

    /// Teaches `ctx.state` what rendering `rec` in trace-cmd style would
    /// (the sched plugins register the comms they print), without
    /// rendering. Done in report order, it leaves the body of any event
    /// that does not [read the state](Self::render_reads_state) to be
    /// rendered later, anywhere, with no state: same text, same learning.
    pub fn learn(&self, rec: &[u8], ctx: &RenderCtx) {
        if let (Some((p, pf)), Some(_), true) = (&self.compiled.plugin, ctx.state, ctx.plugins) {
            plugins::learn(*p, pf, &Env { rec, fields: &self.fields, ctx, kernel: false });
        }
    }

    /// Appends the body of `rec` (the text after `name: `) to `out`, without
    /// a trailing newline. Never fails: unreadable parts are left out, an
    /// unusable print format falls back to the fields.
    pub fn render(&self, rec: &[u8], ctx: &RenderCtx, style: Style, out: &mut Vec<u8>) {
        let start = out.len();
        let kernel = style == Style::Kernel;
        let env = Env { rec, fields: &self.fields, ctx, kernel };
        let c = &self.compiled;
        let mut pretty = true;
        if !kernel && ctx.plugins {
            if let Some((p, pf)) = &c.plugin {
                pretty = !plugins::run(*p, pf, &env, out);
            }
        }
        if pretty {
            let progs = self.progs();
            let prog = if kernel { progs.kernel.as_ref() } else { progs.tep.as_ref().filter(|p| ctx.plugins || !p.has_func) };
            if c.bprint && prog.is_some() {
                self.render_bprint(&env, out);
            } else {
                match prog.and_then(|p| Some((p, p.pieces.as_ref()?))) {
                    Some((p, pieces)) => env.print(out, pieces, &p.args, &[]),
                    None => self.fallback(&env, out),
                }
            }
        }
        // trace-cmd drops one trailing newline (trace-read.c show_data); the
        // kernel's newline of a `print` body is its line end.
        if out.len() > start && out.last() == Some(&b'\n') {
            out.pop();
        }
        // A NUL a plugin wrote (kvm_mmu_print_role, scsi_trace_parse_cdb)
        // ends the line: trace-cmd prints its trace_seq with `%.*s`.
        if !kernel {
            if let Some(nul) = memchr::memchr(0, &out[start..]) {
                out.truncate(start + nul);
            }
        }
    }

    /// Fields when the print format is unusable: libtraceevent's
    /// `[FAILED TO PARSE]` + ` name=value` list, or `name=value ...` (kernel).
    fn fallback(&self, env: &Env, out: &mut Vec<u8>) {
        let own = self.fields.iter().filter(|f| !f.is_common());
        if !env.kernel {
            out.extend_from_slice(b"[FAILED TO PARSE]");
            for f in own {
                w(out, format_args!(" {}=", f.name));
                env.field_raw(out, f);
            }
            return;
        }
        for (i, f) in own.enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            w(out, format_args!("{}=", f.name));
            match f.value(env.rec, env.ctx.endian) {
                Some(FieldValue::Unsigned(v)) => w(out, format_args!("{v}")),
                Some(FieldValue::Signed(v)) => w(out, format_args!("{v}")),
                Some(FieldValue::Str(s)) => out.extend_from_slice(s),
                Some(FieldValue::Bytes(b)) => {
                    out.extend_from_slice(b"0x");
                    for x in b.iter().take(256) {
                        crate::put::hex2(out, *x);
                    }
                }
                None => out.extend_from_slice(b"?"),
            }
        }
    }

    /// `ftrace:bprint`: the format comes from the printk table by address,
    /// the arguments are packed in `buf` (kernel `vbin_printf`); decoded as
    /// libtraceevent `make_bprint_args` does: 4-byte aligned words, `%s`
    /// inline NUL-terminated.
    fn render_bprint(&self, env: &Env, out: &mut Vec<u8>) {
        let (Some(fmt_f), Some(buf_f), Some(ip_f)) = (self.field("fmt"), self.field("buf"), self.field("ip")) else {
            return self.fallback(env, out);
        };
        let e = env.ctx.endian;
        let rd = |f: &Field| f.raw(env.rec).and_then(|b| e.uint(b)).unwrap_or(0);
        let addr = rd(fmt_f);
        let ip = rd(ip_f);
        let fmt: Vec<u8> = match env.ctx.printk.and_then(|p| p.get(addr)) {
            Some(s) => [b"%ps: ".as_slice(), s.as_bytes()].concat(),
            None => format!("%ps: (NO FORMAT FOUND at {addr:x})\n").into_bytes(),
        };
        let mut args = vec![Expr::Atom(ip.to_string().into())];
        let mut bstr: Vec<Option<Vec<u8>>> = vec![None];
        let data = env.rec;
        let mut bp = buf_f.offset as usize;
        let mut i = 5;
        while i < fmt.len() && bp < data.len() && args.len() < 256 {
            if fmt[i] != b'%' {
                i += 1;
                continue;
            }
            let mut ls = 0usize;
            loop {
                i += 1;
                let Some(&c) = fmt.get(i) else { break };
                let mut vsize = 0usize;
                let mut is_num = false;
                let mut is_str = false;
                match c {
                    b'l' => {
                        ls += 1;
                        continue;
                    }
                    b'L' => {
                        ls = 2;
                        continue;
                    }
                    b'0'..=b'9' | b'.' | b'#' => continue,
                    b'z' | b'Z' => {
                        ls = 1;
                        continue;
                    }
                    b'p' => {
                        ls = 1;
                        is_num = true;
                        if fmt.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
                            i += 1;
                            let special = match fmt[i] {
                                b's' | b'S' | b'x' => false,
                                b'f' | b'F' => fmt.get(i + 1) == Some(&b'w'),
                                _ => true,
                            };
                            if special && data.get(bp).is_some_and(|c| (0x20..0x7f).contains(c)) {
                                is_num = false;
                                is_str = true;
                            }
                        }
                    }
                    b'd' | b'u' | b'i' | b'x' | b'X' | b'o' => is_num = true,
                    b'*' => {
                        is_num = true;
                        vsize = 4;
                    }
                    b's' => is_str = true,
                    _ => {}
                }
                if is_num {
                    if c != b'*' {
                        vsize = match ls {
                            0 => 4,
                            1 => env.ctx.long_size as usize,
                            2 => 8,
                            n => n,
                        };
                    }
                    bp = (bp + 3) & !3;
                    let v = data.get(bp..bp + vsize).and_then(|b| e.uint(b)).unwrap_or(0);
                    bp += vsize;
                    args.push(Expr::Atom((v as i64).to_string().into()));
                    bstr.push(None);
                    if c == b'*' {
                        continue;
                    }
                } else if is_str {
                    let s = crate::format::until_nul(data.get(bp..).unwrap_or(&[]));
                    bp += s.len() + 1;
                    args.push(Expr::Atom("".into()));
                    bstr.push(Some(s.to_vec()));
                }
                break;
            }
            i += 1;
        }
        match split(&fmt, args.len(), !env.kernel) {
            Ok(pieces) => env.print(out, &pieces, &args, &bstr),
            Err(()) => self.fallback(env, out),
        }
    }

    /// The format string of the print format (escapes still raw).
    pub fn print_fmt_string(&self) -> &[u8] {
        &self.progs().fmt
    }

    /// Whether the print format compiled in the given style (else `render`
    /// uses the field fallback).
    pub fn print_fmt_ok(&self, style: Style) -> bool {
        let progs = self.progs();
        let p = if style == Style::Kernel { &progs.kernel } else { &progs.tep };
        p.as_ref().is_some_and(|p| p.pieces.is_some())
    }

    /// Whether the trace-cmd style print format calls a plugin's print
    /// function, so that without plugins (`-N`) it falls back to the fields.
    pub fn print_fmt_needs_plugins(&self) -> bool {
        self.progs().tep.as_ref().is_some_and(|p| p.has_func)
    }
}
