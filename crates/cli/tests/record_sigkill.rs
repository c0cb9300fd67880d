//! `tscmerge record -- sleep ...` killed by SIGKILL at random moments (setup,
//! capture; RECORD_SIGKILL_RUNS times, 5 by default; bench/record_sigkill.sh
//! runs 20). After each kill: the traced command is gone (PR_SET_PDEATHSIG);
//! the next `record` refuses in one message naming every leftover and
//! suggesting `--recover`; `doctor` lists them; `record --recover` removes
//! them all, after which tracefs (instances, top-level tracing_on, set_event,
//! clock, buffer size, options) is exactly as before the run, no raw
//! directory and no journal are left (issue 20 item 6).
//! Needs root and a writable tracefs: skipped loudly otherwise.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use record::{Tracefs, TracefsState};

const BIN: &str = env!("CARGO_BIN_EXE_tscmerge");
const PREFIX: &str = "recordcli_kill_";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Pids of processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|pid| !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))))
        .collect()
}

fn run(args: &[&str], lock: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).arg("--instance-prefix").arg(PREFIX).arg("--lock").arg(lock).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn sigkill_then_recover_leaves_tracefs_as_found() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: sigkill_then_recover: needs root");
        return;
    }
    let Ok(tfs) = Tracefs::open_or_mount(Path::new("/")) else {
        eprintln!("SKIPPED: sigkill_then_recover: no tracefs");
        return;
    };
    let probe = tfs.instances_dir().join(format!("{PREFIX}probe"));
    if fs::create_dir(&probe).is_err() {
        eprintln!("SKIPPED: sigkill_then_recover: {} is not writable", tfs.instances_dir().display());
        return;
    }
    fs::remove_dir(&probe).unwrap();
    let seed = std::env::var("RECORD_SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    let runs: usize = std::env::var("RECORD_SIGKILL_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    eprintln!("seed {seed} (RECORD_SIGKILL_SEED to replay), {runs} runs");
    let mut rng = Rng(seed);
    let tmp = std::env::temp_dir().join(format!("recordcli_kill_{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let lock = tmp.join("lock");
    let registry = tmp.join("lock.d");
    let (mut refused, mut clean) = (0, 0);
    for run_no in 0..runs {
        let host = Path::new("/dev/kvm").exists() && rng.next().is_multiple_of(2);
        let delay = Duration::from_micros(rng.next() % 600_000);
        let before = TracefsState::snapshot(&tfs).unwrap();
        let out = tmp.join(format!("run{run_no}.dat"));
        // A sleep no other process runs: found by its command line.
        let secs = format!("{}.{run_no}", 100_000 + std::process::id() % 50_000);
        let mut child = Command::new(BIN)
            .args(["record", if host { "--host" } else { "--guest" }, "--no-kallsyms", "--instance-prefix", PREFIX, "--lock"])
            .arg(&lock)
            .arg("-o")
            .arg(&out)
            .args(["--", "sleep", &secs])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let what = format!("run {run_no} (seed {seed}, {}, killed after {delay:?})", if host { "host" } else { "guest" });
        // The traced command dies with its recorder.
        let t0 = Instant::now();
        while !processes(&["sleep", &secs]).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(2), "{what}: sleep {secs} outlived its recorder: {:?}", processes(&["sleep", &secs]));
            std::thread::sleep(Duration::from_millis(10));
        }
        let ours = |st: &TracefsState| st.instances.iter().filter(|i| i.starts_with(PREFIX)).count();
        let raws = || fs::read_dir(&tmp).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".raw.")).count();
        let left_before = ours(&TracefsState::snapshot(&tfs).unwrap()) + raws();
        // The next record names every leftover in one message.
        let (code, err) = run(&["record", "--guest", "--no-kallsyms", "--duration", "0.1", "-o", tmp.join("next.dat").to_str().unwrap()], &lock);
        if left_before > 0 {
            assert_eq!(code, Some(2), "{what}: next record: {err}");
            assert!(err.contains("was killed and left") && err.contains("--recover"), "{what}: {err}");
            assert_eq!(err.lines().count(), 1, "{what}: not one message: {err}");
            if ours(&TracefsState::snapshot(&tfs).unwrap()) > 0 {
                assert!(err.contains(&format!("instances/{PREFIX}")), "{what}: instance not named: {err}");
            }
            if raws() > 0 {
                assert!(err.contains(".raw."), "{what}: raw directory not named: {err}");
            }
            let doctor = Command::new(BIN).args(["doctor", "--no-vm", "--instance-prefix", PREFIX, "--lock"]).arg(&lock).output().unwrap();
            let d = String::from_utf8_lossy(&doctor.stdout);
            assert!(d.contains("record leftover ") && d.contains("--recover"), "{what}: doctor: {d}");
            refused += 1;
        } else {
            // Killed before it made anything: the next record runs.
            assert_eq!(code, Some(0), "{what}: next record: {err}");
            clean += 1;
        }
        let (code, err) = run(&["record", "--recover"], &lock);
        assert_eq!(code, Some(0), "{what}: recover: {err}");
        let after = TracefsState::snapshot(&tfs).unwrap();
        let diff: Vec<String> = before.diff(&after).into_iter().filter(|l| l.strip_prefix("instance ").is_none_or(|r| r.starts_with(PREFIX))).collect();
        assert!(diff.is_empty(), "{what}: tracefs changed: {diff:?}\n{err}");
        assert_eq!(raws(), 0, "{what}: raw directory left\n{err}");
        assert_eq!(fs::read_dir(&registry).map(|r| r.count()).unwrap_or(0), 0, "{what}: journal left\n{err}");
        let (code, err) = run(&["record", "--recover"], &lock);
        assert!(code == Some(0) && err.contains("nothing to recover"), "{what}: second recover: {err}");
        let _ = fs::remove_file(tmp.join("next.dat"));
    }
    eprintln!("{runs} SIGKILLs: {refused} left something (refused, then recovered), {clean} killed before making anything");
    fs::remove_dir_all(&tmp).unwrap();
}

/// The hidden raw directory is made with mkdir: a symlink planted at its
/// (guessable) name is refused, not followed.
#[test]
fn planted_raw_dir_symlink_is_refused() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 || Tracefs::open_or_mount(Path::new("/")).is_err() {
        eprintln!("SKIPPED: planted_raw_dir_symlink: needs root and tracefs");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("recordcli_plant_{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.join("victim")).unwrap();
    // The recorder's pid is not known before it starts: plant for the next
    // few pids by starting it through a shell that plants first, then execs.
    let script = format!(
        "ln -s {v} {t}/.out.dat.raw.$$ && exec {BIN} record --guest --no-kallsyms --duration 0.1 --instance-prefix {PREFIX}plant_ --lock {t}/lock -o {t}/out.dat",
        v = tmp.join("victim").display(),
        t = tmp.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already exists (a symlink)"), "{err}");
    assert_eq!(fs::read_dir(tmp.join("victim")).unwrap().count(), 0, "the symlink was followed");
    assert!(!tmp.join("out.dat").exists());
    fs::remove_dir_all(&tmp).unwrap();
}
