//! `/proc/kallsyms` and tracefs `printk_formats` (both also stored in
//! trace.dat): address → name tables used when rendering `%ps`/`%pS` and
//! `bprint`/`%s`-of-pointer arguments.

/// Kernel symbols sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    /// (address, name, module) sorted by address, file order kept among equals.
    syms: Vec<(u64, Box<str>, Option<Box<str>>)>,
}

impl Kallsyms {
    /// Parses `addr type name [module]` lines. Malformed lines are skipped;
    /// absolute symbols (`A`/`a`, per-CPU offsets on x86-64) and ARM `$`
    /// mapping symbols are left out as libtraceevent does (`tep_parse_kallsyms`).
    pub fn parse(text: &[u8]) -> Kallsyms {
        let text = String::from_utf8_lossy(text);
        let mut syms = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(a), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
            let Ok(addr) = u64::from_str_radix(a.trim_start_matches("0x"), 16) else { continue };
            if ty == "A" || ty == "a" || name.starts_with('$') {
                continue;
            }
            let module = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']').into());
            syms.push((addr, name.into(), module));
        }
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms }
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

    /// libtraceevent's lookup (`__find_func`): the bsearch's end sentinel has
    /// address 0, so an address past the last symbol only matches it exactly.
    pub(crate) fn lookup_tep(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.index(addr)?;
        let s = &self.syms[i];
        let last_addr = self.syms.last().map(|l| l.0);
        if Some(s.0) == last_addr && addr != s.0 {
            return None;
        }
        Some((&s.1, s.0))
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
