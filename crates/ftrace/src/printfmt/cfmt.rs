//! The print format string split into literal text and conversions, and a
//! small C `printf` for one conversion at a time.
//!
//! Splitting follows libtraceevent 1.7.1 `parse_args`/`parse_arg_format` in
//! trace-cmd mode (which turns `%c`, `%+d` and `% d` into the literal
//! `>c<`/`>+<`/`> <`: support came in 1.7.3) and lib/vsprintf.c in kernel mode.

use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Digit,
    Pointer,
    Str,
}

/// One `%` conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub minus: bool,
    pub zero: bool,
    pub plus: bool,
    pub space: bool,
    pub hash: bool,
    pub width: Option<usize>,
    pub prec: Option<usize>,
    pub star_width: bool,
    pub star_prec: bool,
    /// Length modifier as libtraceevent counts it: hh=-2 h=-1 none=0 l=1 ll=2.
    pub ls: i8,
    pub conv: u8,
    /// Letters after `%p` (`s`, `S`, `I4`, `M`...).
    pub ext: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(Vec<u8>),
    Conv { spec: Spec, kind: Kind, arg: usize, len_arg: Option<usize> },
}

/// Splits `fmt` consuming argument indices in order. `Err` when an argument
/// is missing (libtraceevent marks the event FAILED).
pub(crate) fn split(fmt: &[u8], nargs: usize, tep: bool) -> Result<Vec<Piece>, ()> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut next_arg = 0usize;
    let mut i = 0;
    let take = |next_arg: &mut usize| -> Result<usize, ()> {
        if *next_arg >= nargs {
            return Err(());
        }
        *next_arg += 1;
        Ok(*next_arg - 1)
    };
    while i < fmt.len() {
        let c = fmt[i];
        if c == b'\\' {
            i += 1;
            let Some(&e) = fmt.get(i) else { break };
            lit.push(match e {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                other => other,
            });
            i += 1;
            continue;
        }
        if c != b'%' {
            lit.push(c);
            i += 1;
            continue;
        }
        if fmt.get(i + 1) == Some(&b'%') {
            lit.push(b'%');
            i += 2;
            continue;
        }
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        i += 1;
        let mut s = Spec {
            minus: false, zero: false, plus: false, space: false, hash: false, width: None, prec: None,
            star_width: false, star_prec: false, ls: 0, conv: 0, ext: "".into(),
        };
        let mut len_arg = None;
        let mut in_prec = false;
        let mut ls: i32 = 0;
        while let Some(&ch) = fmt.get(i) {
            i += 1;
            match ch {
                b'#' => s.hash = true,
                b'-' => s.minus = true,
                b'+' | b' ' if !tep => {
                    if ch == b'+' { s.plus = true } else { s.space = true }
                }
                b'h' => ls -= 1,
                b'l' => ls += 1,
                b'L' | b'q' => ls = 2,
                b'z' | b'Z' | b'j' | b't' => ls = 1,
                b'.' => {
                    in_prec = true;
                    s.prec = Some(0);
                }
                b'0'..=b'9' => {
                    let d = (ch - b'0') as usize;
                    if in_prec {
                        s.prec = Some(s.prec.unwrap_or(0).saturating_mul(10).saturating_add(d).min(4096));
                    } else if ch == b'0' && s.width.is_none() {
                        s.zero = true;
                    } else {
                        s.width = Some(s.width.unwrap_or(0).saturating_mul(10).saturating_add(d).min(4096));
                    }
                }
                b'*' => {
                    if len_arg.is_some() {
                        return Err(());
                    }
                    len_arg = Some(take(&mut next_arg)?);
                    if in_prec { s.star_prec = true } else { s.star_width = true }
                }
                b'p' => {
                    let arg = take(&mut next_arg)?;
                    let n = pointer_ext_len(&fmt[i..], tep);
                    s.ext = String::from_utf8_lossy(&fmt[i..i + n]).into();
                    i += n;
                    s.conv = b'p';
                    s.ls = 1;
                    out.push(Piece::Conv { spec: s, kind: Kind::Pointer, arg, len_arg });
                    break;
                }
                b'd' | b'u' | b'i' | b'x' | b'X' | b'o' | b'c' if ch != b'c' || !tep => {
                    if !(-2..=2).contains(&ls) {
                        return Err(());
                    }
                    let arg = take(&mut next_arg)?;
                    s.conv = ch;
                    s.ls = ls as i8;
                    out.push(Piece::Conv { spec: s, kind: Kind::Digit, arg, len_arg });
                    break;
                }
                b's' => {
                    let arg = take(&mut next_arg)?;
                    s.conv = b's';
                    out.push(Piece::Conv { spec: s, kind: Kind::Str, arg, len_arg });
                    break;
                }
                other => {
                    if tep {
                        out.push(Piece::Lit(vec![b'>', other, b'<']));
                    }
                    break;
                }
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// libtraceevent `parse_arg_format_pointer`: letters after `%p` that belong to it.
fn pointer_ext_len(f: &[u8], tep: bool) -> usize {
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let mut ret = 0;
    match at(0) {
        b'F' | b'S' | b'f' | b's' => ret += 1,
        b'M' | b'm' => {
            if matches!(at(1), b'R' | b'F') {
                ret += 1;
            }
            ret += 1;
        }
        b'I' | b'i' => {
            let mut index = 2;
            match at(1) {
                b'S' => {
                    while matches!(at(index), b'p' | b'f' | b's') {
                        ret += 1;
                        index += 1;
                    }
                    if matches!(at(index), b'h' | b'n' | b'l' | b'b') {
                        ret += 1;
                        index += 1;
                    }
                    if at(index) == b'c' {
                        ret += 1;
                    }
                    ret += 1;
                }
                b'4' => {
                    if matches!(at(index), b'h' | b'n' | b'l' | b'b') {
                        ret += 1;
                    }
                    ret += 1;
                }
                b'6' => {
                    if at(index) == b'c' {
                        ret += 1;
                    }
                    ret += 1;
                }
                _ => {}
            }
            ret += 1;
        }
        b'U' => {
            if matches!(at(1), b'L' | b'l' | b'B' | b'b') {
                ret += 1;
            }
            ret += 1;
        }
        b'h' => {
            if matches!(at(1), b'C' | b'D' | b'N') {
                ret += 1;
            }
            ret += 1;
        }
        b'x' | b'K' if !tep => ret += 1,
        _ => {}
    }
    ret.min(f.len())
}

/// `{v:x}`: lowercase hex digits, no prefix.
pub(crate) use crate::put::hex as put_hex;

impl Spec {
    /// No flags, width or precision: the conversion prints its digits alone.
    fn plain(&self) -> bool {
        !(self.minus || self.zero || self.plus || self.space || self.hash || self.star_width || self.star_prec)
            && self.width.is_none()
            && self.prec.is_none()
    }

    /// Width/precision after applying a `*` argument.
    fn resolved(&self, star: Option<i64>) -> (bool, Option<usize>, Option<usize>) {
        let mut minus = self.minus;
        let mut width = self.width;
        let mut prec = self.prec;
        if let Some(v) = star {
            if self.star_width {
                if v < 0 {
                    minus = true;
                }
                width = Some((v.unsigned_abs() as usize).min(4096));
            } else if self.star_prec {
                prec = if v < 0 { None } else { Some((v as usize).min(4096)) };
            }
        }
        (minus, width, prec)
    }
}

fn pad(out: &mut Vec<u8>, n: usize, c: u8) {
    crate::put::fill(out, c, n);
}

/// `printf("%<spec>s", s)`.
pub(crate) fn put_str(out: &mut Vec<u8>, spec: &Spec, star: Option<i64>, s: &[u8]) {
    let (minus, width, prec) = spec.resolved(star);
    let s = match prec {
        Some(p) if p < s.len() => &s[..p],
        _ => s,
    };
    let w = width.unwrap_or(0);
    if !minus && w > s.len() {
        pad(out, w - s.len(), b' ');
    }
    crate::put::bytes(out, s);
    if minus && w > s.len() {
        pad(out, w - s.len(), b' ');
    }
}

/// `printf` of an integer already truncated to the conversion's width:
/// `value` holds the bits, `bits` says how many are meaningful.
pub(crate) fn put_int(out: &mut Vec<u8>, spec: &Spec, star: Option<i64>, value: u64, bits: u32) {
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let v = value & mask;
    // The common `%u` `%d` `%x` without flags, width or precision: straight
    // to the digits (what the general path below does, minus its padding).
    if star.is_none() && spec.plain() {
        match spec.conv {
            b'u' => return crate::put::dec(out, v, 0, b' '),
            b'd' | b'i' => {
                let sv = if bits >= 64 { v as i64 } else { ((v << (64 - bits)) as i64) >> (64 - bits) };
                return crate::put::dec_i64(out, sv);
            }
            b'x' => return put_hex(out, v),
            _ => {}
        }
    }
    let (minus, width, prec) = spec.resolved(star);
    let mut sign: &[u8] = b"";
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut write_digits = |mut m: u64, radix: u64, upper: bool| {
        if radix == 10 {
            let mut b = itoa::Buffer::new();
            let d = b.format(m).as_bytes();
            digits[..d.len()].copy_from_slice(d);
            n = d.len();
            return;
        }
        if m == 0 {
            digits[0] = b'0';
            n = 1;
        }
        while m > 0 {
            let d = (m % radix) as u8;
            digits[n] = if d < 10 { b'0' + d } else if upper { b'A' + d - 10 } else { b'a' + d - 10 };
            n += 1;
            m /= radix;
        }
        digits[..n].reverse();
    };
    let mut prefix: &[u8] = b"";
    match spec.conv {
        b'd' | b'i' => {
            let sv = if bits >= 64 { v as i64 } else { ((v << (64 - bits)) as i64) >> (64 - bits) };
            if sv < 0 {
                sign = b"-";
            } else if spec.plus {
                sign = b"+";
            } else if spec.space {
                sign = b" ";
            }
            write_digits(sv.unsigned_abs(), 10, false);
        }
        b'u' => write_digits(v, 10, false),
        b'x' | b'X' => {
            write_digits(v, 16, spec.conv == b'X');
            if spec.hash && v != 0 {
                prefix = if spec.conv == b'X' { b"0X" } else { b"0x" };
            }
        }
        b'o' => {
            write_digits(v, 8, false);
            if spec.hash && digits[0] != b'0' {
                prefix = b"0";
            }
        }
        b'c' => {
            put_str(out, spec, star, &[v as u8]);
            return;
        }
        _ => write_digits(v, 10, false),
    }
    let mut body = &digits[..n];
    if prec == Some(0) && v == 0 {
        body = b"";
    }
    let zeros = prec.map_or(0, |p| p.saturating_sub(body.len()));
    let len = sign.len() + prefix.len() + zeros + body.len();
    let w = width.unwrap_or(0);
    let fill = w.saturating_sub(len);
    if !(minus || spec.zero && prec.is_none()) {
        pad(out, fill, b' ');
    }
    out.extend_from_slice(sign);
    out.extend_from_slice(prefix);
    if !minus && spec.zero && prec.is_none() {
        pad(out, fill, b'0');
    }
    pad(out, zeros, b'0');
    out.extend_from_slice(body);
    if minus {
        pad(out, fill, b' ');
    }
}

/// `{v}` for a signed value, without the fmt machinery (per event in plugins).
pub(crate) use crate::put::dec_i64 as dec;

/// `write!` into a Vec cannot fail.
pub(crate) fn w(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(f: &str, v: u64, bits: u32) -> String {
        let p = split(f.as_bytes(), 1, false).unwrap();
        let Piece::Conv { spec, .. } = &p[0] else { panic!() };
        let mut o = Vec::new();
        put_int(&mut o, spec, None, v, bits);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn ints_like_glibc() {
        assert_eq!(one("%03d", 1, 32), "001");
        assert_eq!(one("%d", 0xffff_ffff, 32), "-1");
        assert_eq!(one("%u", 0xffff_ffff, 32), "4294967295");
        assert_eq!(one("%#llx", 255, 64), "0xff");
        assert_eq!(one("%#x", 0, 32), "0");
        assert_eq!(one("%016llx", 0xabc, 64), "0000000000000abc");
        assert_eq!(one("%08x", 0x10, 32), "00000010");
        assert_eq!(one("%-5d", 3, 32), "3    ");
        assert_eq!(one("%5.3d", 7, 32), "  007");
        assert_eq!(one("%+d", 7, 32), "+7");
        assert_eq!(one("%ld", u64::MAX, 64), "-1");
        assert_eq!(one("%o", 8, 32), "10");
    }

    proptest::proptest! {
        /// The plain conversions' shortcut prints what C's printf does.
        #[test]
        fn plain_conversions_like_printf(v in proptest::prelude::any::<u64>(), bits in proptest::sample::select(vec![8u32, 16, 32, 64])) {
            let m = if bits == 64 { v } else { v & ((1 << bits) - 1) };
            let signed = if bits == 64 { m as i64 } else { ((m << (64 - bits)) as i64) >> (64 - bits) };
            proptest::prop_assert_eq!(one("%u", v, bits), m.to_string());
            proptest::prop_assert_eq!(one("%llu", v, bits), m.to_string());
            proptest::prop_assert_eq!(one("%d", v, bits), signed.to_string());
            proptest::prop_assert_eq!(one("%i", v, bits), signed.to_string());
            proptest::prop_assert_eq!(one("%x", v, bits), format!("{m:x}"));
            proptest::prop_assert_eq!(one("%lx", v, bits), format!("{m:x}"));
        }
    }

    #[test]
    fn tep_quirks() {
        let p = split(b"a%cb", 1, true).unwrap();
        assert_eq!(p, vec![Piece::Lit(b"a".to_vec()), Piece::Lit(b">c<".to_vec()), Piece::Lit(b"b".to_vec())]);
        assert!(split(b"%d %d", 1, true).is_err());
        assert_eq!(split(b"100%% \\n", 0, true).unwrap(), vec![Piece::Lit(b"100% \n".to_vec())]);
    }
}
