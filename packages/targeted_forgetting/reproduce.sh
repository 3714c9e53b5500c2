#!/usr/bin/env bash
# Reproduction on real MNIST (spec R1/R2): the two seed command lines, shortened.
#   R1  KE-style  = C1 with --train_iters 20000 (about 435 epochs of the 6 000-example split)
#   R2  IMP-style = C2 with --train_iters 10000 (about 21 epochs of the 60 000 examples)
# for seeds 1 2 3, the two chains in parallel on one thread each, then one figure and one
# summary per experiment. Needs MNIST under $FORGETTING_DATA/MNIST/raw (or DATA_DIR=...).
# Overrides: OUT (output folder, must not exist), SEEDS, R1_ITERS, R2_ITERS.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-repro}
SEEDS=${SEEDS:-"1 2 3"}
R1_ITERS=${R1_ITERS:-20000}
R2_ITERS=${R2_ITERS:-10000}
DATA=()
if [[ -n "${DATA_DIR:-}" ]]; then DATA=(--data_dir "$DATA_DIR"); fi
if [[ -e "$OUT" ]]; then echo "reproduce.sh: $OUT exists; choose another OUT=... (results are never overwritten)" >&2; exit 2; fi
export OMP_NUM_THREADS=1
run() { uv run python mixed_group_training.py "$@" "${DATA[@]}" --save_path "$OUT" --num_threads 1 --quiet --no_plot > /dev/null; }
(
  for s in $SEEDS; do
    run --seed "$s" --train_perc 0.1 --random_perc 0.1 --keep_perc 0.5 --train_iters "$R1_ITERS" \
        --fname "r1_ke_seed$s" --no_wandb
  done
) &
(
  for s in $SEEDS; do
    run --seed "$s" --train_perc 1 --random_perc 0.0 --keep_perc 0.3 --train_iters "$R2_ITERS" \
        --weight_mask --reset_to_zero --rewind_to_init --margin_groups --fname "r2_imp_seed$s" --no_wandb
  done
) &
wait %1 && wait %2
uv run python plot_mixed_groups.py "$OUT"/r1_ke_seed* --out "$OUT/r1_ke.png" \
    --title "KE-style (C1, ${R1_ITERS} its): clean vs random labels" > "$OUT/r1_summary.json"
uv run python plot_mixed_groups.py "$OUT"/r2_imp_seed* --out "$OUT/r2_imp.png" \
    --title "IMP-style (C2, ${R2_ITERS} its): easy vs hard (10% lowest margin)" > "$OUT/r2_summary.json"
tail -n +1 "$OUT"/r1_summary.json "$OUT"/r2_summary.json
