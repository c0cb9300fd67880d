#!/usr/bin/env python3
"""Compare trace-cmd's host-guest merge with ours on a synth trace-cmd pair.

usage: tracecmd_hostguest.py DIR [TSCMERGE]
DIR from `tscmerge synth --format trace-cmd` (one VM, guest-vm0.dat).
trace-cmd prints times through TSC2NSEC (ns = tsc*mult>>shift, here tsc/2):
its error is measured against truth put through the same conversion.
Prints: guest events placed exactly, error distribution (ns), and the share
of the merged sequence (host and guest events) in the same order as ours."""
import json, re, subprocess, sys
from collections import defaultdict

d = sys.argv[1]
tm = sys.argv[2] if len(sys.argv) > 2 else "tscmerge"
truth = defaultdict(list)
for line in open(f"{d}/truth.tsv").read().splitlines()[1:]:
    vm, cpu, g, h = line.split("\t")
    truth[int(cpu)].append(int(h))
# TSC2NSEC of the synth pair: mult 2^30, shift 31 (2 GHz).
ns = lambda tsc: (tsc * (1 << 30)) >> 31

tc = subprocess.run(["trace-cmd", "report", "-t", "-i", f"{d}/host.dat", "-i", f"{d}/guest-vm0.dat"], capture_output=True, text=True).stdout
pat = re.compile(r"^\s*(\S+):.*\[(\d+)\]\s+(\d+)\.(\d{9}):\s+(\S+):")
tc_seq, tc_guest = [], defaultdict(list)
for l in tc.splitlines():
    m = pat.match(l)
    if not m:
        continue
    f, cpu, s, frac, ev = m.groups()
    t = int(s) * 10**9 + int(frac)
    mach = "guest" if f.startswith("guest") else "host"
    tc_seq.append((mach, int(cpu), ev))
    if mach == "guest":
        tc_guest[int(cpu)].append(t)

ours = subprocess.run([tm, "merge", f"{d}/host.dat", "--guest", f"{d}/guest-vm0.dat", "--json", "-j", "1"], capture_output=True, text=True).stdout
our_seq, our_guest = [], defaultdict(list)
for l in ours.splitlines():
    o = json.loads(l)
    mach = "host" if o["machine"] == "host" else "guest"
    our_seq.append((mach, o["cpu"], o["event"]))
    if mach == "guest":
        our_guest[o["cpu"]].append(o["ts"])

def errors(got, conv):
    errs = []
    for cpu, want in truth.items():
        for g, w in zip(got[cpu], want):
            errs.append(g - conv(w))
    return errs

for name, got, conv in [("trace-cmd 3.1.6 (ns)", tc_guest, ns), ("tscmerge (cycles)", our_guest, lambda x: x)]:
    e = sorted(errors(got, conv))
    n = len(e)
    exact = sum(1 for x in e if x == 0)
    within = sum(1 for x in e if abs(x) <= 1)
    print(f"{name}: {n} guest events, {exact} exact ({100*exact/n:.1f}%), {within} within 1 ({100*within/n:.1f}%), "
          f"error min {e[0]} median {e[n//2]} max {e[-1]}")
# Order: position by position, and as the longest common prefix.
same = sum(1 for a, b in zip(tc_seq, our_seq) if a == b)
print(f"order: {len(tc_seq)} trace-cmd events, {len(our_seq)} ours, {same} at the same position ({100*same/max(len(our_seq),1):.2f}%)")
