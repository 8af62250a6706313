#!/usr/bin/env bash
# Entrypoint of the label job on a cluster: maps the parameters in the environment onto
# jobs/label.py flags, so they are set in ONE place (the ConfigMap label-job-params on Kubernetes,
# --runtime-env-json env_vars with `ray job submit`).
#
#   INPUT_PREFIX   required  images to label, e.g. s3://bucket/images/
#   OUTPUT_PREFIX  required  labels root; this run writes to ${OUTPUT_PREFIX}/dt=${RUN_DATE}
#   VOCABULARY     required  vocabulary file (one class per line), local path or URI
#   CHECKPOINT     optional  trained ZegCLIP checkpoint (path or s3://, gs://, https:// URI);
#                            empty: jobs/label.py's training-free --method
#   CLIP_WEIGHTS   optional  CLIP backbone weights for --clip-weights
#   RUN_DATE       optional  date partition, YYYY-MM-DD; default: today (UTC) when the job starts.
#                            Set it to re-run (resume) an earlier day's partition.
#   EXTRA_ARGS     optional  further flags, split on whitespace (e.g. "--max-error-rate 0.01")
# Arguments given to this script are passed on after those.
#
# Runs on the Ray head pod (the job driver), so the variables must be in the head's environment.
# Exit codes are those of jobs/label.py; a missing parameter exits 2 (configuration error).
set -euo pipefail

require() {
  if [[ -z "${!1:-}" ]]; then
    echo "label-entrypoint: $1 is not set (ConfigMap label-job-params or runtime env)" >&2
    exit 2
  fi
}
for name in INPUT_PREFIX OUTPUT_PREFIX VOCABULARY; do require "$name"; done

run_date="${RUN_DATE:-$(date -u +%F)}"
if [[ ! "$run_date" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
  echo "label-entrypoint: RUN_DATE must be YYYY-MM-DD, got '$run_date'" >&2
  exit 2
fi

args=(
  --input "$INPUT_PREFIX"
  --output "${OUTPUT_PREFIX%/}/dt=${run_date}"
  --vocab "$VOCABULARY"
)
if [[ -n "${CHECKPOINT:-}" ]]; then args+=(--checkpoint "$CHECKPOINT"); fi
if [[ -n "${CLIP_WEIGHTS:-}" ]]; then args+=(--clip-weights "$CLIP_WEIGHTS"); fi
read -r -a extra <<< "${EXTRA_ARGS:-}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec python "$root/jobs/label.py" "${args[@]}" "${extra[@]}" "$@"
