#!/usr/bin/env bash
# Train on a Cloud TPU pod slice (one process per TPU VM host; JAX finds the slice itself).
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh \
#       --config=configs/pretrain.py:pi0 --workdir=gs://my-bucket/runs/pi0
#
# Env: TPU_NAME, ZONE (required), PROJECT (optional), REMOTE_DIR (checkout on every worker,
# default ~/vla_jax), SYNC=1 to copy this checkout to every worker first, SETUP=1 to create the
# venv there (pip install -e . "jax[tpu]"). Use a gs:// workdir so all hosts see one checkpoint
# directory. Preemption: the TPU runtime sends SIGTERM; every host saves the same step and exits 0,
# and re-running this command resumes from that checkpoint.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REMOTE_DIR=${REMOTE_DIR:-'~/vla_jax'}
GCLOUD=(gcloud compute tpus tpu-vm)
EXTRA=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && EXTRA+=(--project="$PROJECT")

if [[ "${SYNC:-0}" == 1 ]]; then
  tar czf /tmp/vla_jax_src.tgz --exclude=.venv --exclude=runs --exclude=data --exclude=.git .
  "${GCLOUD[@]}" scp /tmp/vla_jax_src.tgz "$TPU_NAME":/tmp/ --worker=all "${EXTRA[@]}"
  "${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all "${EXTRA[@]}" \
    --command="mkdir -p $REMOTE_DIR && tar xzf /tmp/vla_jax_src.tgz -C $REMOTE_DIR"
fi
if [[ "${SETUP:-0}" == 1 ]]; then
  "${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all "${EXTRA[@]}" --command="cd $REMOTE_DIR && \
    python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . 'jax[tpu]' -r requirements.txt"
fi

ARGS=$(printf ' %q' "$@")
"${GCLOUD[@]}" ssh "$TPU_NAME" --worker=all "${EXTRA[@]}" \
  --command="cd $REMOTE_DIR && . .venv/bin/activate && python -m vla_jax.train --multihost${ARGS}"
