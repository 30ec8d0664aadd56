#!/usr/bin/env bash
# N training processes on this machine with a local coordinator (multi-process JAX without a cluster).
#
#   launch/local.sh 2 --config=configs/pretrain.py:debug,mixture=synthetic --workdir=runs/mp
#
# Env: PORT (coordinator port, default random), DEVICES_PER_PROCESS (CPU: host devices per process,
# default 4; ignored unless JAX_PLATFORMS=cpu or no accelerator), PYTHON (the interpreter, relative
# paths from the repository root; default .venv/bin/python if present, else python3).
# All processes write to this terminal (only process 0 prints progress and metrics). If any
# process fails, the others are terminated and the script exits with its status.
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: launch/local.sh NUM_PROCESSES [python -m vla_jax.train flags...]" >&2
  exit 2
fi
N=$1; shift
PORT=${PORT:-$((20000 + RANDOM % 20000))}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

pids=()
cleanup() { for p in "${pids[@]}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null; done; return 0; }
# SIGTERM/SIGINT are forwarded: every process saves a checkpoint at the same step and exits 0.
trap 'cleanup' INT TERM

# CPU collectives (gloo) print one "[Gloo] Rank i is connected to j peer ranks" line per connection at every
# start; they are dropped from both streams (a filter per stream, so $! stays the trainer's pid).
quiet() { grep --line-buffered -v '^\[Gloo\] Rank ' || true; }
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS} ${XLA_FLAGS:-}" \
    "$PYTHON" -m vla_jax.train --coordinator_address="127.0.0.1:${PORT}" --num_processes="$N" \
    --process_id="$i" "$@" > >(quiet) 2> >(quiet >&2) &
  pids+=($!)
done

# Poll so a failing process is noticed at once (the others would wait in collectives) and so
# forwarded signals do not interrupt the bookkeeping.
rc=0
set +e
while :; do
  running=0
  for i in "${!pids[@]}"; do
    p=${pids[$i]}
    [[ -z "$p" ]] && continue
    if kill -0 "$p" 2>/dev/null; then running=1; continue; fi
    wait "$p"; status=$?
    pids[$i]=""
    if ((status != 0)); then
      echo "launch/local.sh: process $i exited with status $status; stopping the others" >&2
      rc=$status
      cleanup
    fi
  done
  ((running)) || break
  sleep 0.5
done
exit $rc
