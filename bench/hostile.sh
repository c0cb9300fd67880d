#!/bin/sh
# The hostile-input suite at scale: COUNT inputs per class (default 1000:
# truncations, byte flips, lying sizes, compression bombs, special files),
# each run through tscmerge report/info/merge with a 30 s deadline, peak RSS
# from wait4(2); prints the table (markdown) and fails on any panic (exit
# 101), signal, hang, or peak RSS over 1 GB. SEED replays a run.
set -e
[ -n "$SEED" ] && export HOSTILE_SEED=$SEED
cd "$(dirname "$0")/.."
HOSTILE_COUNT=${COUNT:-1000} cargo test --release -p tscmerge-cli --test hostile -- --nocapture 2>&1 | grep -E '^\||hostile:|FAILURE|panicked|test result'
