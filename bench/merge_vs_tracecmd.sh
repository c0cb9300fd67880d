#!/bin/sh
# `tscmerge merge` (text, dat, perfetto) against `trace-cmd report` with three
# inputs, on a synthetic host + two guests written by `tscmerge synth --format
# dat` (v7, uncompressed). Each command runs twice, alternating, on one core
# (`taskset -c 0`) and unpinned; wall, user, peak RSS from /usr/bin/time -v,
# events/s, and the ratio trace-cmd / tscmerge per mode.
#
# trace-cmd 3.1.6 merges several `-i FILE` inputs by timestamp
# (tracecmd_peek_next_data over all files) but, without tsync data in the
# files, cannot convert guest times: its run is a pure multi-file merge and
# render. tscmerge does more (per-vCPU offset conversion), so the comparison
# favours trace-cmd.
#
# Usage: bench/merge_vs_tracecmd.sh [WINDOWS] [WORKDIR]
#   WINDOWS 190000 (default) -> host.dat ~100 MB, 3.9 M events in all;
#   WINDOWS 1900000          -> host.dat ~1 GB, 39 M events.
# Data are written to WORKDIR (default $TMPDIR/tscmerge-merge-bench), never committed.
set -eu
cd "$(dirname "$0")/.."
windows=${1:-190000}
work=${2:-${TMPDIR:-/tmp}/tscmerge-merge-bench}
dir=$work/w$windows
mkdir -p "$work"
cargo build -q --release -p tscmerge-cli
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/tscmerge
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
    "$(stat -c %s "$dir/host.dat")" "$(cat "$dir"/*.dat | wc -c)" "$events"

# Each is one shell command line, run by `sh -c` under /usr/bin/time -v.
tc="trace-cmd report -i $dir/host.dat -i $dir/guest-vm0.dat -i $dir/guest-vm1.dat > /dev/null"
tm_text="$bin merge $dir/host.dat $guests > /dev/null"
tm_dat="$bin merge $dir/host.dat $guests --format dat -o $work/x.dat"
tm_pf="$bin merge $dir/host.dat $guests --format perfetto --tsc-khz 2000000 -o $work/x.pftrace"

# run LABEL PIN COMMAND: one timed run; prints a row and appends "label wall" to $work/walls.
run() {
    label=$1; pin=$2; cmd=$3
    if [ "$pin" = 1 ]; then pre="taskset -c 0"; else pre=""; fi
    $pre /usr/bin/time -v sh -c "$cmd" 2> "$work/t.time" || { cat "$work/t.time"; exit 1; }
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/t.time")
    secs=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    user=$(sed -n 's/.*User time (seconds): //p' "$work/t.time")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/t.time")
    rate=$(awk -v n="$events" -v s="$secs" 'BEGIN { printf "%.2f", (s > 0 ? n / s / 1e6 : 0) }')
    printf '%-9s %-16s wall %7.2f s  user %6s s  %6s M ev/s  peak RSS %8s KiB\n' "$( [ "$pin" = 1 ] && echo 1-core || echo 2-core )" "$label" "$secs" "$user" "$rate" "$rss"
    echo "$pin $label $secs" >> "$work/walls"
}

: > "$work/walls"
for pin in 1 0; do
    for round in 1 2; do
        run trace-cmd "$pin" "$tc"
        run tscmerge-text "$pin" "$tm_text"
        run tscmerge-dat "$pin" "$tm_dat"
        run tscmerge-perfetto "$pin" "$tm_pf"
    done
done
rm -f "$work/x.dat" "$work/x.pftrace"

echo "best of two; ratio = trace-cmd wall / tscmerge wall:"
awk '{ k = $1 " " $2; if (!(k in best) || $3 < best[k]) best[k] = $3 }
     END {
       for (p = 1; p >= 0; p--) {
         t = best[p " trace-cmd"]
         printf "%s: trace-cmd %.2f s", (p ? "1-core" : "2-core"), t
         n = split("tscmerge-text tscmerge-dat tscmerge-perfetto", l, " ")
         for (i = 1; i <= n; i++) printf "  %s %.2f s (x%.1f)", l[i], best[p " " l[i]], t / best[p " " l[i]]
         printf "\n"
       }
     }' "$work/walls"
