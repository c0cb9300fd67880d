#!/bin/sh
# `tscmerge merge` (text, dat, perfetto) against `trace-cmd report` with three
# inputs, on a synthetic host + two guests written by `tscmerge synth --format
# dat` (v7, uncompressed). Each command runs twice, alternating, on one core
# (`taskset -c 0`) and unpinned; wall, user, peak RSS from /usr/bin/time -v,
# events/s, and the ratio trace-cmd / tscmerge per mode. The real recording
# (bench/record_busy.sh) has its own script, bench/merge_real.sh; both share
# bench/lib.sh.
#
# trace-cmd 3.1.6 merges several `-i FILE` inputs by timestamp
# (tracecmd_peek_next_data over all files) but, without tsync data in the
# files, cannot convert guest times: its run is a pure multi-file merge and
# render. tscmerge does more (per-vCPU offset conversion), so the comparison
# favours trace-cmd.
#
# Usage: bench/merge_vs_tracecmd.sh [WINDOWS|1g|10g] [WORKDIR]
#   WINDOWS 190000 (default) -> host.dat ~100 MB, 306 MB in all, 3.9 M events;
#   1g = WINDOWS 1900000     -> host.dat ~1 GB, 3.0 GB in all, 39 M events;
#   10g = WINDOWS 6200000    -> 10 GB of inputs in all (~127 M events): the peak
#     RSS mode. One run of each command, unpinned (the figure that matters is
#     peak RSS, against the 200 MB bound of issue 7; the wall times are
#     disk-bound), perfetto to /dev/null, and the dat output deleted right after
#     its run.
# Data are written to WORKDIR (default $TMPDIR/tscmerge-merge-bench), never
# committed. Before writing anything the script checks, with df, that WORKDIR
# has 2.5x the input size free (input + outputs) and refuses otherwise.
# Environment: TSCMERGE=path (use this binary, no cargo build), ROUNDS=n
# (runs per command, default 2; 10g: 1), PINS="1 0" (1 = one core, 0 =
# unpinned; 10g: "0"), RSSMODE=1 (the 10g mode's runs at any size).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${ROUNDS:-2}
pins=${PINS:-"1 0"}
rssmode=${RSSMODE:-0}
case ${1:-190000} in
    1g) windows=1900000 ;;
    10g) windows=6200000; rssmode=1 ;;
    *[!0-9]*|'') echo "usage: $0 [WINDOWS|1g|10g] [WORKDIR]" >&2; exit 2 ;;
    *) windows=$1 ;;
esac
if [ "$rssmode" = 1 ]; then rounds=${ROUNDS:-1}; pins=${PINS:-0}; fi
work=${2:-${TMPDIR:-/tmp}/tscmerge-merge-bench}
dir=$work/w$windows
mkdir -p "$work"

# Free space: synth writes ~1611 bytes of input per window (190000 -> 306 MB);
# the outputs (dat, perfetto) need up to about as much again.
have=0
[ -f "$dir/host.dat" ] && have=$(stat -c %s "$dir"/*.dat | awk '{ s += $1 } END { print s }')
want=$(awk -v w="$windows" -v h="$have" 'BEGIN { n = (h > 0 ? h : w * 1611); printf "%.0f", 2.5 * n - h }')
free=$(df -P -B1 "$work" | awk 'NR == 2 { print $4 }')
if [ "$free" -lt "$want" ]; then
    echo "refusing: $work has $free bytes free, needs $want (2.5x the ~$(awk -v w="$windows" 'BEGIN { printf "%.0f", w * 1611 / 1e6 }') MB input, less what is already there)" >&2
    exit 1
fi

bench_bin
if [ ! -f "$dir/host.dat" ]; then
    "$bin" synth --format dat --compression none --windows "$windows" -o "$dir" 2> "$work/synth.log"
    cat "$work/synth.log"
fi
rm -f "$dir/truth.tsv" # ground truth is not needed here, only disk

# The VMM pid of each VM, from the vCPU threads' offset writes (synth numbers
# VM n's threads 2000+100n+1...): any vCPU thread pins its VM.
pid0=2001
pid1=2101
guests="--guest vm0=$dir/guest-vm0.dat,pid=$pid0 --guest vm1=$dir/guest-vm1.dat,pid=$pid1"
events=$("$bin" merge "$dir/host.dat" $guests --stats 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) events out/\1/p')
printf 'input: %s  (%s bytes host.dat, %s bytes in all, %s events)\n' "$dir" \
    "$(stat -c %s "$dir/host.dat")" "$(stat -c %s "$dir"/*.dat | awk '{ s += $1 } END { print s }')" "$events"

# Each is one shell command line, run by `sh -c` under /usr/bin/time -v.
tc="trace-cmd report -i $dir/host.dat -i $dir/guest-vm0.dat -i $dir/guest-vm1.dat > /dev/null"
tm_text="$bin merge $dir/host.dat $guests > /dev/null"
tm_dat="$bin merge $dir/host.dat $guests --format dat -o $work/x.dat"
if [ "$rssmode" = 1 ]; then
    tm_pf="$bin merge $dir/host.dat $guests --format perfetto --tsc-khz 2000000 > /dev/null"
else
    tm_pf="$bin merge $dir/host.dat $guests --format perfetto --tsc-khz 2000000 -o $work/x.pftrace"
fi

bench_rounds "$events" "$events"
if [ "$rssmode" = 1 ]; then
    echo "issue 7 bound: peak RSS under 200 MB (204800 KiB) for 1 GB and 10 GB inputs:"
    awk '$2 ~ /^tscmerge/ { if ($4 > r[$2]) r[$2] = $4 }
         END { for (k in r) printf "  %-18s %9d KiB  %s\n", k, r[k], (r[k] < 204800 ? "ok" : "OVER") }' "$work/walls" | sort
fi
