//! `tscmerge`: host and KVM guest ftrace traces on one exact timeline.
//!
//! Exit codes: 0 success; 1 a check failed (`check`, `merge --check`);
//! 2 bad usage or unreadable input. A closed stdout (e.g. `| head`) exits 0.

mod cmd_check;
mod cmd_doctor;
mod cmd_explain;
mod cmd_info;
mod cmd_merge;
mod cmd_microvm;
mod cmd_offsets;
mod cmd_record;
mod cmd_report;
mod cmd_synth;
mod inputs;
mod output;
mod tracecmd_pair;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tscmerge", version, about = "Put the ftrace traces of KVM guests and their host on one exact timeline")]
#[command(after_help = "Examples:\n  tscmerge merge examples/synth/host.txt examples/synth/host-tsc_offset.txt \\\n      --guest vm0=examples/synth/guest-vm0.txt --guest vm1=examples/synth/guest-vm1.txt\n  tscmerge record --host -o host.dat -- qemu-system-x86_64 -enable-kvm ...\n  tscmerge check host.dat --guest vm=guest.dat\n  tscmerge explain host.dat --guest vm=guest.dat\n  tscmerge doctor\n  tscmerge offsets host.dat\n  tscmerge report trace.dat\n  tscmerge synth -o /tmp/synth")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Memory that sizes declared by inputs (inflated trace.dat sections
    /// and chunks) may take in all: bytes, or with K, M, G, T (powers of 1024).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size, default_value = "768M")]
    max_memory: u64,
}

/// `768M`, `2G`, `1048576`: bytes, or K/M/G/T (KiB, MiB, GiB, TiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown unit {c:?}; expected K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?}: expected a whole number of bytes, optionally with K, M, G or T"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?}: more than {} bytes", u64::MAX))?;
    if bytes < 1 << 20 {
        return Err(format!("{s:?}: below 1M, too little to read any trace"));
    }
    Ok(bytes)
}

#[derive(Subcommand)]
enum Cmd {
    /// Merge host and guest recordings into one chronological stream.
    Merge(cmd_merge::Args),
    /// Prove a merge: guest events against the host's vCPU run windows.
    Check(cmd_check::CheckArgs),
    /// Where each vCPU's time went: guest, exits by reason, userspace, preempted, halted.
    Explain(cmd_explain::Args),
    /// Show the TSC offset timeline per VM and vCPU, with anomalies.
    Offsets(cmd_offsets::Args),
    /// Print the events of recordings, as `trace-cmd report` does.
    Report(cmd_report::Args),
    /// Describe a recording: format, buffers, clocks, CPUs, event counts.
    Info(cmd_info::Args),
    /// Run real-mode KVM micro-VMs (one process each) whose TSC reads are ground truth.
    Microvm(cmd_microvm::Args),
    /// Write a synthetic KVM host recording with ground truth.
    Synth(cmd_synth::Args),
    #[command(flatten)]
    Live(cmd_record::LiveCmd),
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    ftrace::budget::set_limit(cli.max_memory);
    // Temporary outputs are removed when SIGINT/SIGTERM/SIGHUP end the run
    // (`record` replaces the first two with its own stop flag, and stops cleanly).
    safefs::install_cleanup_handlers().map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    match cli.cmd {
        Cmd::Merge(a) => cmd_merge::run(a),
        Cmd::Check(a) => cmd_check::run(a),
        Cmd::Explain(a) => cmd_explain::run(a),
        Cmd::Offsets(a) => cmd_offsets::run(a),
        Cmd::Report(a) => cmd_report::run(a),
        Cmd::Info(a) => cmd_info::run(a),
        Cmd::Synth(a) => cmd_synth::run(a),
        Cmd::Microvm(a) => cmd_microvm::run(a),
        Cmd::Live(c) => c.run(),
    }
}

/// The error and its causes, each said once: library errors already
/// include their cause in their own message.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tscmerge: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand and flag.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The --max-memory default as written in its help is the library's.
    #[test]
    fn max_memory_default_is_the_budget_default() {
        let cli = <super::Cli as clap::Parser>::try_parse_from(["tscmerge", "info", "x"]).unwrap();
        assert_eq!(cli.max_memory, ftrace::budget::DEFAULT_LIMIT);
        assert_eq!(super::parse_size("2G"), Ok(2 << 30));
        assert!(super::parse_size("99999999999T").is_err() && super::parse_size("1K").is_err());
    }
}
