//! Appending the small pieces of a rendered line (names, comms, numbers,
//! padding) to a byte buffer without a call into libc per piece.
//!
//! A text merge appends a dozen pieces of 1 to 40 bytes per event.
//! `extend_from_slice` of a length unknown at compile time is a call to
//! `memcpy`, `resize` one to `memset`: with their reserve checks they cost
//! more than the bytes they move (callgrind: libc `memcpy` alone was 8% of
//! a text merge's instructions). Here a piece of up to 64 bytes is two
//! fixed-size moves that overlap in the middle, and a number is formatted
//! into the buffer's spare room in place.
//!
//! Each function is what the `format!` spec in its comment does, byte for
//! byte (property tests below).

use std::ptr;

/// Spare room every writer here asks for before it writes: the largest
/// piece any of them writes in one go (two 32-byte moves).
const ROOM: usize = 64;

const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Copies `n` bytes, `K <= n <= 2K`, as two `K`-byte moves.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
#[inline(always)]
unsafe fn copy2<const K: usize>(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: both moves stay within the first n bytes (K <= n), per the
    // caller's contract.
    unsafe {
        let a = ptr::read_unaligned(src as *const [u8; K]);
        let b = ptr::read_unaligned(src.add(n - K) as *const [u8; K]);
        ptr::write_unaligned(dst as *mut [u8; K], a);
        ptr::write_unaligned(dst.add(n - K) as *mut [u8; K], b);
    }
}

/// `out.extend_from_slice(s)`.
#[inline(always)]
pub fn bytes(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > ROOM {
        return out.extend_from_slice(s);
    }
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: `reserve` leaves at least ROOM >= n writable bytes after
    // `len`; each arm reads s[..n] and writes the n bytes after `len`
    // (copy2's contract holds: K <= n <= 2K in its arm), then `set_len`
    // covers exactly those bytes.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        let src = s.as_ptr();
        match n {
            0 => {}
            1..=3 => {
                // n = 1: byte 0 thrice; 2: 0, 1, 1; 3: 0, 1, 2.
                *dst = *src;
                *dst.add(n / 2) = *src.add(n / 2);
                *dst.add(n - 1) = *src.add(n - 1);
            }
            4..=7 => copy2::<4>(src, dst, n),
            8..=15 => copy2::<8>(src, dst, n),
            16..=31 => copy2::<16>(src, dst, n),
            _ => copy2::<32>(src, dst, n),
        }
        out.set_len(len + n);
    }
}

/// `n` copies of `c` (`out.resize(out.len() + n, c)`).
#[inline(always)]
pub fn fill(out: &mut Vec<u8>, c: u8, n: usize) {
    if n > ROOM {
        return out.resize(out.len() + n, c);
    }
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: ROOM writable bytes after `len` (reserve); the two moves
    // write bytes len..len+64 of the spare room; `set_len` covers n <= 64 of them.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        ptr::write_unaligned(dst as *mut [u8; 32], [c; 32]);
        ptr::write_unaligned(dst.add(32) as *mut [u8; 32], [c; 32]);
        out.set_len(len + n);
    }
}

