#!/bin/sh
# One run each of `tscmerge report` and `trace-cmd report` on the 1M-event
# trace.dat that crates/ftrace/benches/decode.rs writes, side by side:
# wall time and peak RSS from /usr/bin/time -v, output lines, and whether the
# outputs are identical. Usage: bench/report_vs_tracecmd.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
work=${1:-${TMPDIR:-/tmp}/tscmerge-bench}
mkdir -p "$work"
dat=$work/bench_1m.dat
[ -f "$dat" ] || TSCMERGE_BENCH_WRITE=$dat cargo bench -q -p ftrace --bench decode
cargo build -q --release -p tscmerge-cli
bin=${CARGO_TARGET_DIR:-target}/release/tscmerge

run() { # name, output file, command...
    name=$1; out=$2; shift 2
    /usr/bin/time -v "$@" > "$out" 2> "$work/$name.time"
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$name.time")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$name.time")
    user=$(sed -n 's/.*User time (seconds): //p' "$work/$name.time")
    printf '%-10s  wall %8s  user %6ss  peak RSS %8s KiB  %9s lines\n' "$name" "$wall" "$user" "$rss" "$(wc -l < "$out")"
}

echo "file: $dat ($(stat -c %s "$dat") bytes)"
run tscmerge "$work/tscmerge.out" "$bin" report "$dat"
run trace-cmd "$work/trace-cmd.out" trace-cmd report -i "$dat"
if cmp -s "$work/tscmerge.out" "$work/trace-cmd.out"; then
    echo "outputs: identical"
else
    echo "outputs: differ ($(diff "$work/tscmerge.out" "$work/trace-cmd.out" | grep -c '^<') lines)"
fi
