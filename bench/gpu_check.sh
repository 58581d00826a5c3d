#!/usr/bin/env bash
# GPU check for one GPU, from the repository root: bash bench/gpu_check.sh [--cpu]
#
#   1. the tiny and the default toy RLHF world in bf16: lm.train PPO, and GRPO when lm.train has
#      --algo (held-out gold, KL, wall-clock in each run's last JSON line);
#   2. FSDP smoke runs (accelerate launch --config_file configs/fsdp.yaml, 1 process; full and
#      LoRA), whose saved policies must load: the sharded code path end to end, not a speed-up;
#   3. the GPT-2-124M-shape scale bench (python -m bench.lm_scale): tokens/s and peak GPU memory
#      (torch.cuda.max_memory_allocated) for full / LoRA, with and without gradient checkpointing.
#
# About 5 minutes on an H100. Needs torch, transformers, accelerate, peft, tokenizers, datasets,
# tensorboard and matplotlib (not trl, not gymnasium): the toy worlds must already be built, in
# $PPO_BRIDGE_CACHE (default ~/.cache/ppo-bridge); build them where trl is installed with
# `python -m lm.world` and `python -m lm.world --tiny`, and copy that folder over.
# Without CUDA it stops (exit 2) unless --cpu: a small CPU fallback (tiny world, reduced bench).
# Everything printed is also written to $OUT/gpu_check.log, and each step's last line (a JSON
# object) to $OUT/gpu_check.jsonl as {"step": NAME, "result": ...}, when $OUT is set. Exit status: 0 all steps passed, 1 a step failed, 2 cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
cpu=0
case "${1:-}" in
  --cpu) cpu=1 ;;
  "") ;;
  *) echo "error: unknown argument $1 (usage: bash bench/gpu_check.sh [--cpu])" >&2; exit 2 ;;
esac

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  && [ "$cpu" = 0 ]; then
  echo "error: torch sees no CUDA GPU: run this on a GPU machine, or pass --cpu for the small CPU fallback" >&2
  exit 2
fi
missing=$($PY - <<'EOF'
import importlib.util
need = ["torch", "transformers", "accelerate", "peft", "tokenizers", "datasets", "tensorboard",
        "matplotlib"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "error: missing Python packages: $missing (install them, e.g. pip install $missing)" >&2
  exit 2
fi
unbuilt=$($PY - <<'EOF'
from lm.world import WorldConfig, default_cache_dir
worlds = {"default": WorldConfig(), "tiny": WorldConfig.tiny()}
root = default_cache_dir()
print(" ".join(n for n, c in worlds.items() if not (root / f"world-{c.key()}/world.json").exists()))
EOF
)
if [ -n "$unbuilt" ] && ! $PY -c "import trl" 2>/dev/null; then
  echo "error: toy world(s) '$unbuilt' not built under ${PPO_BRIDGE_CACHE:-~/.cache/ppo-bridge} and trl is missing: build them where trl is (python -m lm.world; python -m lm.world --tiny) and set PPO_BRIDGE_CACHE to a copy" >&2
  exit 2
fi

runs=$(mktemp -d)
out=${OUT:-$runs/out}
mkdir -p "$out"
log="$out/gpu_check.log"
failed=()
say() { echo "$@" | tee -a "$log"; }

# step NAME CMD...: run; stdout is printed and logged after the step, stderr (progress bars,
# warnings) goes to the log only; the last stdout line (a JSON object) goes to gpu_check.jsonl
step() {
  local name=$1 start=$SECONDS rc
  shift
  say ""
  say "=== $name: $*"
  "$@" >"$runs/$name.stdout" 2>>"$log"
  rc=$?
  tee -a "$log" <"$runs/$name.stdout"
  if [ $rc = 0 ]; then
    echo "{\"step\": \"$name\", \"result\": $(tail -n 1 "$runs/$name.stdout")}" >>"$out/gpu_check.jsonl"
    say "=== $name: ok in $((SECONDS - start)) s"
  else
    failed+=("$name")
    say "=== $name: FAILED (exit $rc) in $((SECONDS - start)) s; its stderr:"
    tail -n 20 "$log" | grep -v "^===" >&2
  fi
}

say "gpu_check $(date -u +%FT%TZ) on $(hostname)"
$PY - <<'EOF' 2>&1 | tee -a "$log"
import accelerate, peft, torch, transformers
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU fallback)"
print(f"GPU: {gpu}; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}, peft {peft.__version__}")
EOF

algos=(ppo)
if $PY -m lm.train --help 2>/dev/null | grep -q -- "--algo"; then
  algos+=(grpo)
fi
common=(--mixed-precision bf16 --threads 4 --show 2)
if [ "$cpu" = 1 ]; then
  common=(--mixed-precision no --threads 2 --show 0)
  worlds=("tiny 2 16")
  bench=(--layers 2 --width 64 --heads 2 --prompts 4 --new-tokens 4 --iterations 1)
  fsdp=0
else
  worlds=("tiny 10 64" "default 50 128")  # world, iterations (default: lm.train's), eval samples
  bench=(--threads 4)
  fsdp=1
fi

for spec in "${worlds[@]}"; do
  read -r world iterations samples <<<"$spec"
  for algo in "${algos[@]}"; do
    algo_flag=()
    [ "$algo" != ppo ] && algo_flag=(--algo "$algo")
    step "toy_${world}_${algo}" $PY -m lm.train --world "$world" "${algo_flag[@]}" \
      --total-iterations "$iterations" --eval-samples "$samples" "${common[@]}" \
      --out "$runs/toy-$world-$algo"
  done
done

if [ "$fsdp" = 1 ]; then
  for lora in 0 8; do
    step "fsdp_lora$lora" $PY -m accelerate.commands.launch --config_file configs/fsdp.yaml \
      --num_processes 1 -m lm.train --world tiny --total-iterations 3 --eval-samples 32 \
      --lora-r "$lora" "${common[@]}" --out "$runs/fsdp-$lora"
  done
  step fsdp_saved $PY -c "import sys, json, peft, transformers as t
full = t.AutoModelForCausalLM.from_pretrained(sys.argv[1])
lora = peft.PeftModel.from_pretrained(t.AutoModelForCausalLM.from_pretrained(sys.argv[3]), sys.argv[2])
print(json.dumps({'full_params': full.num_parameters(), 'lora_adapters': len(lora.peft_config)}))" \
    "$runs/fsdp-0/policy" "$runs/fsdp-8/policy" "$(
      $PY -c 'from lm.world import WorldConfig, build_world; print(build_world(cfg=WorldConfig.tiny()).sft_dir)'
    )"
fi

step lm_scale $PY -m bench.lm_scale "${bench[@]}"

say ""
if [ ${#failed[@]} -gt 0 ]; then
  say "gpu_check: FAILED steps: ${failed[*]} (log: $log)"
  exit 1
fi
say "gpu_check: all steps passed (log: $log)"
