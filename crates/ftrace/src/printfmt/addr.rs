//! The address `%p` extensions of print formats: `%pM`/`%pm` (MAC),
//! `%pI4`/`%pi4` (IPv4), `%pI6`/`%pi6`/`%pI6c` (IPv6), `%pIS[p][c]`
//! (a `struct sockaddr`) and `%pU` (UUID/GUID), written as libtraceevent
//! 1.7.1 writes them (src/event-parse.c: print_mac_arg, print_ip4_addr,
//! print_ip6_addr, print_ip6c_addr, print_ipsa_arg, print_uuid_arg), which
//! follow the kernel's lib/vsprintf.c.

use super::cfmt::w;
use crate::put::hex2;

/// `%pI4` (`lower` = `%pi4`: three digits each), bytes reversed for the
/// `h`/`l` modifiers.
pub(crate) fn ip4(out: &mut Vec<u8>, lower: bool, reverse: bool, b: [u8; 4]) {
    let b = if reverse { [b[3], b[2], b[1], b[0]] } else { b };
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if lower {
            w(out, format_args!("{x:03}"));
        } else {
            w(out, format_args!("{x}"));
        }
    }
}

/// `%pI6` (groups of four hex digits with colons) or `%pi6` (no colons).
pub(crate) fn ip6(out: &mut Vec<u8>, colons: bool, b: &[u8; 16]) {
    for (j, pair) in b.chunks_exact(2).enumerate() {
        hex2(out, pair[0]);
        hex2(out, pair[1]);
        if colons && j < 7 {
            out.push(b':');
        }
    }
}

/// `%pI6c`: RFC 5952 compressed form (the longest run of two or more zero
/// groups, the first of equals, as `::`), with the last 32 bits in dotted
/// quad for v4-mapped (`::ffff:a.b.c.d`) and ISATAP addresses.
pub(crate) fn ip6c(out: &mut Vec<u8>, b: &[u8; 16]) {
    let word = |i: usize| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let v4mapped = be32(0) == 0 && be32(1) == 0 && be32(2) == 0xffff;
    let isatap = be32(2) | 0x0200_0000 == 0x0200_5efe;
    let use_v4 = v4mapped || isatap;
    let range = if use_v4 { 6 } else { 8 };
    let (mut longest, mut colonpos) = (1, None);
    for i in 0..range {
        let zeros = (i..range).take_while(|&j| word(j) == 0).count();
        if zeros > longest {
            longest = zeros;
            colonpos = Some(i);
        }
    }
    let mut needcolon = false;
    let mut i = 0;
    while i < range {
        if Some(i) == colonpos {
            if needcolon || i == 0 {
                out.push(b':');
            }
            out.push(b':');
            needcolon = false;
            i += longest;
            continue;
        }
        if needcolon {
            out.push(b':');
        }
        w(out, format_args!("{:x}", word(i)));
        needcolon = true;
        i += 1;
    }
    if use_v4 {
        if needcolon {
            out.push(b':');
        }
        ip4(out, false, false, [b[12], b[13], b[14], b[15]]);
    }
}

/// `%pIS[p][c]`: a `struct sockaddr_in`/`sockaddr_in6` (family in the byte
/// order of the machine running the report, little-endian here as for
/// libtraceevent on x86; AF_INET 2, AF_INET6 10). Other families print nothing.
pub(crate) fn ipsa(out: &mut Vec<u8>, lower: bool, port: bool, compressed: bool, reverse: bool, sa: &[u8]) {
    let Some(f) = sa.get(..4) else { return };
    let port_of = |sa: &[u8]| u16::from_be_bytes([sa[2], sa[3]]);
    match u16::from_le_bytes([f[0], f[1]]) {
        2 => {
            // sizeof(struct sockaddr_in)
            let Some(a) = sa.get(4..8).filter(|_| sa.len() >= 16) else {
                out.extend_from_slice(b"INVALIDIPv4");
                return;
            };
            ip4(out, lower, reverse, [a[0], a[1], a[2], a[3]]);
            if port {
                w(out, format_args!(":{}", port_of(sa)));
            }
        }
        10 => {
            // sizeof(struct sockaddr_in6): family, port, flowinfo, addr, scope
            let Some(a) = sa.get(8..24).filter(|_| sa.len() >= 28) else {
                out.extend_from_slice(b"INVALIDIPv6");
                return;
            };
            let Ok(a) = <&[u8; 16]>::try_from(a) else { return };
            if port {
                out.push(b'[');
            }
            if compressed {
                ip6c(out, a);
            } else {
                ip6(out, !lower, a);
            }
            if port {
                w(out, format_args!("]:{}", port_of(sa)));
            }
        }
        _ => {}
    }
}

