#include "kernels/common/binding.h"

#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>

namespace ddpbench::kernels {

DType kernel_dtype(const at::Tensor& t, const char* op) {
  if (t.scalar_type() == at::kBFloat16) return DType::bf16;
  if (t.scalar_type() == at::kFloat) return DType::f32;
  throw std::invalid_argument(std::string(op) + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                              " is not supported (bf16 or fp32)");
}

void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  if (!t.defined() || !t.is_cuda())
    throw std::invalid_argument(std::string(op) + ": " + name + " must be a CUDA tensor");
}

cudaStream_t current_stream(const at::Tensor& on) {
  return c10::cuda::getCurrentCUDAStream(on.device().index()).stream();
}

bool poison_outputs() {
  const char* v = std::getenv("DDPBENCH_KERNELS_POISON");
  return v && std::string(v) == "1";
}

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  auto t = at::empty(sizes, options);
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

}  // namespace ddpbench::kernels
