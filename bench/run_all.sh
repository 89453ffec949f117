#!/usr/bin/env bash
# Run every devbox benchmark in one go and print one markdown report (tables with the command
# that made each).  As root, from anywhere.  Env: RUNS (start.py, 20), UP_RUNS (up.py, 7),
# COLD=1 to add up.py's cold-start comparison (downloads packages, minutes).
# Each benchmark cleans up after itself (tmpfs state roots, podman storage, containers).
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
unset PYTHONDONTWRITEBYTECODE   # see common.devbox_env
run() {
    echo; echo "\`$*\`"; echo
    "$@" || echo "(exit $?)"
}
echo "# devbox benchmarks — $(date -u '+%F %TZ'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
run $PY bench/start.py --runs "${RUNS:-20}"
run $PY bench/up.py --runs "${UP_RUNS:-7}" ${COLD:+--cold}
[ -e bench/net_run.py ] && run $PY bench/net_run.py
[ -e bench/pull.py ] && run $PY bench/pull.py
[ -e bench/watch_latency.py ] && run $PY bench/watch_latency.py
echo; echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
