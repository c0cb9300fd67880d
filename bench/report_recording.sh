#!/bin/sh
# `tscmerge report` against `trace-cmd report` on a real recording of this
# machine (issue #18's measure): our own tracefs instance with sched,
# raw_syscalls, irq, timer and kmem kmalloc/kfree events, 40 MB per-CPU
# buffers, the x86-tsc clock, filled by a busy workload, written by
# `trace-cmd extract` (v7, zstd). Then both reports of that file, three
# runs each, alternating, output to a file: best wall, peak RSS, lines, and
# whether the outputs are identical. With -j 1 and the default threads.
# Usage (root, tracefs): bench/report_recording.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
work=${1:-${TMPDIR:-/tmp}/tscmerge-bench}
mkdir -p "$work"
dat=$work/recording_kmem.dat
cargo build -q --release -p tscmerge-cli
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/tscmerge

if [ ! -f "$dat" ]; then
    t=/sys/kernel/tracing
    inst=benchrec_$$
    mkdir "$t/instances/$inst"
    trap 'echo 0 > "$t/instances/$inst/tracing_on" 2>/dev/null; echo 0 > "$t/instances/$inst/events/enable" 2>/dev/null; rmdir "$t/instances/$inst" 2>/dev/null || true' EXIT
    d=$t/instances/$inst
    echo 40960 > "$d/buffer_size_kb"
    echo x86-tsc > "$d/trace_clock"
    for e in sched raw_syscalls irq timer; do echo 1 > "$d/events/$e/enable"; done
    echo 1 > "$d/events/kmem/kmalloc/enable"
    echo 1 > "$d/events/kmem/kfree/enable"
    echo 1 > "$d/tracing_on"
    # Busy work until the buffers are nearly full (about 1.8 M events).
    i=0
    while [ "$i" -lt 40 ]; do
        find /usr/share -maxdepth 3 > /dev/null 2>&1
        sh -c 'for j in 1 2 3 4 5 6 7 8; do cat /proc/stat > /dev/null; done'
        i=$((i + 1))
    done
    echo 0 > "$d/tracing_on"
    (cd "$work" && trace-cmd extract -B "$inst" -o "$dat" > /dev/null)
fi

best() { # name, command... : best wall of the runs recorded in $work/$name.walls
    sort -n "$work/$1.walls" | head -1
}
run() { # name, output file, command...
    name=$1; out=$2; shift 2
    /usr/bin/time -f '%e %M' -o "$work/$name.time" "$@" > "$out"
    read -r wall rss < "$work/$name.time"
    echo "$wall" >> "$work/$name.walls"
    echo "$rss" > "$work/$name.rss"
}
rm -f "$work"/*.walls
for k in 1 2 3; do
    run tscmerge "$work/tscmerge.out" "$bin" report "$dat"
    run tscmerge-j1 "$work/tscmerge-j1.out" "$bin" report -j 1 "$dat"
    run trace-cmd "$work/trace-cmd.out" trace-cmd report -i "$dat"
done
echo "file: $dat ($(stat -c %s "$dat") bytes, $(grep -c '' "$work/trace-cmd.out") lines)"
tc=$(best trace-cmd)
for n in tscmerge tscmerge-j1 trace-cmd; do
    b=$(best $n)
    printf '%-12s best wall %6ss  peak RSS %8s KiB  %6sx\n' "$n" "$b" "$(cat "$work/$n.rss")" "$(echo "scale=1; $tc / $b" | bc)"
done
for n in tscmerge tscmerge-j1; do
    if cmp -s "$work/$n.out" "$work/trace-cmd.out"; then
        echo "$n output: identical to trace-cmd's"
    else
        echo "$n output: $(diff "$work/$n.out" "$work/trace-cmd.out" | grep -c '^<') lines differ"
    fi
done
