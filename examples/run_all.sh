#!/usr/bin/env bash
# Run every example in full, then rebuild docs/results.md from their results.json files.
#
#   bash examples/run_all.sh                 # one after the other (hours on a laptop CPU)
#   bash examples/run_all.sh --parallel      # all at once: on a GPU they share the device
#   bash examples/run_all.sh --quick         # smoke run; report.py refuses --quick results
#
# Any other flag is passed to every example (e.g. --device cuda). Logs: runs/examples/NAME.log.
# Set PYTHON to choose the interpreter (default: python3).
set -uo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
parallel=0
quick=0
flags=()
for arg in "$@"; do
  case "$arg" in
    --parallel) parallel=1 ;;
    --quick) quick=1; flags+=("$arg") ;;
    *) flags+=("$arg") ;;
  esac
done
runs=../runs/examples
mkdir -p "$runs"
names=(mlp_vae latent_dim_ablation latent_manifold cvae conv_vae anomaly_detection)
pids=()
failed=0
for name in "${names[@]}"; do
  log="$runs/$name$([ $quick = 1 ] && echo -quick).log"
  cmd=("$PY" "$name.py" --out "$runs/$name$([ $quick = 1 ] && echo -quick)" "${flags[@]}")
  echo "running ${cmd[*]} > $log"
  if [ $parallel = 1 ]; then
    MPLBACKEND=Agg "${cmd[@]}" >"$log" 2>&1 &
    pids+=($!)
  else
    MPLBACKEND=Agg "${cmd[@]}" >"$log" 2>&1 || { echo "FAILED: $name (see $log)"; failed=1; }
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "FAILED: ${names[$i]} (see $runs/${names[$i]}.log)"; failed=1; }
done
[ $failed = 0 ] || exit 1
if [ $quick = 0 ]; then
  "$PY" report.py --runs "$runs" --docs ../docs
fi
