#!/bin/sh
# Issue #21: what placement by run windows costs on the 1 GB synth set.
#
#   bench/placement.sh OLD_TSCMERGE [NEW_TSCMERGE] [WORKDIR]
#
# Makes (once) the set of bench/merge_vs_tracecmd.sh 1g: `tscmerge synth --format dat
# --compression none --windows 1900000` (host.dat 1.0 GB, 3.0 GB of inputs, 39 M events; its
# guests write their TSC up and back every 17 windows, so guest times repeat everywhere and the
# run-window pass runs over the whole host), then runs the text merge of OLD (a build before the
# run-window pass, e.g. 5bf4273) and NEW alternately, three times each, on two threads and with
# `-j 1`, and prints the best wall, user time and peak RSS of each, and the
# median of the paired new/old wall ratios. The merges' outputs are
# not compared: NEW places the ambiguous events by run windows, OLD by the guest-only rule.
set -eu
old=${1:?usage: bench/placement.sh OLD_TSCMERGE [NEW_TSCMERGE] [WORKDIR]}
new=${2:-$(pwd)/target/release/tscmerge}
work=${3:-${TMPDIR:-/tmp}/tscmerge-placement-bench}
dir=$work/w1900000
mkdir -p "$work"
if [ ! -f "$dir/host.dat" ]; then
    free=$(df -P -B1 "$work" | awk 'NR == 2 { print $4 }')
    [ "$free" -gt 8000000000 ] || { echo "refusing: $work needs ~8 GB free" >&2; exit 1; }
    "$new" synth --format dat --compression none --windows 1900000 -o "$dir" 2> "$work/synth.log"
    rm -f "$dir/truth.tsv"
fi
g="--guest vm0=$dir/guest-vm0.dat,pid=2001 --guest vm1=$dir/guest-vm1.dat,pid=2101"
: > "$work/runs"
for round in 1 2 3; do
    for j in 2 1; do
        for b in old new; do
            eval "bin=\$$b"
            /usr/bin/time -f "%e %U %M" -o "$work/t" "$bin" merge -j "$j" "$dir/host.dat" $g > /dev/null 2> "$work/err.$b"
            echo "$b $j $(cat "$work/t") $(cut -d' ' -f1 /proc/loadavg)" >> "$work/runs"
        done
    done
done
grep -h "fitted\|run-window" "$work/err.new" || true
echo "binary threads  best-wall-s  best-user-s  peak-RSS-KiB  (load averages: $(awk '{ print $6 }' "$work/runs" | tr '\n' ' '))"
awk '{ k = $1 " -j" $2; if (!(k in w) || $3 < w[k]) w[k] = $3; if (!(k in u) || $4 < u[k]) u[k] = $4; if ($5 > r[k]) r[k] = $5 }
     END { for (k in w) printf "%-14s %10.2f %12.2f %13d\n", k, w[k], u[k], r[k] }' "$work/runs" | sort
awk '{ k = $2; if ($1 == "old" && (!(k in o) || $3 < o[k])) o[k] = $3; if ($1 == "new" && (!(k in n) || $3 < n[k])) n[k] = $3 }
     END { for (k in o) printf "-j %s: new/old wall %.3f\n", k, n[k] / o[k] }' "$work/runs"
# Machines whose speed wanders between runs: the median of the ratios of
# each new run to the old run just before it (same thread count).
awk '$1 == "old" { last[$2] = $3 } $1 == "new" && ($2 in last) { r[$2] = r[$2] " " $3 / last[$2] }
     END { for (k in r) print k, r[k] }' "$work/runs" | while read -r j ratios; do
    echo "$ratios" | tr ' ' '\n' | sort -g | awk -v j="$j" '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "-j %s: median of paired new/old walls %.3f (%d pairs)\n", j, m, NR }'
done