/// Decimal digits of `v`: from its bit length (1233 / 4096 is just above
/// log10 2), one comparison to correct the estimate.
#[inline(always)]
fn dec_digits(v: u64) -> usize {
    const POW10: [u64; 20] = {
        let mut t = [1u64; 20];
        let mut i = 1;
        while i < 20 {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    let bits = 64 - (v | 1).leading_zeros() as usize;
    let t = (bits * 1233) >> 12;
    (t + (v >= POW10[t]) as usize).max(1)
}

/// `{v:>width$}` (`pad` b' ') or `{v:0width$}` (`pad` b'0').
#[inline]
pub fn dec(out: &mut Vec<u8>, v: u64, width: usize, pad: u8) {
    // Pids, prios, CPUs: one or two digits without the general path.
    if width <= 1 && v < 10 {
        return out.push(b'0' + v as u8);
    }
    if width <= 2 && v < 100 {
        let d = v as usize * 2;
        if v >= 10 || pad == b'0' && width == 2 {
            return bytes(out, &PAIRS[d..d + 2]);
        }
    }
    let digits = dec_digits(v);
    let mut total = width.max(digits);
    if total > 32 {
        fill(out, pad, total - digits);
        total = digits;
    }
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: ROOM writable bytes after `len` (reserve). The padding move
    // writes 32 of them; every digit lands at an index i - 1 or i - 2 with
    // total - digits <= i - 2 and i <= total <= 32 (the loop writes exactly
    // `digits` bytes ending at `total`); `set_len` covers `total` bytes,
    // all written.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        ptr::write_unaligned(dst as *mut [u8; 32], [pad; 32]);
        let mut i = total;
        let mut v = v;
        // Eight digits per 64-bit division, the pairs in 32 bits.
        while v >= 100_000_000 {
            i -= 8;
            digits8(dst.add(i), (v % 100_000_000) as u32);
            v /= 100_000_000;
        }
        let mut v = v as u32;
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            ptr::copy_nonoverlapping(PAIRS.as_ptr().add(d), dst.add(i), 2);
        }
        if v >= 10 {
            i -= 2;
            ptr::copy_nonoverlapping(PAIRS.as_ptr().add(v as usize * 2), dst.add(i), 2);
        } else {
            *dst.add(i - 1) = b'0' + v as u8;
        }
        out.set_len(len + total);
    }
}

/// Writes the eight digits of `lo` (below 10^8, zero-padded).
///
/// # Safety
/// `dst` is writable for 8 bytes.
#[inline(always)]
unsafe fn digits8(dst: *mut u8, mut lo: u32) {
    for k in (0..4).rev() {
        let d = (lo % 100) as usize * 2;
        lo /= 100;
        // SAFETY: d <= 198 indexes a pair of PAIRS; 2k + 2 <= 8 (caller).
        unsafe { ptr::copy_nonoverlapping(PAIRS.as_ptr().add(d), dst.add(2 * k), 2) };
    }
}

/// `{lo:08}` for `lo` below 10^8 (larger values: their last eight digits).
#[inline]
pub fn dec8(out: &mut Vec<u8>, lo: u32) {
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: 8 < ROOM writable bytes after `len` (reserve), all written.
    unsafe {
        digits8(out.as_mut_ptr().add(len), lo % 100_000_000);
        out.set_len(len + 8);
    }
}

/// `{lo:06}` for `lo` below 10^6 (larger values: their last six digits):
/// the microseconds of a timestamp.
#[inline]
pub fn dec6(out: &mut Vec<u8>, lo: u32) {
    let lo = lo % 1_000_000;
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: 6 < ROOM writable bytes after `len` (reserve), all written:
    // three pairs, each index d <= 198 into PAIRS.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        let pairs = [lo / 10_000, lo / 100 % 100, lo % 100];
        for (k, p) in pairs.into_iter().enumerate() {
            ptr::copy_nonoverlapping(PAIRS.as_ptr().add(p as usize * 2), dst.add(2 * k), 2);
        }
        out.set_len(len + 6);
    }
}

/// `{v}` for a signed value.
#[inline]
pub fn dec_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    dec(out, v.unsigned_abs(), 0, b' ');
}

/// `{v:<width$}` for a signed value.
#[inline]
pub fn dec_i64_left(out: &mut Vec<u8>, v: i64, width: usize) {
    let start = out.len();
    dec_i64(out, v);
    fill(out, b' ', width.saturating_sub(out.len() - start));
}

/// The 8 hex digits of `x` as ASCII, most significant first (SWAR: each
/// nibble spread to a byte, then `0`..`9`/`a`..`f` added to all at once).
#[inline(always)]
fn hex8(x: u32) -> [u8; 8] {
    let x = x as u64;
    let x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    let x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    let x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte holding 10..15: those get 'a' - '0' - 10 = 39 more.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// `{b:02x}`.
#[inline]
pub fn hex2(out: &mut Vec<u8>, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]);
}

