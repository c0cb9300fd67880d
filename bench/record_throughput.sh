#!/bin/sh
# Sustained capture rate of `tscmerge record`: events/s written to the output
# with no event lost, under a context-switch storm (`perf bench sched pipe`:
# two tasks ping-ponging through a pipe, ~2 sched_switch + ~1 sched_wakeup per
# round trip) and under a `perf bench sched messaging` (hackbench) load.
#
# Usage (root): bench/record_throughput.sh [TSCMERGE] [BUFFER_KB...]
#   TSCMERGE defaults to target/debug/tscmerge; buffer sizes to "64 256 1408 4096".
# Prints one line per run: load, buffer, seconds, events in the file, events/s,
# lost (sum over CPUs of overrun + dropped + commit overrun, per_cpu stats).
#
# Records in guest mode (one instance, sched_switch + sched_wakeup, x86-tsc):
# the capture path is the same in host mode. Uses instance names bench_*.
set -eu
BIN=${1:-target/debug/tscmerge}
[ $# -gt 0 ] && shift
SIZES=${*:-"64 256 1408 4096"}
TMP=$(mktemp -d /tmp/record_bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

run() { # load-name buffer-kb command...
    name=$1; kb=$2; shift 2
    out=$TMP/$name.$kb.dat
    "$BIN" record --guest --no-kallsyms --instance-prefix bench_ --buffer-kb "$kb" \
        -e sched:sched_switch -e sched:sched_wakeup -o "$out" -- "$@" \
        >/dev/null 2>"$TMP/err"
    # The capture window (tracing on → off), as record reports it.
    secs=$(sed -n 's/.*stopped by .* after \([0-9.]*\)s.*/\1/p' "$TMP/err")
    events=$("$BIN" info "$out" | awk '/^  events:/ {print $2; exit}')
    lost=$(sed -n 's/.*lost events total \([0-9]*\).*/\1/p' "$TMP/err" | head -1)
    awk -v n="$name" -v kb="$kb" -v d="$secs" -v ev="$events" -v l="$lost" \
        'BEGIN { printf "%-10s %6d KiB %6.2f s %9d events %9.0f ev/s lost %s\n", n, kb, d, ev, ev / d, l }'
    rm -f "$out"
}

for kb in $SIZES; do
    for loops in 100000 400000; do
        run "pipe$((loops / 1000))k" "$kb" perf bench sched pipe -l "$loops"
    done
    run hackbench "$kb" perf bench sched messaging -g 4 -l 200
done
