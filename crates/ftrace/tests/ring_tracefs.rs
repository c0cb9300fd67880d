//! Real kernel-written pages: record into our own tracefs instance with the
//! x86-tsc clock, read the non-consuming `trace` text first, then drain
//! every CPU's `trace_pipe_raw`, and check that the decoded (cpu, ts, name)
//! sequence equals the text's. Skips loudly without tracefs.

use ftrace::ring::{Page, PageLayout, RingEvent};
use ftrace::Endian;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENTS: &[&str] = &["sched/sched_switch", "sched/sched_wakeup", "sched/sched_waking", "irq/softirq_entry", "irq/softirq_exit", "timer/hrtimer_start"];
const O_NONBLOCK: i32 = 0o4000; // asm-generic/fcntl.h (x86, arm64)

/// Removes the instance however the test ends.
struct Instance(PathBuf);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("tracing_on"), "0");
        let _ = fs::write(self.0.join("events/enable"), "0");
        let _ = fs::remove_dir(&self.0);
    }
}

/// tracefs header files answer only the first read (a second read at a
/// non-zero offset returns 0), and `fs::read` starts with a 32-byte probe
/// when the size is 0: read with one large buffer.
fn read_whole(p: &Path) -> Vec<u8> {
    let mut f = fs::File::open(p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf[n..]).unwrap();
        if k == 0 || n + k == buf.len() {
            buf.truncate(n + k);
            return buf;
        }
        n += k;
    }
}

fn text_events(text: &str) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut m: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // "comm-pid (tgid) [CPU] flags TS: name: ..."
        let Some(i) = line.find("] ") else { continue };
        let Some(j) = line[..i].rfind('[') else { continue };
        let Ok(cpu) = line[j + 1..i].parse::<u32>() else { continue };
        let mut rest = line[i + 2..].split_whitespace();
        let _flags = rest.next();
        let (Some(ts), Some(name)) = (rest.next(), rest.next()) else { continue };
        let (Ok(ts), Some(name)) = (ts.trim_end_matches(':').parse::<u64>(), name.strip_suffix(':')) else { continue };
        m.entry(cpu).or_default().push((ts, name.to_string()));
    }
    m
}

#[test]
fn raw_pages_match_trace_text() {
    let root = Path::new(TRACEFS);
    if !root.join("instances").is_dir() {
        eprintln!("SKIPPED: tracefs not mounted at {TRACEFS}");
        return;
    }
    let dir = root.join("instances/tracedat_test");
    if dir.exists() {
        drop(Instance(dir.clone()));
    }
    if let Err(e) = fs::create_dir(&dir) {
        eprintln!("SKIPPED: cannot create {}: {e}", dir.display());
        return;
    }
    let inst = Instance(dir.clone());
    fs::write(dir.join("trace_clock"), "x86-tsc").unwrap();
    let mut names = HashMap::new();
    for ev in EVENTS {
        if fs::write(dir.join("events").join(ev).join("enable"), "1").is_err() {
            continue;
        }
        // Map ids to names from the format's `name:` and `ID:` lines.
        let f = String::from_utf8(read_whole(&root.join("events").join(ev).join("format"))).unwrap();
        let name = f.lines().find_map(|l| l.strip_prefix("name:")).unwrap().trim().to_string();
        let id: u16 = f.lines().find_map(|l| l.strip_prefix("ID:")).unwrap().trim().parse().unwrap();
        names.insert(id, name);
    }
    assert!(!names.is_empty(), "no event could be enabled");
    fs::write(dir.join("tracing_on"), "1").unwrap();
    // Activity: sleeps and thread hops make sched and timer events.
    for _ in 0..5 {
        let h: Vec<_> = (0..3).map(|_| std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(3)))).collect();
        h.into_iter().for_each(|h| h.join().unwrap());
    }
    fs::write(dir.join("tracing_on"), "0").unwrap();

    // `trace` does not consume; read it before the raw pages.
    let text = String::from_utf8(read_whole(&dir.join("trace"))).unwrap();
    let want = text_events(&text);

    let layout = PageLayout::from_header_page(&read_whole(&root.join("events/header_page")), Endian::NATIVE).unwrap();
    let mut got: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let mut pages = 0;
    for ent in fs::read_dir(dir.join("per_cpu")).unwrap() {
        let ent = ent.unwrap();
        let cpu: u32 = ent.file_name().to_str().unwrap().trim_start_matches("cpu").parse().unwrap();
        let mut f = fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK).open(ent.path().join("trace_pipe_raw")).unwrap();
        let mut buf = vec![0u8; layout.page_size as usize];
        let mut off = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading cpu{cpu} trace_pipe_raw: {e}"),
            };
            pages += 1;
            let page = Page::parse(&layout, &buf[..n], off).unwrap();
            for r in page.events() {
                match r.unwrap() {
                    RingEvent::Event { ts, data } => {
                        let id = u16::from_ne_bytes([data[0], data[1]]);
                        let name = names.get(&id).cloned().unwrap_or_else(|| format!("id{id}"));
                        got.entry(cpu).or_default().push((ts, name));
                    }
                    RingEvent::Lost { count } => panic!("cpu{cpu}: lost events {count:?} in a quiet test"),
                }
            }
            off += n as u64;
        }
    }
    drop(inst);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(total > 10, "too little activity recorded: {total} events\n{text}");
    assert_eq!(got, want, "decoded raw pages differ from the trace text");
    eprintln!("tracefs: {total} events on {} CPUs in {pages} pages equal the trace text", want.len());
}
