#include "kernels/check.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include <torch/csrc/autograd/autograd.h>

#include "common/error.h"

namespace ddpbench::kernels {

namespace {

at::ScalarType first_floating(const std::vector<at::Tensor>& inputs) {
  for (const auto& t : inputs)
    if (t.is_floating_point()) return t.scalar_type();
  throw UsageError("check_against_reference: the op has no floating-point input");
}

struct Run {
  std::vector<at::Tensor> outputs, grads;
};

// The op on detached copies of the inputs (floating ones cast to `dtype` where given), and the
// gradients of the differentiable ones for grad_outputs.
Run run(const std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>& f, const OpInputs& in,
        std::optional<at::ScalarType> dtype) {
  std::vector<at::Tensor> inputs, wrt;
  for (std::size_t i = 0; i < in.inputs.size(); ++i) {
    auto t = in.inputs[i].detach();
    if (dtype && t.is_floating_point()) t = t.to(*dtype);
    if (in.differentiable[i]) {
      t.requires_grad_(true);
      wrt.push_back(t);
    }
    inputs.push_back(t);
  }
  Run r;
  r.outputs = f(inputs);
  if (r.outputs.size() != in.grad_outputs.size())
    throw RunError("check_against_reference: " + std::to_string(r.outputs.size()) + " outputs but " +
                   std::to_string(in.grad_outputs.size()) + " grad_outputs");
  std::vector<at::Tensor> grad_outputs;
  for (std::size_t i = 0; i < in.grad_outputs.size(); ++i)
    grad_outputs.push_back(in.grad_outputs[i].to(r.outputs[i].scalar_type()));
  if (!wrt.empty()) r.grads = torch::autograd::grad(r.outputs, wrt, grad_outputs, false, false, true);
  return r;
}

double rel_error(const at::Tensor& got, const at::Tensor& want) {
  if (!got.defined() || !want.defined()) return got.defined() == want.defined() ? 0.0 : std::numeric_limits<double>::infinity();
  if (got.sizes() != want.sizes()) return std::numeric_limits<double>::infinity();
  const auto g = got.detach().to(at::kDouble), w = want.detach().to(at::kDouble);
  if (!at::isfinite(g).all().item<bool>()) return std::numeric_limits<double>::infinity();
  const double denom = w.norm().item<double>();
  const double num = (g - w).norm().item<double>();
  return denom > 0 ? num / denom : num;
}

}  // namespace

double tolerance_for(at::ScalarType dtype) { return dtype == at::kBFloat16 ? 1e-2 : 1e-5; }

std::string CheckResult::describe() const {
  std::string out;
  char buf[96];
  for (const auto& t : tensors) {
    std::snprintf(buf, sizeof buf, "%s%s %.1e", out.empty() ? "" : ", ", t.what.c_str(), t.rel_error);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, " (tolerance %.0e)", tolerance);
  return out + buf;
}

CheckResult check_against_reference(const OpSpec& op, const OpInputs& in) {
  const auto dtype = first_floating(in.inputs);
  const auto wide = dtype == at::kFloat || dtype == at::kDouble ? at::kDouble : at::kFloat;
  const Run fused = run(op.fused, in, std::nullopt);
  const Run reference = run(op.reference, in, wide);
  CheckResult r;
  r.tolerance = tolerance_for(dtype);
  for (std::size_t i = 0; i < reference.outputs.size(); ++i)
    r.tensors.push_back({"output " + std::to_string(i), rel_error(i < fused.outputs.size() ? fused.outputs[i] : at::Tensor(),
                                                                  reference.outputs[i])});
  std::size_t g = 0;
  for (std::size_t i = 0; i < in.inputs.size(); ++i) {
    if (!in.differentiable[i]) continue;
    r.tensors.push_back({"grad of input " + std::to_string(i),
                         rel_error(g < fused.grads.size() ? fused.grads[g] : at::Tensor(), reference.grads[g])});
    ++g;
  }
  for (const auto& t : r.tensors) r.worst = std::max(r.worst, std::isnan(t.rel_error) ? std::numeric_limits<double>::infinity() : t.rel_error);
  return r;
}

}  // namespace ddpbench::kernels