/// `{v:x}`: lowercase hex digits, no prefix.
#[inline]
pub fn hex(out: &mut Vec<u8>, v: u64) {
    let digits = (64 - (v | 1).leading_zeros() as usize).div_ceil(4);
    // The digits moved to the top: all 16 are written, `digits` kept.
    let v = v << (4 * (16 - digits));
    out.reserve(ROOM);
    let len = out.len();
    // SAFETY: 16 <= ROOM writable bytes after `len` (reserve); `set_len`
    // covers the first `digits` <= 16 of them, all written.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        ptr::write_unaligned(dst as *mut [u8; 8], hex8((v >> 32) as u32));
        ptr::write_unaligned(dst.add(8) as *mut [u8; 8], hex8(v as u32));
        out.set_len(len + digits);
    }
}

/// `0x{v:x}`.
#[inline]
pub fn hex0x(out: &mut Vec<u8>, v: u64) {
    bytes(out, b"0x");
    hex(out, v);
}

/// `{s:>width$}`: std pads by characters, not bytes.
#[inline]
pub fn str_right(out: &mut Vec<u8>, s: &str, width: usize) {
    let n = if s.is_ascii() { s.len() } else { s.chars().count() };
    fill(out, b' ', width.saturating_sub(n));
    bytes(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bytes_and_fill_append(pre in proptest::collection::vec(any::<u8>(), 0..80), s in proptest::collection::vec(any::<u8>(), 0..150), c in any::<u8>(), n in 0usize..150) {
            let mut a = pre.clone();
            bytes(&mut a, &s);
            fill(&mut a, c, n);
            let mut want = pre;
            want.extend_from_slice(&s);
            want.resize(want.len() + n, c);
            prop_assert_eq!(a, want);
        }

        #[test]
        fn numbers_are_format(v in any::<u64>(), small in 0u64..1000, i in any::<i64>(), width in 0usize..40, pre in 0usize..70, e in 0u32..20) {
            let p = 10u64.pow(e);
            for v in [v, small, 0, 9, 10, 99, 100, 99_999_999, 100_000_000, u64::MAX, p - 1, p, p + 1, v >> (v % 64), 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0xa, 0xf0] {
                let mut a = vec![b'x'; pre];
                dec(&mut a, v, width, b' ');
                prop_assert_eq!(a[pre..].to_vec(), format!("{v:>width$}").into_bytes());
                let mut z = Vec::new();
                dec(&mut z, v, width, b'0');
                prop_assert_eq!(z, format!("{v:0width$}").into_bytes());
                let mut e8 = Vec::new();
                dec8(&mut e8, (v % 100_000_000) as u32);
                prop_assert_eq!(e8, format!("{:08}", v % 100_000_000).into_bytes());
                let mut e6 = vec![b'x'; pre];
                dec6(&mut e6, (v % 1_000_000) as u32);
                prop_assert_eq!(e6[pre..].to_vec(), format!("{:06}", v % 1_000_000).into_bytes());
                let mut x = vec![b'x'; pre];
                hex0x(&mut x, v);
                prop_assert_eq!(x[pre..].to_vec(), format!("0x{v:x}").into_bytes());
                let mut h2 = Vec::new();
                hex2(&mut h2, v as u8);
                prop_assert_eq!(h2, format!("{:02x}", v as u8).into_bytes());
                let mut h = vec![b'x'; pre];
                hex(&mut h, v);
                prop_assert_eq!(h[pre..].to_vec(), format!("{v:x}").into_bytes());
            }
            for i in [i, small as i64, -(small as i64), i64::MIN, i64::MAX, 0] {
                let mut a = Vec::new();
                dec_i64(&mut a, i);
                prop_assert_eq!(a, i.to_string().into_bytes());
                let mut l = Vec::new();
                dec_i64_left(&mut l, i, width);
                prop_assert_eq!(l, format!("{i:<width$}").into_bytes());
            }
        }

        #[test]
        fn str_right_is_format(s in "\\PC{0,20}", width in 0usize..40) {
            let mut a = Vec::new();
            str_right(&mut a, &s, width);
            prop_assert_eq!(a, format!("{s:>width$}").into_bytes());
        }
    }
}
