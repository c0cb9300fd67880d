#!/bin/sh
# `tscmerge record -- sleep` SIGKILLed at RUNS random moments (default 20),
# each followed by the next record (must refuse, naming every leftover),
# doctor (must list them) and `record --recover` (must leave tracefs exactly
# as before, no raw directory, no journal, no orphaned sleep). Needs root and
# a writable tracefs. RECORD_SIGKILL_SEED replays a run.
set -e
cd "$(dirname "$0")/.."
RECORD_SIGKILL_RUNS=${RUNS:-20} cargo test --release -p tscmerge-cli --test record_sigkill -- --nocapture sigkill_then_recover 2>&1 | grep -E 'seed|SIGKILLs|SKIPPED|panicked|test result'
