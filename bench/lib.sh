# Shared by bench/merge_vs_tracecmd.sh and bench/merge_real.sh (sourced, POSIX sh).
#
# bench_bin            sets $bin: $TSCMERGE if set, else `cargo build --release -p tscmerge-cli`.
# bench_run L P N CMD  one run of shell command CMD under /usr/bin/time -v, label L, on one core
#                      (P=1, `taskset -c 0`) or unpinned (P=0), N events processed; prints a row
#                      and appends "P L wall rss" to $work/walls.
# bench_summary BASE L...  best wall of each label per pinning, ratio BASE / label, peak RSS.
# bench_rounds TC_N TM_N  for each pinning in $pins, $rounds times: trace-cmd ($tc, TC_N events)
#                      then tscmerge text, dat, perfetto ($tm_text, $tm_dat, $tm_pf, TM_N events),
#                      outputs removed after each run; then the summary.
# Needs $work (a directory for the timing files).

bench_bin() {
    if [ -n "${TSCMERGE:-}" ]; then
        bin=$TSCMERGE
    else
        cargo build -q --release -p tscmerge-cli
        bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/tscmerge
    fi
    [ -x "$bin" ] || { echo "no tscmerge binary at $bin" >&2; exit 1; }
}

bench_run() {
    label=$1; pin=$2; nev=$3; cmd=$4
    if [ "$pin" = 1 ]; then pre="taskset -c 0"; else pre=""; fi
    $pre /usr/bin/time -v sh -c "$cmd" 2> "$work/t.time" || { cat "$work/t.time"; exit 1; }
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/t.time")
    secs=$(echo "$wall" | awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    user=$(sed -n 's/.*User time (seconds): //p' "$work/t.time")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/t.time")
    rate=$(awk -v n="$nev" -v s="$secs" 'BEGIN { printf "%.2f", (s > 0 ? n / s / 1e6 : 0) }')
    printf '%-9s %-18s wall %7.2f s  user %7s s  %6s M ev/s  peak RSS %8s KiB\n' \
        "$( [ "$pin" = 1 ] && echo 1-core || echo 2-core )" "$label" "$secs" "$user" "$rate" "$rss"
    echo "$pin $label $secs $rss" >> "$work/walls"
}

bench_summary() {
    base=$1; shift
    echo "best wall per label; ratio = $base wall / wall; peak RSS = largest of the runs:"
    awk -v base="$base" -v labels="$*" '
        { k = $1 " " $2; if (!(k in best) || $3 < best[k]) best[k] = $3
          if ($4 > rss[$2]) rss[$2] = $4; seen[$1] = 1 }
        END {
          n = split(labels, l, " ")
          for (p = 1; p >= 0; p--) {
            if (!(p in seen)) continue
            t = best[p " " base]
            printf "%s: %s %.2f s", (p ? "1-core" : "2-core"), base, t
            for (i = 1; i <= n; i++)
              if ((p " " l[i]) in best)
                printf "  %s %.2f s (x%.1f)", l[i], best[p " " l[i]], (best[p " " l[i]] > 0 ? t / best[p " " l[i]] : 0)
            printf "\n"
          }
          printf "peak RSS: %s %d KiB", base, rss[base]
          for (i = 1; i <= n; i++) if (l[i] in rss) printf "  %s %d KiB", l[i], rss[l[i]]
          printf "\n"
        }' "$work/walls"
}

bench_rounds() {
    : > "$work/walls"
    for pin in $pins; do
        round=0
        while [ "$round" -lt "$rounds" ]; do
            round=$((round + 1))
            bench_run trace-cmd "$pin" "$1" "$tc"
            bench_run tscmerge-text "$pin" "$2" "$tm_text"
            bench_run tscmerge-dat "$pin" "$2" "$tm_dat"
            rm -f "$work/x.dat"
            bench_run tscmerge-perfetto "$pin" "$2" "$tm_pf"
            rm -f "$work/x.pftrace"
        done
    done
    bench_summary trace-cmd tscmerge-text tscmerge-dat tscmerge-perfetto
}
