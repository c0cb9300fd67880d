//! Lexer and parser of the `print fmt:` argument list.
//!
//! The parser follows libtraceevent 1.7.1's algorithm (src/event-parse.c:
//! `process_arg_token`, `process_op`, `process_paren`, `consolidate_op_arg`)
//! so that [`Style::TraceCmd`](super::Style) reproduces `trace-cmd report`
//! including its quirks: an operand in parentheses whose operator binds
//! looser is rotated (`x & (a | b)` becomes `(x & a) | b`, visible in
//! `timer_start`'s `flags=`), and `a - b * c + d` groups as `a - (b*c + d)`.
//! In kernel mode the same primaries are parsed but binary operators use C
//! precedence climbing, matching what the kernel's compiled C computes.

use crate::format::Field;

/// Token classes, as libtraceevent's `enum tep_event_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    None,
    Item(String),
    Dquote(String),
    Squote(String),
    Delim(u8),
    Op(String),
}

impl Tok {
    fn is_op(&self, s: &str) -> bool {
        matches!(self, Tok::Op(o) if o == s)
    }
    fn is_delim(&self, c: u8) -> bool {
        matches!(self, Tok::Delim(d) if *d == c)
    }
    fn is_item_type(&self) -> bool {
        matches!(self, Tok::Item(_) | Tok::Dquote(_) | Tok::Squote(_))
    }
}

/// Splits `text` into tokens (libtraceevent `__read_token`); spaces and
/// newlines are dropped, adjacent double-quoted strings are joined.
pub(crate) fn lex(text: &[u8]) -> Vec<Tok> {
    const MAX_TOKENS: usize = 1 << 16;
    let mut out = Vec::new();
    let mut i = 0;
    let peek = |i: usize| text.get(i).copied().unwrap_or(0);
    while i < text.len() && out.len() < MAX_TOKENS {
        let c = text[i];
        i += 1;
        if c.is_ascii_whitespace() {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            let s = i - 1;
            while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Item(String::from_utf8_lossy(&text[s..i]).into_owned()));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let mut buf = Vec::new();
            loop {
                // Escapes are kept raw; the `\\` pair cancels itself.
                let mut last = 0u8;
                while let Some(&ch) = text.get(i) {
                    i += 1;
                    if ch == c && last != b'\\' {
                        break;
                    }
                    buf.push(ch);
                    last = if ch == b'\\' && last == b'\\' { 0 } else { ch };
                }
                if c != b'"' {
                    break;
                }
                let mut j = i;
                while j < text.len() && text[j].is_ascii_whitespace() {
                    j += 1;
                }
                if text.get(j) == Some(&b'"') {
                    i = j + 1;
                    continue;
                }
                break;
            }
            let s = String::from_utf8_lossy(&buf).into_owned();
            out.push(if c == b'"' { Tok::Dquote(s) } else { Tok::Squote(s) });
            continue;
        }
        if !(0x20..0x7f).contains(&c) {
            break;
        }
        if matches!(c, b'(' | b')' | b',') {
            out.push(Tok::Delim(c));
            continue;
        }
        let mut op = vec![c];
        match c {
            b'-' if peek(i) == b'>' => {
                op.push(b'>');
                i += 1;
            }
            b'-' | b'+' | b'|' | b'&' | b'>' | b'<' => {
                if peek(i) == c {
                    op.push(c);
                    i += 1;
                    if matches!(c, b'>' | b'<') && peek(i) == b'=' {
                        op.push(b'=');
                        i += 1;
                    }
                } else if peek(i) == b'=' {
                    op.push(b'=');
                    i += 1;
                }
            }
            b'!' | b'=' if peek(i) == b'=' => {
                op.push(b'=');
                i += 1;
            }
            _ => {}
        }
        out.push(Tok::Op(String::from_utf8_lossy(&op).into_owned()));
    }
    out
}

/// Operators. `Neg`/`Pos`/`Not`/`BitNot` are unary (left is `Null`);
/// `Cond` has a `Colon` node on its right, as libtraceevent builds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Mul, Div, Mod, Add, Sub, Shl, Shr, Lt, Gt, Le, Ge, Eq, Ne, BitAnd, Xor, BitOr, And, Or,
    Not, BitNot, Cond, Colon, Index,
}

