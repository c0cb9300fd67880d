#!/bin/sh
# `tscmerge merge` (text, dat, perfetto) against `trace-cmd report` on a real
# recording made on this machine by bench/record_busy.sh: host.dat (`tscmerge
# record --host`, trace.dat v7 zstd, two buffers: the events and tsc_offset)
# and the micro-VM guest traces listed in guests.txt.
#
# NOT the same work on both sides: the guest traces of micro-VMs are tracefs
# text written by the VMM (guest-vmN.txt), which trace-cmd cannot read, so
# trace-cmd gets host.dat alone:
#     trace-cmd report -i host.dat > /dev/null
# while tscmerge merges host.dat with every guest (a small share of the events,
# ~3% for the default workload) and converts their times with the offsets
# recorded in host.dat:
#     tscmerge merge host.dat --guest r0vm0=.../guest-vm0.txt,pid=PID ... > /dev/null
# and the same with `--format dat -o x.dat` and `--format perfetto -o
# x.pftrace` (TSC frequency from the recording's own option; TSC_KHZ=n
# overrides it with --tsc-khz n). Events/s are per program: host.dat's events
# for trace-cmd, events out for tscmerge.
#
# Each command runs ROUNDS times (default 2), alternating, on one core
# (`taskset -c 0`) and unpinned; wall, user, peak RSS from /usr/bin/time -v,
# and the ratio trace-cmd / tscmerge (timing code: bench/lib.sh).
#
# Usage: bench/merge_real.sh [DIR]     DIR as bench/record_busy.sh wrote it
#   (default $TMPDIR/tscmerge-real). Outputs go to DIR/bench and are deleted.
# Environment: TSCMERGE=path (no cargo build), ROUNDS=n, PINS="1 0",
#   GUEST_RUNS=n (only the guests of the first n micro-VM runs), TSC_KHZ=n.
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
dir=${1:-${TMPDIR:-/tmp}/tscmerge-real}
rounds=${ROUNDS:-2}
pins=${PINS:-"1 0"}
[ -f "$dir/host.dat" ] && [ -f "$dir/guests.txt" ] ||
    { echo "$dir: no host.dat + guests.txt; make them with bench/record_busy.sh $dir" >&2; exit 1; }
dir=$(cd "$dir" && pwd)
work=$dir/bench
mkdir -p "$work"
bench_bin

# guests.txt lines are r<RUN>vm<N>=FILE,pid=PID.
guests=$(awk -F'vm' -v n="${GUEST_RUNS:-}" '{ r = substr($1, 2) } n == "" || r + 0 < n + 0 { printf " --guest %s", $0 }' "$dir/guests.txt")
nguests=$(echo "$guests" | wc -w); nguests=$((nguests / 2))
khz=""
[ -n "${TSC_KHZ:-}" ] && khz="--tsc-khz $TSC_KHZ"

"$bin" info "$dir/host.dat" > "$work/info.txt"
host_events=$(awk '/^  events:/ { s += $2 } END { print s }' "$work/info.txt")
"$bin" merge "$dir/host.dat" $guests --stats 2> "$work/stats.txt" > /dev/null
events=$(sed -n 's/.*: \([0-9]*\) events out/\1/p' "$work/stats.txt")
printf 'input: %s (%s bytes, %s events) + %s guests (%s bytes); %s events out of tscmerge\n' \
    "$dir/host.dat" "$(stat -c %s "$dir/host.dat")" "$host_events" "$nguests" \
    "$(echo "$guests" | tr ' ,=' '\n\n\n' | grep '\.txt$' | xargs stat -c %s | awk '{ s += $1 } END { print s + 0 }')" "$events"

tc="trace-cmd report -i $dir/host.dat > /dev/null"
tm_text="$bin merge $dir/host.dat $guests > /dev/null"
tm_dat="$bin merge $dir/host.dat $guests --format dat -o $work/x.dat"
tm_pf="$bin merge $dir/host.dat $guests --format perfetto $khz -o $work/x.pftrace"

bench_rounds "$host_events" "$events"
