// The element types the kernels take, named without torch or CUDA headers so that the launchers'
// headers stay torch-free; the bindings map at::ScalarType onto these.
#pragma once
#include <cstdint>

namespace ddpbench::kernels {

enum class DType { f32, bf16 };

}  // namespace ddpbench::kernels
