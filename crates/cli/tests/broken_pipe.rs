//! A reader that goes away (`tscmerge ... | head`) ends a command quietly:
//! exit 0, no panic, nothing on stderr about it. Each command's output here
//! is larger than a pipe's buffer, so its writes meet EPIPE whether or not
//! they start before the test closes the pipe.

use std::io::Read;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tscmerge");

#[test]
fn closed_stdout_ends_commands_quietly() {
    let d = std::env::temp_dir().join(format!("tscmerge-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let out = Command::new(BIN).args(["synth", "--format", "dat", "--windows", "20000", "-o"]).arg(&d).output().unwrap();
    assert!(out.status.success(), "synth: {}", String::from_utf8_lossy(&out.stderr));
    let host = d.join("host.dat");
    let host = host.to_str().unwrap();
    let guest = format!("vm0={},pid=2001", d.join("guest-vm0.dat").to_str().unwrap());
    for args in [
        vec!["offsets", host],
        vec!["offsets", "--json", host],
        vec!["report", host],
        vec!["merge", host, "--guest", &guest],
        vec!["merge", "-j", "2", host, "--guest", &guest],
    ] {
        // The whole output, to know it overflows a pipe.
        let all = Command::new(BIN).args(&args).output().unwrap();
        assert!(all.status.success(), "{args:?}: {}", String::from_utf8_lossy(&all.stderr));
        // A pipe holds 64 KiB unless raised (pipe(7)).
        assert!(all.stdout.len() > 256 << 10, "{args:?}: {} bytes, not more than a pipe holds", all.stdout.len());
        let mut child = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut head = [0u8; 100];
        child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{args:?}: {status}; stderr: {err}");
        assert!(!err.contains("panicked") && !err.to_lowercase().contains("broken pipe"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
