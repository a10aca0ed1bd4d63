# Sourced by the scripts that run on a GPU host (gpu-check, gpu-profile, gpu-smoke, gpu-hta-check): the host's
# settings they keep, and the one build they share. Needs $root (the repository) set.

# NVLink multicast stays off, as the hosts set it (never change it).
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1} \
  NVSHMEM_DISABLE_NVLS=${NVSHMEM_DISABLE_NVLS:-1}

# gpu_build LOGDIR: configures and builds ddpbench with its CUDA parts into $root/build-gpu (the
# header-only dependencies from .deps/include, see scripts/pack-deps), logs into LOGDIR, and sets
# $bin. Prints the errors and returns 1 when either step fails.
gpu_build() {
  local logs=$1 build=$root/build-gpu
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPBENCH_CUDA=ON -DDDPBENCH_TESTS=OFF \
    -DDDPBENCH_EXTRA_INCLUDE="$root/.deps/include" \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" > "$logs/configure.log" 2>&1 \
    || { echo "configure failed"; tail -30 "$logs/configure.log"; return 1; }
  timeout 400 cmake --build "$build" -j"$(nproc)" > "$logs/build.log" 2>&1 \
    || { echo "build failed"; grep -E "error" -A3 "$logs/build.log" | head -40; return 1; }
  bin=$build/ddpbench
}
