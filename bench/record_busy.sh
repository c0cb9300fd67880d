#!/bin/sh
# A real host recording for bench/merge_real.sh: `tscmerge record --host` on
# this machine while micro-VMs (the "guests") run back to back and a host load
# (`perf bench sched pipe`, a context-switch storm) keeps both CPUs busy.
#
# On this machine KVM runs in PVM mode and no Linux guest boots, so the guests
# are `tscmerge microvm` VMs: real KVM VMs (one VMM process each) whose vCPUs
# read the TSC READS times (rdmsr IA32_TSC, emulated: kvm_emulate_insn +
# kvm_msr on the host) and whose guest traces (guest-vmN.txt, tracefs text
# written by the VMM, one line per read) are the guest side of the merge.
# Each micro-VM run writes into its own OUTDIR/vm/runN; every run made while
# the recording was on is kept, and OUTDIR/guests.txt lists them as
# `tscmerge merge --guest` arguments (NAME=FILE,pid=VMM_PID), one per line.
#
# `tscmerge record` has no compression option: host.dat is trace.dat v7 with
# zstd sections (record::todat::ToDat::compression is Zstd; `trace-cmd convert
# --compression none` rejects the file's private options 0x7f00..0x7f03).
# trace-cmd and tscmerge both decompress it, so the comparison stays fair.
#
# Usage (root): bench/record_busy.sh [OUTDIR] [SECONDS]
#   OUTDIR default $TMPDIR/tscmerge-real (must not hold a host.dat), SECONDS
#   default 200 (~330 MB of host.dat, ~100 M events: ~1.7 MB/s of zstd output,
#   ~21 MB/s of raw ring pages, see bench/README.md).
# Environment: TSCMERGE=path (no cargo build), BUFFER_KB (per-CPU buffer of
#   the events instance, default 8192), VMS/VCPUS/READS of each micro-VM run
#   (default 2/2/4096, the most reads a vCPU may make), LOAD (host load
#   command, repeated until SECONDS are up; default `perf bench sched pipe -l
#   100000`), RECORD_OPTS (more `tscmerge record` options).
# Prints host.dat's size, events per buffer, capture duration, lost events,
# the number of micro-VM runs and guest events.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
out=${1:-${TMPDIR:-/tmp}/tscmerge-real}
secs=${2:-200}
buffer_kb=${BUFFER_KB:-8192}
vms=${VMS:-2}
vcpus=${VCPUS:-2}
reads=${READS:-4096}
load=${LOAD:-perf bench sched pipe -l 100000}
case $secs in *[!0-9]*|'') echo "usage: $0 [OUTDIR] [SECONDS]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (tracefs, /dev/kvm)" >&2; exit 1; }
[ -e "$out/host.dat" ] && { echo "$out/host.dat exists: choose another OUTDIR or remove it" >&2; exit 1; }
mkdir -p "$out/vm"
out=$(cd "$out" && pwd)
# The raw capture (uncompressed ring pages) sits next to host.dat until it is
# converted: ~21 MB/s measured, so ~4 GB for 200 s; ask for twice that.
free=$(df -P -B1 "$out" | awk 'NR == 2 { print $4 }')
need=$((secs * 40 * 1000 * 1000))
if [ "$free" -lt "$need" ]; then
    echo "refusing: $out has $free bytes free; $secs s of recording need about $need (raw capture + host.dat)" >&2
    exit 1
fi
bench_bin
export bin out secs vms vcpus reads load

# The workload, run by `tscmerge record` as its COMMAND: the host load in a
# loop in the background, micro-VM runs back to back in the foreground, both
# until SECONDS are up. --hold-ms 100 keeps each VM alive long enough for
# record's 50 ms KVM debugfs sampler (this host's kvm_write_tsc_offset values
# are never applied: the merge takes the offsets from those snapshots).
workload='
end=$(( $(date +%s) + secs ))
( while [ "$(date +%s)" -lt "$end" ]; do $load > /dev/null 2>&1 || exit 1; done ) &
lp=$!
n=0
while [ "$(date +%s)" -lt "$end" ]; do
    "$bin" microvm -o "$out/vm/run$n" --vms "$vms" --vcpus "$vcpus" --reads "$reads" --hold-ms 100 > /dev/null || exit 1
    n=$((n + 1))
done
wait "$lp"
'
# shellcheck disable=SC2086 # RECORD_OPTS is a list of options
"$bin" record --host ${RECORD_OPTS:-} --buffer-kb "$buffer_kb" --duration $((secs + 60)) \
    -e sched:sched_switch -e sched:sched_wakeup -e kvm:kvm_emulate_insn -e kvm:kvm_pio \
    -e kvm:kvm_msr -e kvm:kvm_userspace_exit -e kvm:kvm_cpuid \
    -o "$out/host.dat" -- sh -c "$workload" 2> "$out/record.log" || { cat "$out/record.log"; exit 1; }
cat "$out/record.log"

# guests.txt: every micro-VM run, each VM pinned by its VMM pid (vms.txt).
: > "$out/guests.txt"
for d in "$out"/vm/run*; do
    r=${d##*/run}
    while read -r vm pid _; do
        echo "r${r}${vm}=$d/guest-$vm.txt,${pid}" >> "$out/guests.txt"
    done < "$d/vms.txt"
done
"$bin" info "$out/host.dat" > "$out/info.txt"

echo "== $out/host.dat (trace.dat v7, zstd)"
printf 'size:      %s bytes\n' "$(stat -c %s "$out/host.dat")"
awk -F'"' '/^buffer "/ { b = $2 } /^  events:/ { split($0, f, " "); printf "events:    %s in buffer %s\n", f[2], b; s += f[2] }
     END { printf "events:    %s in all\n", s }' "$out/info.txt"
sed -n 's/.*stopped by \(.*\) after \([0-9.]*\)s.*/duration:  \2 s (stopped by \1)/p' "$out/record.log"
sed -n 's/^  \([^:]*\): .* lost events total \([0-9]*\).*/lost:      \2 in instance \1/p' "$out/record.log"
runs=$(ls -d "$out"/vm/run* | wc -l)
gev=$(cat "$out"/vm/run*/guest-vm*.txt | grep -vc '^#')
printf 'guests:    %s micro-VM runs, %s VMs, %s guest events (%s)\n' "$runs" "$(wc -l < "$out/guests.txt")" "$gev" "$out/guests.txt"
