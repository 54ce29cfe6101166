#!/usr/bin/env bash
# Scale benchmark on ONE GPU (prepared for an H100): the real 7B Qwen2-Audio shape in bfloat16.
# Bounded: step 1 <= 240 s, step 1b <= 120 s, step 2 <= 75 s (under 6 minutes in all, imports and model builds included).
#
#   bash benchmarks/gpu_bench.sh                  # on the GPU machine; results in $OUT (default ./bench_out)
#   ESN_BENCH_SMOKE=1 bash benchmarks/gpu_bench.sh  # the same steps on CPU at a tiny shape (checks the script)
#
# Step 1: benchmarks/bench_scale.py --full: discovery (collect_stats, float64 stats on the GPU) and a
#         deactivation heatmap sweep (baseline + 4 masks, encoder reuse) vs the plain forward; clips/s,
#         ratio to plain, torch.cuda.max_memory_allocated. Results are written as they come (a cut-off run
#         keeps discovery).
# Step 3 (bench_moe.py, <= 120 s): routed (mixture-of-experts) statistics at 48 x 98,304 units on the GPU
#         (bytes measured) and the MoE stats pass vs a plain forward (ratio).
# Step 2: data-parallel statistics with stats on the GPU: 2 ranks (gloo; both on this one GPU, since NCCL
#         refuses two ranks on one device) must equal one process exactly (K, T) and to 1e-9 (sums).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench_out}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
status=0

if [ "${ESN_BENCH_SMOKE:-0}" = "1" ]; then
  DEV=cpu
  BENCH_ARGS=(--device cpu --scale 0.03 --layers 4 --clips 4 --batch-size 2 --repeats 1 --threads 1)
else
  DEV=cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA not available')" || exit 2
  BENCH_ARGS=(--device cuda --dtype bfloat16 --full --clips 48 --batch-size 8 --emotions 4 --seconds 4
              --repeats 3 --threads 8)
fi

echo "== step 1: bench_scale ${BENCH_ARGS[*]}"
timeout 240 python benchmarks/bench_scale.py "${BENCH_ARGS[@]}" --recorders hooks --json "$OUT/bench_scale.json" \
  2>&1 | grep -v -i "warn" | tee "$OUT/bench_scale.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "step 1 exited $rc (124 = time limit; partial results in $OUT/bench_scale.json)"; status=1; }

echo "== step 1b: the save-everything recorder (nnsight .save() of every layer, counted on the CPU) on 8 clips"
timeout 120 python benchmarks/bench_scale.py "${BENCH_ARGS[@]}" --clips 8 --skip-sweep --recorders save_all \
  --json "$OUT/bench_scale_save_all.json" 2>&1 | grep -v -i "warn" | tee "$OUT/bench_scale_save_all.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "step 1b failed (124 = time limit)"; status=1; }

echo "== step 2: 2-rank statistics with stats on $DEV"
W="$OUT/dist_check_worker.py"
cat > "$W" <<'PY'
import json, sys, torch
torch.set_num_threads(1)
from esn_lens.distributed import init_distributed, collect_stats_distributed, finalize_distributed
from esn_lens.data.clip import EmotionClip
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

dev, out = sys.argv[1], sys.argv[2]
info = init_distributed(backend="gloo", timeout_s=60)
model, proc = build_tiny("qwen2_audio", seed=0, n_layers=4, hidden=64, d_mlp=256)
lens = Lens(model.to(dev), proc)
clips = [EmotionClip(f"c{i}", ("angry", "happy", "sad")[i % 3], audio=tiny_audio(0.3 + 0.1 * (i % 4), seed=i),
                     sampling_rate=16000) for i in range(9)]
s = collect_stats_distributed(lens, clips, "Which emotion?", ("angry", "happy", "sad"), batch_size=1, progress=False)
assert s.K.device.type == torch.device(dev).type and s.K.dtype == torch.float64
if info.is_main:
    ref = lens.collect_stats(clips, "Which emotion?", ("angry", "happy", "sad"), batch_size=1, progress=False)
    res = dict(world=info.world_size, device=str(s.K.device), K_equal=bool(torch.equal(s.K, ref.K)),
               T_equal=bool(torch.equal(s.T, ref.T)), sum_maxdiff=float((s.sum - ref.sum).abs().max()),
               sumsq_maxdiff=float((s.sumsq - ref.sumsq).abs().max()))
    print(json.dumps(res))
    json.dump(res, open(out, "w"))
    ok = res["K_equal"] and res["T_equal"] and res["sum_maxdiff"] <= 1e-9 and res["sumsq_maxdiff"] <= 1e-9
    print("distributed == single process:", "OK" if ok else "MISMATCH")
    if not ok:
        sys.exit(3)
finalize_distributed()
PY
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 timeout 75 python -m torch.distributed.run --nproc_per_node 2 --nnodes 1 \
  --master_addr 127.0.0.1 --master_port "$PORT" "$W" "$DEV" "$OUT/dist_check.json" 2>&1 \
  | grep -v -i "warn" | tail -n 20 | tee "$OUT/dist_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "step 2 exited $rc"; status=1; }

echo "== step 3: mixture-of-experts (Qwen3-Omni expert units): routed stats at the 30B-A3B unit count on $DEV, and the"
echo "   stats pass (exact per-expert path + per-unit T) vs the plain forward on a reduced MoE thinker"
if [ "${ESN_BENCH_SMOKE:-0}" = "1" ]; then MOE_ARGS=(--device cpu --repeats 1 --no-measure)
else MOE_ARGS=(--device cuda --dtype bfloat16 --repeats 5 --threads 8); fi
timeout 120 python benchmarks/bench_moe.py "${MOE_ARGS[@]}" --json "$OUT/bench_moe.json" 2>&1 | grep -v -i "warn" \
  | tee "$OUT/bench_moe.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "step 3 failed (124 = time limit)"; status=1; }

echo "== done (status $status); results in $OUT"
exit $status
