// One check of a fused op against its ATen reference, shared by the GPU tests (tests/kernels) and
// the benchmark's validation before timing (bench/kernels): forward outputs and the gradients of
// the differentiable inputs (fed the spec's random grad_outputs), the reference run on copies
// widened to fp32 (bf16 inputs) or fp64 (fp32 inputs). LibTorch units only.
#pragma once
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace ddpbench::kernels {

struct TensorCheck {
  std::string what;         // "output 0", "grad of input 1"
  double rel_error = 0;     // ||fused - reference|| / ||reference||; +inf where fused is not finite
};

struct CheckResult {
  std::vector<TensorCheck> tensors;
  double tolerance = 0;
  double worst = 0;
  bool ok() const { return worst <= tolerance; }
  std::string describe() const;  // "output 0 3.1e-03, grad of input 0 2.0e-03 (tolerance 1e-02)"
};

// bf16 within 1e-2, fp32 within 1e-5 (issue 15).
double tolerance_for(at::ScalarType dtype);

// The inputs' dtype is that of the first floating input; they are not modified.
CheckResult check_against_reference(const OpSpec& op, const OpInputs& in);

}  // namespace ddpbench::kernels
