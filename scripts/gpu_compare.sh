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
#
# A lent machine gives one command 600 s, so the script keeps to BUDGET_S seconds (default 560):
# the headline comparison against PyTorch runs first, after the parity checks, and the
# diagnostics after it (each step's timeout cut to what is left, a step skipped with a line
# when under 20 s are left), so a run that is cut short still brings back the ratios.
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

budget=${BUDGET_S:-560}
within() { # within SECONDS COMMAND...: COMMAND under a timeout of SECONDS, or of what is left of the budget
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "skipped, ${left} s of the ${budget} s budget left: $*"
    return 124
  fi
  timeout $(($1 < left ? $1 : left)) "${@:2}"
}

# First whether this GPU computes what the CPU does: the fixtures' decoding (tuned products, the
# few-row kernel, the device's search) and 3 training steps on wgpu against flex; a kernel the
# GPU runs wrongly shows here, before any time is read.
within 300 python3 scripts/gpu_parity.py "$binary"

# The headline: training and decoding against PyTorch + PEFT on CUDA, interleaved. (A build with
# `autotune` tunes its f32 frozen products by default: PREFIX_TUNE_MATMUL=tune.) The same binary
# on Burn's matmul alone is the "before" side of the same rounds, unless an older build was given.
before_args=${before:+--before $before}
if [ -z "$before" ]; then
  before_args="--env PREFIX_TUNE_MATMUL=tune --before $binary"
  export PREFIX_TUNE_MATMUL=burn  # what --before runs: --env sets --binary's runs only
fi
within 200 python3 scripts/compare_peft.py --binary "$binary" $before_args --backend wgpu --device cuda \
  --what train --steps 20 --rounds 2 --target-fraction 0.5
within 100 python3 scripts/compare_peft.py --binary "$binary" $before_args --backend wgpu --device cuda \
  --what generate --rounds 1
unset PREFIX_TUNE_MATMUL
if [ -n "${DTYPE:-}" ]; then
  within 120 python3 scripts/compare_peft.py --binary "$binary" --backend wgpu --device cuda --dtype "$DTYPE" \
    --what train --steps 20 --rounds 2 --target-fraction 0.5
  within 80 python3 scripts/compare_peft.py --binary "$binary" --backend wgpu --device cuda --dtype "$DTYPE" \
    --what generate --rounds 1
fi

# Then where the time goes.
dispatches_per_step() { # dispatches_per_step DTYPE [VAR=VALUE...]: kernel launches per training step
  local dtype=$1; shift
  within 60 env "$@" "$binary" bench --backend wgpu --dtype "$dtype" train --steps 5 --target-fraction 0.5 --dispatches | tee /dev/stderr \
    | python3 -c "import json,sys; print(int(json.loads(sys.stdin.read().strip().splitlines()[-1])['dispatches_per_step']))" 2>/dev/null
}
profile() { # profile NAME COMMAND...: COMMAND with CubeCL's per-kernel GPU times in $OUT/profile_NAME.log
  local name=$1 dir; shift
  dir=$(mktemp -d)
  # CubeCL times every kernel on the GPU (one line each: duration, name; its settings come from
  # a cubecl.toml in the working directory); their sum against the step's wall time says how
  # much of a step is GPU work and how much host work.
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "${OUT:-/tmp}/profile_$name.log" > "$dir/cubecl.toml"
  (cd "$dir" && within 60 "$@")
}
summary() { # summary NAME [ARGS]: the profile's kernels by time, where the profiled run wrote one
  local log="${OUT:-/tmp}/profile_$1.log"
  if [ -s "$log" ]; then python3 scripts/profile_summary.py "$log" "${@:2}"; else echo "no profile: $log"; fi
}
profile_train() { # profile_train NAME DTYPE [VAR=VALUE...]: 3 training steps profiled, summed over
  # their own launches alone (the last 3 × launches per step: no compilation or autotune)
  local name=$1 dtype=$2 per_step; shift 2
  per_step=$(dispatches_per_step "$dtype" "$@")
  profile "$name" env "$@" "$binary" bench --backend wgpu --dtype "$dtype" train --steps 3 --target-fraction 0.5
  summary "$name" ${per_step:+--last $((3 * per_step)) --steps 3}
}
if [ "${PROFILE:-0}" = 1 ]; then
  profile_train train f32
  if [ -n "${DTYPE:-}" ]; then
    profile_train "train_$DTYPE" "$DTYPE"
  fi
else
  dispatches_per_step f32 > /dev/null  # its report goes to stderr
fi
# Each matrix product of a step, on wgpu (folded rows, per sequence, our tiled kernel in each
# block shape, and the tuner's choice among Burn's matmul and those blocks) and in cuBLAS.
within 120 "$binary" bench --backend wgpu matmul
within 60 python3 scripts/matmul_torch.py --device cuda
if [ -n "${DTYPE:-}" ]; then
  within 90 "$binary" bench --backend wgpu --dtype "$DTYPE" matmul
  within 60 python3 scripts/matmul_torch.py --device cuda --dtype "$DTYPE"
fi
# A training run with the forward / backward breakdown, the same with each step read back before
# the next is queued (PREFIX_TUNE_OVERLAP=0: the run no longer goes ahead of its checks), and the
# same through Burn's matmul alone.
within 90 "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5 --breakdown
within 90 env PREFIX_TUNE_OVERLAP=0 "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5
within 90 env PREFIX_TUNE_MATMUL=burn "$binary" bench --backend wgpu train --steps 10 --target-fraction 0.5 --breakdown
if [ "${PROFILE:-0}" = 1 ]; then
  profile generate env "$binary" bench --backend wgpu generate
  summary generate
  profile_train train_burn f32 PREFIX_TUNE_MATMUL=burn
fi
date -u
