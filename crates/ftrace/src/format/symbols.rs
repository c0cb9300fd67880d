//! `/proc/kallsyms` and tracefs `printk_formats` (both also stored in
//! trace.dat): address → name tables used when rendering `%ps`/`%pS` and
//! `bprint`/`%s`-of-pointer arguments.

/// Kernel symbols sorted by address.
#[derive(Clone, Debug)]
pub struct Kallsyms {
    /// (address, name, module) sorted by address, file order kept among equals.
    syms: Vec<(u64, Box<str>, Option<Box<str>>)>,
    /// Names this table in [`TEP_CACHE`] (a clone shares it: same content).
    id: u64,
}

impl Default for Kallsyms {
    fn default() -> Self {
        Kallsyms { syms: Vec::new(), id: next_id() }
    }
}

/// Table ids start at 1: a cache slot of id 0 is empty.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Slots of the per-thread lookup cache.
const TEP_SLOTS: usize = 1024;

thread_local! {
    /// [`Kallsyms::lookup_tep`]'s recent answers, direct-mapped by address:
    /// (table id, address, index into the table or `u32::MAX` for none). A
    /// trace calls the same few hundred functions and call sites over and
    /// over (timer callbacks, kmalloc call sites): the binary search over
    /// 100,000+ symbols was a fifth of a report's time (perf, bench/README.md).
    static TEP_CACHE: std::cell::RefCell<Box<[(u64, u64, u32)]>> = std::cell::RefCell::new(vec![(0, 0, 0); TEP_SLOTS].into_boxed_slice());
}

impl Kallsyms {
    /// Parses `addr type name [module]` lines. Absolute symbols (`A`/`a`,
    /// per-CPU offsets on x86-64) and ARM `$` mapping symbols are left out,
    /// and a malformed line ends the table, as libtraceevent's
    /// `tep_parse_kallsyms` does (event-parse.c: its sscanf failing is `goto out`).
    pub fn parse(text: &[u8]) -> Kallsyms {
        let text = String::from_utf8_lossy(text);
        let mut syms = Vec::new();
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let mut it = line.split_whitespace();
            let (Some(a), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else { break };
            let a = a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")).unwrap_or(a);
            // `%16llx`: at most 16 digits (more would be read by `%c`).
            if a.len() > 16 || ty.len() != 1 {
                break;
            }
            let Ok(addr) = u64::from_str_radix(a, 16) else { break };
            if ty == "A" || ty == "a" || name.starts_with('$') {
                continue;
            }
            let module = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']').into());
            syms.push((addr, name.into(), module));
        }
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms, id: next_id() }
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    fn index(&self, addr: u64) -> Option<usize> {
        // First index whose address is > addr, minus one; then the first of equals.
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let a = self.syms[i].0;
        Some(self.syms[..=i].partition_point(|s| s.0 < a))
    }

    /// The symbol containing `addr` (the closest one at or below it) and the
    /// offset of `addr` into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.index(addr)?;
        let s = &self.syms[i];
        Some((&s.1, addr - s.0))
    }

    /// Like [`lookup`](Self::lookup) plus the symbol's size (distance to the
    /// next higher symbol, 0 for the last) and module, as the kernel's `%pS` needs.
    pub fn lookup_full(&self, addr: u64) -> Option<(&str, u64, u64, Option<&str>)> {
        let i = self.index(addr)?;
        let s = &self.syms[i];
        let next = self.syms[i..].iter().find(|n| n.0 > s.0).map_or(s.0, |n| n.0);
        Some((&s.1, addr - s.0, next - s.0, s.2.as_deref()))
    }

    /// libtraceevent's lookup (`__find_func`, event-parse.c), alias choice
    /// included. Its table is the registration list (each kallsyms line
    /// pushed on the front, so file order reversed) sorted by address with
    /// glibc's stable merge sort: among symbols of one address, the last in
    /// the file comes first. glibc `bsearch` then probes with `func_bcmp`,
    /// which accepts an entry of the same address or one that `addr` lies
    /// after and before the next entry; the table's end is a sentinel of
    /// address 0, so past the last symbol only an exact address matches. Of
    /// several names at one address, the one returned is where the probes
    /// land: for an address inside a function the last of the run (the
    /// first in the file), for an exact address whichever the halving meets.
    pub(crate) fn lookup_tep(&self, addr: u64) -> Option<(&str, u64)> {
        let slot = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % TEP_SLOTS;
        let hit = TEP_CACHE.with(|c| {
            let c = c.borrow();
            let (id, a, i) = c[slot];
            (id == self.id && a == addr).then_some(i)
        });
        let i = match hit {
            Some(i) => i,
            None => {
                let i = self.tep_index(addr).map_or(u32::MAX, |i| i as u32);
                TEP_CACHE.with(|c| c.borrow_mut()[slot] = (self.id, addr, i));
                i
            }
        };
        let sym = self.syms.get(i as usize)?;
        Some((&sym.1, sym.0))
    }

    /// The index into `syms` of [`lookup_tep`](Self::lookup_tep)'s answer.
    fn tep_index(&self, addr: u64) -> Option<usize> {
        let n = self.syms.len();
        let at = |i: usize| self.syms.get(i).map_or(0, |s| s.0);
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let i = (lo + hi) / 2;
            let a = at(i);
            if addr == a || (addr > a && addr < at(i + 1)) {
                // Position i of libtraceevent's table: within the run of
                // equal addresses [s, e) in file order, position i holds
                // file entry s + (e - 1 - i).
                let s = self.syms[..i].partition_point(|x| x.0 < a);
                let e = i + self.syms[i..].partition_point(|x| x.0 == a);
                return Some(s + (e - 1 - i));
            }
            if addr < a {
                hi = i;
            } else {
                lo = i + 1;
            }
        }
        None
    }

    /// Address of a symbol by name (linear; only used for print-format atoms).
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.syms.iter().find(|s| &*s.1 == name).map(|s| s.0)
    }
}