/// `%pU[bBlL]`: 16 bytes as 8-4-4-4-12 hex digits; `l`/`L` reorder the
/// first three groups little-endian (GUID); upper case for `B`/`L`.
pub(crate) fn uuid(out: &mut Vec<u8>, variant: u8, b: &[u8; 16]) {
    const GUID: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let guid = matches!(variant, b'l' | b'L');
    let upper = matches!(variant, b'L' | b'B');
    for i in 0..16 {
        let x = b[if guid { GUID[i] } else { i }];
        if upper {
            w(out, format_args!("{x:02X}"));
        } else {
            hex2(out, x);
        }
        if matches!(i, 3 | 5 | 7 | 9) {
            out.push(b'-');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    fn v6(t: &str) -> [u8; 16] {
        t.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn ip6_compressed_as_the_kernel() {
        // Cases from the kernel's lib/test_printf.c and RFC 5952.
        assert_eq!(s(|o| ip6c(o, &v6("::"))), "::");
        assert_eq!(s(|o| ip6c(o, &v6("::1"))), "::1");
        assert_eq!(s(|o| ip6c(o, &v6("fe80::1"))), "fe80::1");
        assert_eq!(s(|o| ip6c(o, &v6("2001:db8:0:0:1:0:0:1"))), "2001:db8::1:0:0:1");
        assert_eq!(s(|o| ip6c(o, &v6("2001:db8:0:1:1:1:1:1"))), "2001:db8:0:1:1:1:1:1");
        assert_eq!(s(|o| ip6c(o, &v6("::ffff:192.168.1.1"))), "::ffff:192.168.1.1");
        assert_eq!(s(|o| ip6c(o, &v6("fe80::5efe:10.0.0.1"))), "fe80::5efe:10.0.0.1");
        assert_eq!(s(|o| ip6(o, true, &v6("::1"))), "0000:0000:0000:0000:0000:0000:0000:0001");
        assert_eq!(s(|o| ip6(o, false, &v6("::1"))), "00000000000000000000000000000001");
    }

    #[test]
    fn ip4_and_sockaddr() {
        assert_eq!(s(|o| ip4(o, false, false, [10, 0, 0, 1])), "10.0.0.1");
        assert_eq!(s(|o| ip4(o, true, true, [1, 0, 0, 10])), "010.000.000.001");
        let mut sin = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1];
        sin.resize(16, 0);
        assert_eq!(s(|o| ipsa(o, false, true, false, false, &sin)), "127.0.0.1:8080");
        let mut sin6 = vec![10, 0, 0, 80, 0, 0, 0, 0];
        sin6.extend_from_slice(&v6("::1"));
        sin6.resize(28, 0);
        assert_eq!(s(|o| ipsa(o, false, true, true, false, &sin6)), "[::1]:80");
        assert_eq!(s(|o| ipsa(o, false, false, true, false, &sin6[..20])), "INVALIDIPv6");
    }

    #[test]
    fn uuids() {
        let b: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(s(|o| uuid(o, b'b', &b)), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(s(|o| uuid(o, b'L', &b)), "03020100-0504-0706-0809-0A0B0C0D0E0F");
    }
}
