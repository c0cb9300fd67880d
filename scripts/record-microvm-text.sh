#!/usr/bin/env bash
# Records two micro-VM guests and their host the way the tracepoint's authors
# prescribe, by hand through tracefs: kvm_write_tsc_offset in its own instance
# with x86-tsc, enabled before the guests start; the host's kvm events in a
# second instance with x86-tsc. The guest traces are written by the micro-VM monitor (tscmerge microvm).
#
# usage: scripts/record-microvm-text.sh OUT_DIR [TSCMERGE]
# Needs root, /dev/kvm, tracefs. Leaves tracefs as it found it.
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [TSCMERGE]}
tscmerge=${2:-target/release/tscmerge}
T=/sys/kernel/tracing
D=/sys/kernel/debug
[ -e "$T/trace" ] || mount -t tracefs nodev "$T"
[ -d "$D/kvm" ] || mount -t debugfs nodev "$D" 2>/dev/null || true
mkdir -p "$out"
off="$T/instances/tsc_offset_$$" main="$T/instances/host_$$"
cleanup() {
    for i in "$off" "$main"; do
        [ -d "$i" ] && { echo 0 > "$i/tracing_on"; rmdir "$i"; }
    done
}
trap cleanup EXIT

mkdir "$off" "$main"
for i in "$off" "$main"; do
    echo x86-tsc > "$i/trace_clock"
    echo 1 > "$i/options/record-tgid"
done
echo 1 > "$off/events/kvm/kvm_write_tsc_offset/enable"
echo 8192 > "$main/buffer_size_kb"
for e in kvm_emulate_insn kvm_pio kvm_msr kvm_cpuid kvm_userspace_exit; do
    echo 1 > "$main/events/kvm/$e/enable"
done
echo 1 > "$off/tracing_on"
echo 1 > "$main/tracing_on"

# KVM debugfs tsc-offset is read by the micro-VM monitor itself at vCPU
# creation and after the halt (the VMs live about a millisecond, too short for
# an outside sampler), stamped with rdtsc: OUT_DIR/kvm_debugfs.txt.
"$tscmerge" microvm -o "$out" --vms 2 --vcpus 2 --reads 24 --wrmsr-after 11
echo 0 > "$off/tracing_on"; echo 0 > "$main/tracing_on"
cat "$main/trace" > "$out/host.txt"
cat "$off/trace" > "$out/host-tsc_offset.txt"
uname -r > "$out/uname.txt"; date -u +%FT%TZ >> "$out/uname.txt"
echo "recorded into $out"