impl Op {
    fn binary(s: &str) -> Option<Op> {
        Some(match s {
            "*" => Op::Mul, "/" => Op::Div, "%" => Op::Mod, "+" => Op::Add, "-" => Op::Sub,
            "<<" => Op::Shl, ">>" => Op::Shr, "<" => Op::Lt, ">" => Op::Gt, "<=" => Op::Le,
            ">=" => Op::Ge, "==" => Op::Eq, "!=" => Op::Ne, "&" => Op::BitAnd, "^" => Op::Xor,
            "|" => Op::BitOr, "&&" => Op::And, "||" => Op::Or,
            _ => return None,
        })
    }

    /// libtraceevent `get_op_prio` (lower binds tighter; -1 unknown).
    pub(crate) fn prio(self) -> i32 {
        match self {
            Op::Not | Op::BitNot => 4,
            Op::Mul | Op::Div | Op::Mod => 6,
            Op::Add | Op::Sub => 7,
            Op::Shl | Op::Shr => 8,
            Op::Lt | Op::Gt | Op::Le | Op::Ge => 9,
            Op::Eq | Op::Ne => 10,
            Op::BitAnd => 11,
            Op::Xor => 12,
            Op::BitOr => 13,
            Op::And => 14,
            Op::Or => 15,
            Op::Cond => 16,
            Op::Colon | Op::Index => -1,
        }
    }
}

fn tok_prio(s: &str) -> i32 {
    match s {
        "?" => 16,
        "~" | "!" => 4,
        _ => Op::binary(s).map_or(-1, Op::prio),
    }
}

/// An expression of the argument list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Null,
    /// Number, identifier, type name or string literal, kept as text.
    Atom(Box<str>),
    /// An atom that evaluates to a number (what `strtoull` makes of it,
    /// as `eval_num_arg` does per record), worked out once by
    /// [`resolve_atoms`] after parsing; the text stays for `%s`.
    Num(u64, Box<str>),
    /// `REC->name`: index into the event's fields, or the unknown name.
    Field(usize),
    NoField(Box<str>),
    /// Unary minus/plus are `Sub`/`Add` with a `Null` left.
    Op { op: Op, prio: i32, left: Box<Expr>, right: Box<Expr> },
    /// `(ty)item`; `tep_mask` is libtraceevent's cast of it as a mask
    /// (its casts only mask: `tep_cast(v) == v & tep_mask`), computed once.
    Cast { ty: Box<str>, item: Box<Expr>, tep_mask: u64 },
    Flags { field: Box<Expr>, delim: Option<Box<str>>, flags: Vec<Sym> },
    Symbol { field: Box<Expr>, syms: Vec<Sym> },
    Hex { as_str: bool, field: Box<Expr>, size: Box<Expr> },
    IntArray { field: Box<Expr>, count: Box<Expr>, el_size: Box<Expr> },
    /// `__get_str(name)` (field index or unknown).
    Str(Option<usize>),
    Bitmask(Option<usize>),
    DynArray(usize),
    DynArrayLen(usize),
    SizeofLong,
    /// A function a libtraceevent plugin registered with
    /// `tep_register_print_function` (trace-cmd style only).
    Func { func: super::plugins::PrintFunc, args: Vec<Expr> },
}

/// One `{ value, "name" }` of `__print_flags`/`__print_symbolic`, with the
/// value as each style evaluates it ([`super::eval::eval_flag`]), worked out
/// once instead of per record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sym {
    pub name: Box<str>,
    pub tep: i64,
    pub kernel: i64,
}

impl Sym {
    fn new(value: &str, name: Box<str>) -> Sym {
        Sym { name, tep: super::eval::eval_flag(value, false), kernel: super::eval::eval_flag(value, true) }
    }
}

type Res<T> = Result<T, ()>;

pub(crate) struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    fields: &'a [Field],
    kernel: bool,
    depth: u32,
    /// Operator nodes built so far: loops deepen the tree without recursing.
    nodes: u32,
    /// Whether a plugin's print function was parsed (`trace-cmd report -N`
    /// has none registered, so the format fails to parse there).
    pub(crate) has_func: bool,
}

/// Bounds on recursion and tree depth so hostile formats cannot overflow the
/// stack (real formats stay far below: kvm_exit's largest argument nests ~10 deep).
const MAX_DEPTH: u32 = 200;
const MAX_NODES: u32 = 2000;

impl<'a> Parser<'a> {
    pub(crate) fn new(toks: Vec<Tok>, fields: &'a [Field], kernel: bool) -> Self {
        Parser { toks, pos: 0, fields, kernel, depth: 0, nodes: 0, has_func: false }
    }

    fn next(&mut self) -> Tok {
        let t = self.toks.get(self.pos).cloned().unwrap_or(Tok::None);
        self.pos += 1;
        t
    }

    fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    fn node(&mut self) -> Res<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(());
        }
        Ok(())
    }

    fn enter(&mut self) -> Res<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(());
        }
        Ok(())
    }

    /// The whole argument list after the format string (`event_read_print_args`).
    pub(crate) fn args(&mut self) -> Res<Vec<Expr>> {
        let mut list = Vec::new();
        loop {
            let mut arg = Expr::Null;
            let mut t = self.process_arg(&mut arg)?;
            if matches!(t, Tok::Op(_)) {
                t = self.process_op(&mut arg, t)?;
                consolidate(&mut arg);
                list.push(arg);
                if t.is_delim(b',') {
                    continue;
                }
                // libtraceevent continues the loop here until NONE/ERROR.
                if t == Tok::None {
                    break;
                }
                return Err(());
            }
            list.push(arg);
            if t.is_delim(b',') {
                continue;
            }
            if t == Tok::None {
                break;
            }
            return Err(());
        }
        Ok(list)
    }

    fn process_arg(&mut self, arg: &mut Expr) -> Res<Tok> {
        let t = self.next();
        self.process_arg_token(arg, t)
    }

    fn process_arg_token(&mut self, arg: &mut Expr, tok: Tok) -> Res<Tok> {
        self.enter()?;
        let r = self.process_arg_token_inner(arg, tok);
        self.depth -= 1;
        r
    }

    fn process_arg_token_inner(&mut self, arg: &mut Expr, tok: Tok) -> Res<Tok> {
        match tok {
            Tok::Item(s) if s == "REC" => self.process_entry(arg),
            Tok::Item(s) => {
                let mut atom = s;
                let mut t = self.next();
                if t.is_delim(b'(') {
                    return self.process_function(arg, &atom);
                }
                while let Tok::Item(more) = &t {
                    atom.push(' ');
                    atom.push_str(more);
                    t = self.next();
                }
                *arg = Expr::Atom(atom.into());
                Ok(t)
            }
            Tok::Dquote(s) | Tok::Squote(s) => {
                *arg = Expr::Atom(s.into());
                Ok(self.next())
            }
            Tok::Delim(b'(') => self.process_paren(arg),
            Tok::Op(op) => {
                // Unary operator.
                let uop = match op.as_str() {
                    "~" => Op::BitNot,
                    "!" => Op::Not,
                    "-" => Op::Sub,
                    "+" => Op::Add,
                    _ => return Err(()),
                };
                let mut right = Expr::Null;
                let t = self.process_arg(&mut right)?;
                self.node()?;
                *arg = Expr::Op { op: uop, prio: 0, left: Box::new(Expr::Null), right: Box::new(right) };
                if self.kernel {
                    return Ok(t);
                }
                self.op_tail(arg, Child::Right, t)
            }
            _ => Err(()),
        }
    }

    fn process_entry(&mut self, arg: &mut Expr) -> Res<Tok> {
        if !self.next().is_op("->") {
            return Err(());
        }
        let Tok::Item(name) = self.next() else { return Err(()) };
        *arg = match self.field(&name) {
            Some(i) => Expr::Field(i),
            None => Expr::NoField(name.into()),
        };
        Ok(self.next())
    }

    fn process_paren(&mut self, arg: &mut Expr) -> Res<Tok> {
        let mut t = self.process_arg(arg)?;
        if matches!(t, Tok::Op(_)) {
            t = self.process_op(arg, t)?;
        }
        if !t.is_delim(b')') {
            return Err(());
        }
        let t = self.next();
        if t.is_item_type() || t.is_delim(b'(') {
            let Expr::Atom(ty) = std::mem::replace(arg, Expr::Null) else { return Err(()) };
            let mut item = Expr::Null;
            let t = self.process_arg_token(&mut item, t)?;
            let tep_mask = super::eval::tep_cast(u64::MAX, &ty, false);
            *arg = Expr::Cast { ty, item: Box::new(item), tep_mask };
            return Ok(t);
        }
        Ok(t)
    }

    /// libtraceevent `process_op`, or C precedence climbing in kernel mode.
    fn process_op(&mut self, arg: &mut Expr, tok: Tok) -> Res<Tok> {
        self.enter()?;
        let r = if self.kernel { self.climb(arg, tok, 99) } else { self.tep_op(arg, tok) };
        self.depth -= 1;
        r
    }

    fn tep_op(&mut self, arg: &mut Expr, tok: Tok) -> Res<Tok> {
        let Tok::Op(op) = tok else { return Err(()) };
        let (t, child) = if op == "?" {
            let left = std::mem::replace(arg, Expr::Null);
            let mut right = Expr::Null;
            let t = self.process_cond(&mut right)?;
            self.node()?;
            *arg = Expr::Op { op: Op::Cond, prio: 0, left: Box::new(left), right: Box::new(right) };
            (t, Child::None)
        } else if op == "[" {
            let left = std::mem::replace(arg, Expr::Null);
            let mut right = Expr::Null;
            let t = self.process_array(&mut right)?;
            self.node()?;
            *arg = Expr::Op { op: Op::Index, prio: 0, left: Box::new(left), right: Box::new(right) };
            (t, Child::None)
        } else if let Some(bop) = Op::binary(&op) {
            let left = std::mem::replace(arg, Expr::Null);
            let prio = if left == Expr::Null { 0 } else { bop.prio() };
            let next = self.next();
            if bop == Op::Mul && next.is_delim(b')') {
                // `(void *)`: a pointer type, not a multiplication.
                let Expr::Atom(a) = left else { return Err(()) };
                *arg = Expr::Atom(format!("{a} *").into());
                return Ok(next);
            }
            let mut right = Expr::Null;
            let t = self.process_arg_token(&mut right, next)?;
            let rotate = matches!(&right, Expr::Op { op: rop, .. } if bop.prio() < rop.prio());
            if rotate {
                let Expr::Op { op: rop, prio: rprio, left: rleft, right: rright } = right else { unreachable!() };
                let inner = Expr::Op { op: bop, prio, left: Box::new(left), right: rleft };
                *arg = Expr::Op { op: rop, prio: rprio, left: Box::new(inner), right: rright };
                (t, Child::Left)
            } else {
                self.node()?;
                *arg = Expr::Op { op: bop, prio, left: Box::new(left), right: Box::new(right) };
                (t, Child::Right)
            }
        } else {
            return Err(());
        };
        self.op_tail(arg, child, t)
    }

    /// The end of libtraceevent's `process_op`: a following operator either
    /// takes the whole node (looser) or the node's right operand (tighter).
    fn op_tail(&mut self, arg: &mut Expr, child: Child, t: Tok) -> Res<Tok> {
        let Tok::Op(o) = &t else { return Ok(t) };
        if o == ":" {
            return Ok(t);
        }
        let prio = tok_prio(o);
        let arg_prio = match arg {
            Expr::Op { prio, .. } => *prio,
            _ => 0,
        };
        if prio > arg_prio {
            return self.process_op(arg, t);
        }
        let target = match (child, arg) {
            (Child::Right, Expr::Op { right, .. }) => right,
            (Child::Left, Expr::Op { left, .. }) => left,
            _ => return Err(()),
        };
        self.process_op(target, t)
    }

    fn process_cond(&mut self, top_right: &mut Expr) -> Res<Tok> {
        let mut left = Expr::Null;
        let mut t = self.process_arg(&mut left)?;
        if self.kernel {
            t = self.climb(&mut left, t, 99)?;
        } else {
            let mut guard = 0;
            while matches!(&t, Tok::Op(o) if o != ":") {
                t = self.process_op(&mut left, t)?;
                guard += 1;
                if guard > 100 {
                    return Err(());
                }
            }
        }
        if !t.is_op(":") {
            return Err(());
        }
        let mut right = Expr::Null;
        let mut t = self.process_arg(&mut right)?;
        if self.kernel {
            t = self.climb(&mut right, t, 16)?;
        }
        *top_right = Expr::Op { op: Op::Colon, prio: 0, left: Box::new(left), right: Box::new(right) };
        Ok(t)
    }

    fn process_array(&mut self, right: &mut Expr) -> Res<Tok> {
        let mut t = self.process_arg(right)?;
        if self.kernel {
            t = self.climb(right, t, 99)?;
        }
        if !t.is_op("]") {
            return Err(());
        }
        Ok(self.next())
    }

    /// C precedence climbing over libtraceevent's priorities (kernel mode).
    fn climb(&mut self, arg: &mut Expr, mut tok: Tok, max_prio: i32) -> Res<Tok> {
        loop {
            let Tok::Op(o) = &tok else { return Ok(tok) };
            if o == ":" || o == "]" {
                return Ok(tok);
            }
            if o == "[" {
                let mut idx = Expr::Null;
                let t = self.process_array(&mut idx)?;
                let left = std::mem::replace(arg, Expr::Null);
                self.node()?;
                *arg = Expr::Op { op: Op::Index, prio: 0, left: Box::new(left), right: Box::new(idx) };
                tok = t;
                continue;
            }
            let p = tok_prio(o);
            if p < 0 {
                return Err(());
            }
            if p > max_prio {
                return Ok(tok);
            }
            if o == "?" {
                let mut right = Expr::Null;
                let t = self.process_cond(&mut right)?;
                let left = std::mem::replace(arg, Expr::Null);
                self.node()?;
                *arg = Expr::Op { op: Op::Cond, prio: 0, left: Box::new(left), right: Box::new(right) };
                tok = t;
                continue;
            }
            let Some(bop) = Op::binary(o) else { return Err(()) };
            let next = self.next();
            if bop == Op::Mul && next.is_delim(b')') {
                let Expr::Atom(a) = std::mem::replace(arg, Expr::Null) else { return Err(()) };
                *arg = Expr::Atom(format!("{a} *").into());
                return Ok(next);
            }
            let mut rhs = Expr::Null;
            let t = self.process_arg_token(&mut rhs, next)?;
            self.enter()?;
            let t = self.climb(&mut rhs, t, p - 1);
            self.depth -= 1;
            let t = t?;
            let left = std::mem::replace(arg, Expr::Null);
            self.node()?;
            *arg = Expr::Op { op: bop, prio: bop.prio(), left: Box::new(left), right: Box::new(rhs) };
            tok = t;
        }
    }

    /// An argument of a helper function up to `end` (`alloc_and_process_delim`).
    fn delim_arg(&mut self, end: u8) -> Res<Expr> {
        let mut e = Expr::Null;
        let mut t = self.process_arg(&mut e)?;
        if matches!(t, Tok::Op(_)) {
            t = self.process_op(&mut e, t)?;
            consolidate(&mut e);
        }
        if !t.is_delim(end) {
            return Err(());
        }
        Ok(e)
    }

    fn field_name_arg(&mut self) -> Res<(String, Option<usize>)> {
        let Tok::Item(name) = self.next() else { return Err(()) };
        let idx = self.field(&name);
        Ok((name, idx))
    }

    fn process_function(&mut self, arg: &mut Expr, name: &str) -> Res<Tok> {
        match name {
            "__print_flags" | "__print_symbolic" => {
                let flags = name == "__print_flags";
                let mut field = Expr::Null;
                let mut t = self.process_arg(&mut field)?;
                let mut guard = 0;
                while matches!(t, Tok::Op(_)) {
                    t = self.process_op(&mut field, t)?;
                    guard += 1;
                    if guard > 100 {
                        return Err(());
                    }
                }
                if !t.is_delim(b',') {
                    return Err(());
                }
                let mut delim = None;
                if flags {
                    let mut t = self.next();
                    if let Tok::Item(s) | Tok::Dquote(s) | Tok::Squote(s) = &t {
                        delim = Some(s.as_str().into());
                        t = self.next();
                    }
                    if !t.is_delim(b',') {
                        return Err(());
                    }
                }
                let (list, t) = self.process_fields()?;
                if !t.is_delim(b')') {
                    return Err(());
                }
                let field = Box::new(field);
                let list = list.into_iter().map(|(v, name)| Sym::new(&v, name)).collect();
                *arg = if flags { Expr::Flags { field, delim, flags: list } } else { Expr::Symbol { field, syms: list } };
                Ok(self.next())
            }
            "__print_hex" | "__print_hex_str" => {
                let field = self.delim_arg(b',')?;
                let size = self.delim_arg(b')')?;
                *arg = Expr::Hex { as_str: name == "__print_hex_str", field: Box::new(field), size: Box::new(size) };
                Ok(self.next())
            }
            "__print_array" => {
                let field = self.delim_arg(b',')?;
                let count = self.delim_arg(b',')?;
                let el_size = self.delim_arg(b')')?;
                *arg = Expr::IntArray { field: Box::new(field), count: Box::new(count), el_size: Box::new(el_size) };
                Ok(self.next())
            }
            "__get_str" | "__get_rel_str" | "__get_bitmask" | "__get_rel_bitmask" => {
                let (_, idx) = self.field_name_arg()?;
                if !self.next().is_delim(b')') {
                    return Err(());
                }
                *arg = if name.contains("str") { Expr::Str(idx) } else { Expr::Bitmask(idx) };
                Ok(self.next())
            }
            "__get_dynamic_array" | "__get_rel_dynamic_array" | "__get_sockaddr" | "__get_sockaddr_rel" => {
                let (_, idx) = self.field_name_arg()?;
                let idx = idx.ok_or(())?;
                if !self.next().is_delim(b')') {
                    return Err(());
                }
                *arg = Expr::DynArray(idx);
                Ok(self.next())
            }
            "__get_dynamic_array_len" | "__get_rel_dynamic_array_len" => {
                let (_, idx) = self.field_name_arg()?;
                let idx = idx.ok_or(())?;
                if !self.next().is_delim(b')') {
                    return Err(());
                }
                *arg = Expr::DynArrayLen(idx);
                Ok(self.next())
            }
            "__builtin_expect" => {
                let t = self.process_arg(arg)?;
                if !t.is_delim(b',') {
                    return Err(());
                }
                if !matches!(self.next(), Tok::Item(_)) || !self.next().is_delim(b')') {
                    return Err(());
                }
                Ok(self.next())
            }
            "sizeof" => self.process_sizeof(arg),
            _ => match super::plugins::PrintFunc::find(name).filter(|_| !self.kernel) {
                Some(func) => self.process_func_handler(arg, func),
                None => Err(()),
            },
        }
    }

    /// event-parse.c `process_func_handler`: exactly the function's number
    /// of arguments, each one `process_arg` (no operators after it), split
    /// by `,` and closed by `)`.
    fn process_func_handler(&mut self, arg: &mut Expr, func: super::plugins::PrintFunc) -> Res<Tok> {
        let n = func.nr_args();
        let mut args = Vec::with_capacity(n);
        for i in 0..n {
            let mut farg = Expr::Null;
            let t = self.process_arg(&mut farg)?;
            if !t.is_delim(if i + 1 < n { b',' } else { b')' }) {
                return Err(());
            }
            args.push(farg);
        }
        self.has_func = true;
        *arg = Expr::Func { func, args };
        Ok(self.next())
    }

    fn process_sizeof(&mut self, arg: &mut Expr) -> Res<Tok> {
        let mut t = self.next();
        if matches!(&t, Tok::Item(s) if s == "unsigned") {
            t = self.next();
        }
        let size: Expr = match &t {
            Tok::Item(s) if s == "int" => Expr::Atom("4".into()),
            Tok::Item(s) if s == "long" => {
                let n = self.next();
                if matches!(&n, Tok::Item(s) if s == "long") {
                    Expr::Atom("8".into())
                } else {
                    self.pos -= 1;
                    Expr::SizeofLong
                }
            }
            Tok::Item(s) if matches!(s.as_str(), "char" | "u8" | "s8") => Expr::Atom("1".into()),
            Tok::Item(s) if matches!(s.as_str(), "short" | "u16" | "s16") => Expr::Atom("2".into()),
            Tok::Item(s) if matches!(s.as_str(), "u32" | "s32") => Expr::Atom("4".into()),
            Tok::Item(s) if matches!(s.as_str(), "u64" | "s64") => Expr::Atom("8".into()),
            Tok::Item(s) if s == "REC" => {
                if !self.next().is_op("->") {
                    return Err(());
                }
                let (_, idx) = self.field_name_arg()?;
                let f = &self.fields[idx.ok_or(())?];
                if f.is_array() {
                    return Err(());
                }
                Expr::Atom(f.size.to_string().into())
            }
            _ => return Err(()),
        };
        if !self.next().is_delim(b')') {
            return Err(());
        }
        *arg = size;
        Ok(self.next())
    }

    /// `{ value, "name" }, ...` (`process_fields`): values folded to text now.
    fn process_fields(&mut self) -> Res<(Vec<(Box<str>, Box<str>)>, Tok)> {
        let mut list = Vec::new();
        loop {
            let t = self.next();
            if !t.is_op("{") {
                return Ok((list, t));
            }
            let mut v = Expr::Null;
            let mut t = self.process_arg(&mut v)?;
            if matches!(t, Tok::Op(_)) {
                t = self.process_op(&mut v, t)?;
            }
            if !t.is_delim(b',') {
                return Err(());
            }
            let value = arg_eval(&v).ok_or(())?;
            let mut s = Expr::Null;
            let t = self.process_arg(&mut s)?;
            if !t.is_op("}") {
                return Err(());
            }
            let name = arg_eval(&s).ok_or(())?;
            list.push((value, name));
            let t = self.next();
            if !t.is_delim(b',') {
                return Ok((list, t));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Child {
    None,
    Left,
    Right,
}

/// C `strtoull(s, NULL, 0)`: the longest numeric prefix; 0 when none.
pub(crate) fn strtoull(s: &str) -> u64 {
    let s = s.trim_start();
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(r) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, r)
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let mut v: u64 = 0;
    let mut overflow = false;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        match v.checked_mul(radix as u64).and_then(|x| x.checked_add(d as u64)) {
            Some(n) => v = n,
            None => overflow = true,
        }
    }
    if overflow {
        return u64::MAX;
    }
    if neg { v.wrapping_neg() } else { v }
}

/// C `strtoll(s, NULL, 0)` (saturating).
pub(crate) fn strtoll(s: &str) -> i64 {
    let t = s.trim_start();
    let neg = t.starts_with('-');
    let mag = strtoull(t.trim_start_matches(['-', '+']));
    if neg {
        if mag > i64::MAX as u64 + 1 { i64::MIN } else { (mag as i64).wrapping_neg() }
    } else if mag > i64::MAX as u64 {
        i64::MAX
    } else {
        mag as i64
    }
}

/// Turns the number atoms of a parsed argument into [`Expr::Num`]: the
/// value libtraceevent's `eval_num_arg` computes from the text for every
/// record (`strtoull`), computed here once. An atom counts as a number
/// as [`super::eval::Env::num`] decides it: a nonzero value, or a leading
/// digit. Run after parsing, whose own folding reads atoms as text.
///
/// Operands of arithmetic operators that are constant (casts of numbers in
/// trace-cmd style, where a cast is a mask; operators on numbers) become
/// numbers too: only [`super::eval::Env::num`] reads an operand, so the
/// value is all that is kept of it. Other positions keep their shape:
/// printing an argument (`%s`, `%pM`) looks at its kind, not only its value.
pub(crate) fn resolve_atoms(e: &mut Expr, kernel: bool) {
    match e {
        Expr::Atom(a) => {
            let v = strtoull(a);
            if v != 0 || a.as_bytes().first().is_some_and(|c| c.is_ascii_digit()) {
                *e = Expr::Num(v, std::mem::take(a));
            }
        }
        Expr::Op { op, left, right, .. } => {
            resolve_atoms(left, kernel);
            resolve_atoms(right, kernel);
            match op {
                Op::Cond | Op::Colon => {}
                // `left[right]`: the index is a number, the array a field.
                Op::Index => fold_operand(right, kernel),
                _ => {
                    fold_operand(left, kernel);
                    fold_operand(right, kernel);
                }
            }
        }
        Expr::Cast { item, .. } => resolve_atoms(item, kernel),
        Expr::Flags { field, .. } | Expr::Symbol { field, .. } => resolve_atoms(field, kernel),
        Expr::Hex { field, size, .. } => {
            resolve_atoms(field, kernel);
            resolve_atoms(size, kernel);
        }
        Expr::IntArray { field, count, el_size } => {
            resolve_atoms(field, kernel);
            resolve_atoms(count, kernel);
            resolve_atoms(el_size, kernel);
        }
        Expr::Func { args, .. } => args.iter_mut().for_each(|a| resolve_atoms(a, kernel)),
        Expr::Null | Expr::Num(..) | Expr::Field(_) | Expr::NoField(_) | Expr::Str(_) | Expr::Bitmask(_) | Expr::DynArray(_) | Expr::DynArrayLen(_) | Expr::SizeofLong => {}
    }
}

/// An operand (read by `num` only) made a number when it is constant:
/// what `num` would compute from it for every record. Its own operands
/// were folded first ([`resolve_atoms`] works bottom-up).
fn fold_operand(e: &mut Expr, kernel: bool) {
    let value = |e: &Expr| match e {
        Expr::Num(v, _) => Some(*v),
        _ => None,
    };
    let v = match e {
        // Kernel casts depend on the traced machine's long size: left.
        Expr::Cast { item, tep_mask, .. } if !kernel => {
            fold_operand(item, kernel);
            value(item).map(|v| v & *tep_mask)
        }
        Expr::Op { op, left, right, .. } if !matches!(op, Op::Index | Op::Cond | Op::Colon) => {
            let l = if **left == Expr::Null { Some(0) } else { value(left) };
            match (l, value(right)) {
                (Some(l), Some(r)) => Some(super::eval::apply(*op, l, r, kernel)),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(v) = v {
        *e = Expr::Num(v, Box::default());
    }
}

/// libtraceevent `arg_num_eval`: constant folding of symbol-table values.
fn arg_num_eval(e: &Expr) -> Option<i64> {
    match e {
        Expr::Atom(a) => Some(strtoll(a)),
        Expr::Cast { item, tep_mask, .. } => Some((arg_num_eval(item)? as u64 & tep_mask) as i64),
        Expr::Op { op, left, right, .. } => {
            let l = || if **left == Expr::Null { Some(0) } else { arg_num_eval(left) };
            let r = || arg_num_eval(right);
            Some(match op {
                Op::BitOr => l()? | r()?,
                Op::Or => (l()? != 0 || r()? != 0) as i64,
                Op::BitAnd => l()? & r()?,
                Op::And => (l()? != 0 && r()? != 0) as i64,
                Op::Lt => (l()? < r()?) as i64,
                Op::Shl => l()?.wrapping_shl(r()? as u32),
                Op::Le => (l()? <= r()?) as i64,
                Op::Gt => (l()? > r()?) as i64,
                Op::Shr => l()?.wrapping_shr(r()? as u32),
                Op::Ge => (l()? >= r()?) as i64,
                Op::Eq => (l()? == r()?) as i64,
                Op::Ne => (l()? != r()?) as i64,
                Op::Sub => l()?.wrapping_sub(r()?),
                Op::Add => l()?.wrapping_add(r()?),
                Op::BitNot => !r()?,
                _ => return None,
            })
        }
        _ => None,
    }
}

/// libtraceevent `arg_eval`: the text of a symbol-table entry.
fn arg_eval(e: &Expr) -> Option<Box<str>> {
    match e {
        Expr::Atom(a) => Some(a.clone()),
        Expr::Cast { item, .. } => arg_eval(item),
        Expr::Op { .. } => Some(arg_num_eval(e)?.to_string().into()),
        _ => None,
    }
}

/// libtraceevent `consolidate_op_arg`: folds operators over two number atoms.
pub(crate) fn consolidate(e: &mut Expr) {
    let Expr::Op { op, left, right, .. } = e else { return };
    consolidate(left);
    consolidate(right);
    let (Expr::Atom(l), Expr::Atom(r)) = (&**left, &**right) else { return };
    let (l, r) = (strtoull(l), strtoull(r));
    let v = match op {
        Op::Shr => l.wrapping_shr(r as u32),
        Op::Ge => (l >= r) as u64,
        Op::Gt => (l > r) as u64,
        Op::Shl => l.wrapping_shl(r as u32),
        Op::Le => (l <= r) as u64,
        Op::Lt => (l < r) as u64,
        Op::And => (l != 0 && r != 0) as u64,
        Op::BitAnd => l & r,
        Op::Or => (l != 0 || r != 0) as u64,
        Op::BitOr => l | r,
        Op::Sub => l.wrapping_sub(r),
        Op::Add => l.wrapping_add(r),
        Op::Mul => l.wrapping_mul(r),
        Op::Xor => l ^ r,
        Op::Div if r != 0 => l / r,
        Op::Mod if r != 0 => l % r,
        Op::Eq => (l == r) as u64,
        Op::Ne => (l != r) as u64,
        _ => return,
    };
    *e = Expr::Atom((v as i64).to_string().into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, kernel: bool) -> Vec<Expr> {
        Parser::new(lex(s.as_bytes()), &[], kernel).args().unwrap()
    }

    #[test]
    fn lexes_ops_and_strings() {
        let t = lex(br#"REC->a >>= "x" "y", 'c'"#);
        assert_eq!(
            t,
            vec![
                Tok::Item("REC".into()),
                Tok::Op("->".into()),
                Tok::Item("a".into()),
                Tok::Op(">>=".into()),
                Tok::Dquote("xy".into()),
                Tok::Delim(b','),
                Tok::Squote("c".into()),
            ]
        );
    }

    #[test]
    fn folds_constants() {
        assert_eq!(parse("((0x1 | 0x2) + 1) << 1", false), vec![Expr::Atom("8".into())]);
        assert_eq!(parse("1 - 2 * 3 + 4", true), vec![Expr::Atom("-1".into())]);
        // libtraceevent groups this as 1 - (2*3 + 4).
        assert_eq!(parse("1 - 2 * 3 + 4", false), vec![Expr::Atom("-9".into())]);
    }

    #[test]
    fn strto() {
        assert_eq!(strtoull("0x10"), 16);
        assert_eq!(strtoull("010"), 8);
        assert_eq!(strtoull("-1"), u64::MAX);
        assert_eq!(strtoull("HRTIMER"), 0);
        assert_eq!(strtoll("0xffffffffffffffff"), i64::MAX);
    }
}
