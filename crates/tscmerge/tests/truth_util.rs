//! Shared by the synth tests (`#[path]`-included): reading synth's ground truth.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

/// `truth.tsv` as synth writes it: per (machine, CPU), each event's true
/// host TSC (column 4), in file order.
pub fn truth(dir: &Path) -> BTreeMap<(String, u32), Vec<u64>> {
    let mut t: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("truth.tsv")).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        t.entry((f[0].to_string(), f[1].parse().unwrap())).or_default().push(f[3].parse().unwrap());
    }
    t
}
