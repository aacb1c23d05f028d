#!/usr/bin/env bash
# Same-run GPU comparison on a lent GPU machine: prefix-tune on wgpu (Vulkan) against
# PyTorch + PEFT on CUDA, through scripts/compare_peft.py. Run from the repository root.
#
#   scripts/gpu_compare.sh BINARY [BEFORE_BINARY]
#   PROFILE=1 scripts/gpu_compare.sh BINARY   # also each kernel's GPU time: $OUT/profile_*.log
#   DTYPE=f16 scripts/gpu_compare.sh BINARY   # also --dtype f16 against PyTorch f32 and f16 autocast
#
# Build BINARY with `cargo build --release -p prefix-tune --features autotune,vulkan` (SPIR-V:
# on the H200 its greedy decoding was 1.27x faster than the WGSL build's, training the same).
# BINARY (and BEFORE_BINARY, an older build run in the same rounds) may be `.xz`-compressed:
# a stripped release build is ~66 MB, over what travels to a lent machine, and ~12 MB
# compressed. A folder `.gl/` of Debian packages with the Vulkan loader (libvulkan1 and the
# GL vendor-neutral libraries) is unpacked first when the machine lacks the loader.
# Writes everything it prints to $OUT/gpu_compare.log when OUT is set.
set -uo pipefail
log=${OUT:-/tmp}/gpu_compare.log
exec > >(tee "$log") 2>&1

unpack() { # an executable path, decompressed to /tmp when it ends in .xz
  case "$1" in
    *.xz) python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$1" "/tmp/$(basename "$1" .xz)"
          chmod +x "/tmp/$(basename "$1" .xz)"; echo "/tmp/$(basename "$1" .xz)" ;;
    *) echo "$1" ;;
  esac
}
binary=$(realpath "$(unpack "$1")")
before=${2:+$(unpack "$2")}

if ! ldconfig -p | grep -q libvulkan && [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$nvidia_icd
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime}
mkdir -p "$XDG_RUNTIME_DIR"

date -u
nvidia-smi -L
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
"$binary" devices 2>&1 || true

# First whether this GPU computes what the CPU does: the fixtures' decoding (tuned products, the
# few-row kernel, the device's search) and 3 training steps on wgpu against flex; a kernel the
# GPU runs wrongly shows here, before any time is read.
timeout 360 python3 scripts/gpu_parity.py "$binary"

# (A build with `autotune` tunes its f32 frozen products by default: PREFIX_TUNE_MATMUL=tune.)
# One training run with the forward / backward breakdown, the same with each step read back
# before the next is queued (PREFIX_TUNE_OVERLAP=0: the run no longer goes ahead of its checks),
# one counting its kernel launches, then the interleaved comparison.
timeout 90 "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5 --breakdown
PREFIX_TUNE_OVERLAP=0 timeout 90 "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5
dispatches_per_step() { # kernel launches per training step, under the environment given
  env "$@" timeout 60 "$binary" bench --backend wgpu train --steps 5 --target-fraction 0.5 --dispatches | tee /dev/stderr \
    | python3 -c "import json,sys; print(int(json.loads(sys.stdin.read().strip().splitlines()[-1])['dispatches_per_step']))" 2>/dev/null
}
dispatches=$(dispatches_per_step)
# Each matrix product of a step, on wgpu (folded rows, per sequence, our tiled kernel in each
# block shape, and the tuner's choice among Burn's matmul and those blocks) and in cuBLAS.
timeout 120 "$binary" bench --backend wgpu matmul
# A build with `autotune` tunes its frozen products by default (PREFIX_TUNE_MATMUL=tune); the
# same training through Burn's matmul alone, for the difference.
PREFIX_TUNE_MATMUL=burn timeout 90 "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5 --breakdown
timeout 60 python3 scripts/matmul_torch.py --device cuda
if [ -n "${DTYPE:-}" ]; then
  timeout 90 "$binary" bench --backend wgpu --dtype "$DTYPE" matmul
  timeout 60 python3 scripts/matmul_torch.py --device cuda --dtype "$DTYPE"
fi
if [ "${PROFILE:-0}" = 1 ]; then
  # CubeCL times every kernel on the GPU (one line each: duration, name; its settings come from
  # a cubecl.toml in the working directory); their sum against the step's wall time says how
  # much of a step is GPU work and how much host work.
  for what in "train --steps 3 --target-fraction 0.5" generate; do
    dir=$(mktemp -d)
    printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "${OUT:-/tmp}/profile_${what%% *}.log" > "$dir/cubecl.toml"
    (cd "$dir" && timeout 60 "$binary" bench --backend wgpu $what)
  done
  # The last three training steps' launches (steady state: no compilation or autotune).
  python3 scripts/profile_summary.py "${OUT:-/tmp}/profile_train.log" ${dispatches:+--last $((3 * dispatches)) --steps 3}
  python3 scripts/profile_summary.py "${OUT:-/tmp}/profile_generate.log"
  # The same training steps through Burn's matmul alone.
  burn=$(dispatches_per_step PREFIX_TUNE_MATMUL=burn)
  dir=$(mktemp -d)
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "${OUT:-/tmp}/profile_train_burn.log" > "$dir/cubecl.toml"
  (cd "$dir" && PREFIX_TUNE_MATMUL=burn timeout 60 "$binary" bench --backend wgpu train --steps 3 --target-fraction 0.5)
  python3 scripts/profile_summary.py "${OUT:-/tmp}/profile_train_burn.log" ${burn:+--last $((3 * burn)) --steps 3}
fi
before_args=${before:+--before $before}
# Training and decoding run with the tuned products; the same binary on Burn's matmul alone is
# the "before" side of the same rounds (unless an older build was given).
if [ -z "$before" ]; then
  before_args="--env PREFIX_TUNE_MATMUL=tune --before $binary"
  export PREFIX_TUNE_MATMUL=burn  # what --before runs: --env sets --binary's runs only
fi
timeout 240 python3 scripts/compare_peft.py --binary "$binary" $before_args --backend wgpu --device cuda \
  --what train --steps 20 --rounds 2 --target-fraction 0.5
timeout 120 python3 scripts/compare_peft.py --binary "$binary" $before_args --backend wgpu --device cuda \
  --what generate --rounds 1
unset PREFIX_TUNE_MATMUL
if [ -n "${DTYPE:-}" ]; then
  timeout 150 python3 scripts/compare_peft.py --binary "$binary" --backend wgpu --device cuda --dtype "$DTYPE" \
    --what train --steps 20 --rounds 2 --target-fraction 0.5
  timeout 90 python3 scripts/compare_peft.py --binary "$binary" --backend wgpu --device cuda --dtype "$DTYPE" \
    --what generate --rounds 1
fi
date -u
