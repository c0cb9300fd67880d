#!/usr/bin/env bash
# KernelShark's KVM combo view (guest vCPUs drawn over their host threads) on
# a host-guest pair we write, screenshotted under Xvfb:
# docs/kernelshark-kvm-combo.png and docs/kernelshark-kvm-combo.md.
#
# usage: scripts/kernelshark-combo.sh OUT.png [TSCMERGE]
# needs: kernelshark (2.2.1), Xvfb, xdotool, xwd, ImageMagick convert, python3
#   apt-get install -y kernelshark xvfb x11-apps xdotool imagemagick
#
# KernelShark's own dialog for combo plots (Plots menu) draws as a black
# window under Xvfb without a window manager, so the combo plots come from a
# session file instead: KernelShark writes its last session on quit
# (~/.cache/kernelshark/lastsession.json), we add "ComboPlots" to it (the
# format KsSession::_getComboPlots reads: [[guest stream, CPU|GUEST draw
# = 10, vCPU], [host stream, TASK|HOST draw = 5, host pid]] per vCPU, the
# pairs the plugin itself builds from the host's GUEST option) and load it
# with `kernelshark -s`. KernelShark 2.2.1 fails to import a session whose
# host file holds a second buffer ("Failed to import data file form Json
# document"): the pair used here is `synth --format trace-cmd`'s (one buffer).
set -euo pipefail
out=${1:?usage: $0 OUT.png [TSCMERGE]}
tm=${2:-tscmerge}
work=$(mktemp -d)
disp=:$((70 + RANDOM % 20))
Xvfb "$disp" -screen 0 1400x900x24 >/dev/null 2>&1 &
xvfb=$!
ks=
cleanup() {
    [ -n "$ks" ] && kill "$ks" 2>/dev/null || true
    kill "$xvfb" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export DISPLAY=$disp XLIB_SKIP_ARGB_VISUALS=1 QT_X11_NO_MITSHM=1
sleep 2

# One VM with two vCPUs (threads 2001, 2002), offsets constant.
"$tm" synth -o "$work/pair" --format trace-cmd --vms 2 --windows 40 --tsc-write-every 0 --seed 11 >/dev/null

start_ks() {
    kernelshark "$@" >"$work/ks.log" 2>&1 &
    ks=$!
    sleep 10
    # "running with Root privileges" notice, when root: the main window
    # (and the session's plots) come after it.
    if [ "$(id -u)" = 0 ]; then
        xdotool key Return
    fi
    for _ in $(seq 30); do
        xdotool search --name '^Kernel Shark' >/dev/null 2>&1 && break
        sleep 1
    done
    sleep 8
}

# 1. Open the pair, quit: KernelShark writes the session of it.
start_ks -i "$work/pair/host.dat" -a "$work/pair/guest-vm0.dat"
rm -f "$HOME/.cache/kernelshark/lastsession.json"
xdotool windowfocus "$(xdotool search --name '^Kernel Shark' | head -1)"
xdotool key ctrl+q
for _ in $(seq 30); do
    kill -0 "$ks" 2>/dev/null || break
    sleep 1
done
kill "$ks" 2>/dev/null || true
ks=
[ -s "$HOME/.cache/kernelshark/lastsession.json" ] || { echo "kernelshark wrote no session" >&2; exit 1; }

# 2. The session with one combo per vCPU, zoomed on the first guest activity.
python3 - "$HOME/.cache/kernelshark/lastsession.json" "$work/combo.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for s in d["data streams"]:
    s["CPUPlots"] = {0: [2, 3], 1: [0, 1]}[s["stream id"]]
    s["TaskPlots"] = []
# [guest stream 1, KSHARK_CPU_DRAW|KSHARK_GUEST_DRAW, vCPU], [host stream 0, KSHARK_TASK_DRAW|KSHARK_HOST_DRAW, thread]
d["ComboPlots"] = [[[1, 10, 0], [0, 5, 2001]], [[1, 10, 1], [0, 5, 2002]]]
d["Model"]["range"] = [500000500000, 500000640000]
d["Splitter"] = [640, 120]
d["MainWindow"] = [1300, 860]
json.dump(d, open(sys.argv[2], "w"), indent=1)
EOF

# 3. Load it and take the picture of the graphs.
start_ks -s "$work/combo.json"
xwd -root -silent | convert xwd:- -crop 1300x540+0+0 +repage -colors 64 "$out"
echo "wrote $out"