/// tracefs `printk_formats`: `0xaddr : "format"` lines.
#[derive(Clone, Debug, Default)]
pub struct PrintkFormats {
    map: Vec<(u64, Box<str>)>,
}

impl PrintkFormats {
    /// Parses the file; the quotes and a trailing `\n` escape are removed as
    /// libtraceevent does (`tep_register_print_string`). Bad lines are skipped.
    pub fn parse(text: &[u8]) -> PrintkFormats {
        let text = String::from_utf8_lossy(text);
        let mut map = Vec::new();
        for line in text.lines() {
            let Some((a, f)) = line.split_once(':') else { continue };
            let a = a.trim();
            let Ok(addr) = u64::from_str_radix(a.trim_start_matches("0x").trim_start_matches("0X"), 16) else {
                continue;
            };
            let mut f = f.strip_prefix(' ').unwrap_or(f);
            f = f.strip_prefix('"').unwrap_or(f);
            f = f.strip_suffix('"').unwrap_or(f);
            f = f.strip_suffix("\\n").unwrap_or(f);
            map.push((addr, f.into()));
        }
        map.sort_by_key(|e| e.0);
        PrintkFormats { map }
    }

    pub fn get(&self, addr: u64) -> Option<&str> {
        self.map.binary_search_by_key(&addr, |e| e.0).ok().map(|i| &*self.map[i].1)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Kallsyms;
    use proptest::prelude::*;

    /// libtraceevent's table and lookup written out as the C does them
    /// (event-parse.c `tep_register_function`, `func_map_init`,
    /// `__find_func`, glibc `bsearch`), to check [`Kallsyms::lookup_tep`]'s
    /// index arithmetic against.
    fn c_lookup(lines: &[(u64, String)], addr: u64) -> Option<(String, u64)> {
        let mut list: Vec<(u64, String)> = Vec::new();
        for l in lines {
            list.insert(0, l.clone()); // item->next = tep->funclist
        }
        list.sort_by_key(|e| e.0); // glibc qsort: merge sort, stable
        let n = list.len();
        list.push((0, String::new())); // the sentinel
        let (mut l, mut u) = (0, n);
        while l < u {
            let idx = (l + u) / 2;
            let fb = &list[idx];
            let cmp = if addr == fb.0 || (addr > fb.0 && addr < list[idx + 1].0) {
                0
            } else if addr < fb.0 {
                -1
            } else {
                1
            };
            match cmp {
                -1 => u = idx,
                1 => l = idx + 1,
                _ => return Some((fb.1.clone(), fb.0)),
            }
        }
        None
    }

    proptest! {
        #[test]
        fn alias_choice_as_libtraceevent(addrs in proptest::collection::vec(0u64..24, 1..40), probe in 0u64..30) {
            let lines: Vec<(u64, String)> = addrs.iter().enumerate().map(|(i, a)| (a * 4, format!("f{i}"))).collect();
            let text: String = lines.iter().map(|(a, n)| format!("{a:x} T {n}\n")).collect();
            let k = Kallsyms::parse(text.as_bytes());
            for addr in [probe * 4, probe * 4 + 1] {
                let ours = k.lookup_tep(addr).map(|(n, a)| (n.to_string(), a));
                prop_assert_eq!(ours, c_lookup(&lines, addr), "addr {}", addr);
            }
        }
    }

    #[test]
    fn a_malformed_line_ends_the_table() {
        let k = Kallsyms::parse(b"1000 T a\n\n2000 t b [mod]\n3000 A abs\n4000 T $x\nzz T c\n5000 T d\n");
        assert_eq!(k.len(), 2);
        assert_eq!(k.lookup(0x2004), Some(("b", 4)));
    }
}
