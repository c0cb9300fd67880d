//! SIGINT and SIGTERM sent to the real `tscmerge record` binary at random
//! moments (setup, capture, stop, conversion; sometimes twice), a few dozen times. After each:
//! no instance of ours left and the top-level tracefs files as found; either
//! exit 130 and no output (stopped during setup), or exit 0 and an output that
//! `trace-cmd report` reads and that holds every marker the test wrote into the
//! instance before sending the signal (a successful write to trace_marker is
//! in the ring buffer; the stop drains all of it). No raw directory or
//! temporary file is left behind.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use record::{Tracefs, TracefsState};

const BIN: &str = env!("CARGO_BIN_EXE_tscmerge");
const PREFIX: &str = "recordcli_sig_";

/// xorshift64*, seeded from the clock (printed, so a failure can be replayed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_sigint_sigterm_leave_tracefs_as_found() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: random_sigint_sigterm: needs root");
        return;
    }
    if Command::new("trace-cmd").arg("--version").output().is_err() {
        eprintln!("SKIPPED: random_sigint_sigterm: no trace-cmd");
        return;
    }
    let Ok(tfs) = Tracefs::open_or_mount(Path::new("/")) else {
        eprintln!("SKIPPED: random_sigint_sigterm: no tracefs");
        return;
    };
    let seed = std::env::var("RECORD_SIGNAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("seed {seed} (RECORD_SIGNAL_SEED to replay)");
    let mut rng = Rng(seed);
    let runs: usize = std::env::var("RECORD_SIGNAL_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let tmp = std::env::temp_dir().join(format!("recordcli_sig_{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let marker_file = tfs.instances_dir().join(format!("{PREFIX}tscmerge")).join("trace_marker");
    let (mut setup_stops, mut written) = (0, 0);
    for run in 0..runs {
        let host = Path::new("/dev/kvm").exists() && rng.next().is_multiple_of(2);
        let sig = if rng.next().is_multiple_of(2) { libc::SIGINT } else { libc::SIGTERM };
        // 0..400 ms: from before setup ends to well into capture.
        let delay = Duration::from_micros(rng.next() % 400_000);
        let out = tmp.join(format!("run{run}.dat"));
        let before = TracefsState::snapshot(&tfs).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["record", if host { "--host" } else { "--guest" }, "--instance-prefix", PREFIX, "--lock"])
            .arg(tmp.join("lock"))
            .arg("-o")
            .arg(&out)
            .stderr(Stdio::piped());
        // Kallsyms on a third of the runs: a longer setup and conversion to hit.
        if !rng.next().is_multiple_of(3) {
            cmd.arg("--no-kallsyms");
        }
        let mut child = cmd.spawn().unwrap();
        let t0 = Instant::now();
        let mut markers = Vec::new();
        while t0.elapsed() < delay {
            let m = format!("recordcli-sig-{run}-{}", markers.len());
            // Setting the clock resets the buffer (kernel/trace/trace.c
            // tracing_set_clock), and a new instance traces until the recorder
            // switches it off: only writes after the clock is set must survive.
            let clock_set = fs::read_to_string(marker_file.with_file_name("trace_clock")).is_ok_and(|c| c.contains("[x86-tsc]"));
            // Open, write, close: an open trace_marker holds the instance (rmdir EBUSY).
            if let Ok(mut f) = fs::OpenOptions::new().write(true).open(&marker_file).map_err(|_| ()).and_then(|f| if clock_set { Ok(f) } else { Err(()) }) {
                if f.write_all(m.as_bytes()).is_ok() {
                    markers.push(m);
                }
            }
            std::thread::sleep(Duration::from_micros(500 + rng.next() % 3000));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        // A third of the runs: a second signal while stopping or converting.
        if rng.next().is_multiple_of(3) {
            std::thread::sleep(Duration::from_micros(rng.next() % 60_000));
            // SAFETY: as above; the child may have exited (then ESRCH or a zombie).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "run {run}: record did not stop within 30 s of the signal");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let after = TracefsState::snapshot(&tfs).unwrap();
        let diff: Vec<String> = before
            .diff(&after)
            .into_iter()
            .filter(|l| l.strip_prefix("instance ").is_none_or(|r| r.starts_with(PREFIX)))
            .collect();
        let what = format!("run {run} (seed {seed}, {} {}, {delay:?}): exit {status}\n{err}", if host { "host" } else { "guest" }, if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" });
        assert!(diff.is_empty(), "{what}: tracefs changed: {diff:?}");
        // A signal that lands before `record` installed its handlers (process
        // start-up, slow under load) kills it by the default action: nothing
        // was set up yet, which the checks above and below confirm.
        let killed_early = std::os::unix::process::ExitStatusExt::signal(&status) == Some(sig);
        match status.code() {
            None if killed_early => {
                assert!(!out.exists(), "{what}: output after a stop at start-up");
                assert!(markers.is_empty(), "{what}: markers were recorded but no output");
                setup_stops += 1;
            }
            Some(130) => {
                assert!(!out.exists(), "{what}: output after a setup stop");
                assert!(markers.is_empty(), "{what}: markers were recorded but no output");
                setup_stops += 1;
            }
            Some(0) => {
                let o = Command::new("trace-cmd").arg("report").arg(&out).output().unwrap();
                let report = String::from_utf8_lossy(&o.stdout);
                let rerr = String::from_utf8_lossy(&o.stderr);
                assert!(o.status.success() && rerr.trim().is_empty(), "{what}: trace-cmd report: {rerr}");
                for m in &markers {
                    assert!(report.contains(&format!(": {m}\n")), "{what}: marker {m} written before the signal is missing");
                }
                let ours = Command::new(BIN).arg("report").arg(&out).output().unwrap();
                assert!(ours.status.success(), "{what}: tscmerge report failed");
                fs::remove_file(&out).unwrap();
                written += 1;
            }
            _ => panic!("{what}: unexpected exit"),
        }
        // Nothing else: no raw directory, no temporary output.
        let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "lock" && n != "lock.d").collect();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
        // The run's journal (record's registry of what it made) is gone too.
        let journals: Vec<_> = fs::read_dir(tmp.join("lock.d")).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(journals.is_empty(), "{what}: journal left behind {journals:?}");
    }
    eprintln!("{runs} runs: {written} wrote a file, {setup_stops} stopped during setup");
    fs::remove_dir_all(&tmp).unwrap();
}
