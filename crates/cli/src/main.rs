//! `tscmerge`: host and KVM guest ftrace traces on one exact timeline.
//!
//! Exit codes: 0 success; 1 a check failed (`check`, `merge --check`);
//! 2 bad usage or unreadable input. A closed stdout (e.g. `| head`) exits 0.

mod cmd_check;
mod cmd_doctor;
mod cmd_info;
mod cmd_merge;
mod cmd_microvm;
mod cmd_offsets;
mod cmd_record;
mod cmd_report;
mod cmd_synth;
mod inputs;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tscmerge", version, about = "Put the ftrace traces of KVM guests and their host on one exact timeline")]
#[command(after_help = "Examples:\n  tscmerge merge examples/synth/host.txt examples/synth/host-tsc_offset.txt \\\n      --guest vm0=examples/synth/guest-vm0.txt --guest vm1=examples/synth/guest-vm1.txt\n  tscmerge record --host -o host.dat -- qemu-system-x86_64 -enable-kvm ...\n  tscmerge check host.dat --guest vm=guest.dat\n  tscmerge doctor\n  tscmerge offsets host.dat\n  tscmerge report trace.dat\n  tscmerge synth -o /tmp/synth")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Merge host and guest recordings into one chronological stream.
    Merge(cmd_merge::Args),
    /// Prove a merge: guest events against the host's vCPU run windows.
    Check(cmd_check::CheckArgs),
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
    // Temporary outputs are removed when SIGINT/SIGTERM/SIGHUP end the run
    // (`record` replaces the first two with its own stop flag, and stops cleanly).
    safefs::install_cleanup_handlers().map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    match cli.cmd {
        Cmd::Merge(a) => cmd_merge::run(a),
        Cmd::Check(a) => cmd_check::run(a),
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
}
