// The fused ops' logic on the CPU: the chunked linear + cross-entropy (its CPU row step standing in
// for softmax_ce.cu) and the LoRA linear against their ATen references, gradients included; and the
// baseline model's casts for the adapters, one per input rather than one per adapted linear.
#include <gtest/gtest.h>

#include <map>
#include <unordered_map>
#include <unordered_set>

#include <torch/csrc/autograd/function.h>

#include "kernels/fused.h"
#include "kernels/linear_ce/linear_ce.h"
#include "kernels/lora/lora.h"
#include "kernels/mlp/mlp.h"
#include "kernels/ops.h"
#include "train/model.h"

namespace ddpbench {
namespace {

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  const auto r = ref.to(at::kDouble);
  return (a.to(at::kDouble) - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-30);
}

struct LinearCeCase {
  at::Tensor hidden, weight, labels;
};

LinearCeCase linear_ce_case(std::int64_t tokens, std::int64_t hidden, std::int64_t vocab, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  LinearCeCase c;
  c.hidden = at::empty({tokens, hidden}, at::kDouble).normal_(0, 1, gen);
  c.weight = at::empty({vocab, hidden}, at::kDouble).normal_(0, 0.3, gen);
  c.labels = at::empty({tokens}, at::kLong).random_(0, vocab, gen);
  c.labels.masked_fill_(at::empty({tokens}, at::kDouble).uniform_(0, 1, gen) < 0.25, -100);
  return c;
}

// Loss and gradients of hidden and weight, with the loss's gradient `grad_loss` fed to backward.
std::vector<at::Tensor> loss_and_grads(const LinearCeCase& c, double grad_loss, bool fused, std::int64_t chunk) {
  auto h = c.hidden.clone().requires_grad_(true), w = c.weight.clone().requires_grad_(true);
  const auto loss = fused ? kernels::linear_cross_entropy_sum_chunked(h, w, c.labels, -100, chunk)
                          : at::cross_entropy_loss(at::linear(h, w), c.labels, {}, at::Reduction::Sum, -100);
  (loss * grad_loss).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

TEST(FusedLinearCrossEntropy, ChunkedMatchesReferenceWithIgnoredLabels) {
  // 37 tokens: chunks of 8 leave a last chunk of 5; a chunk wider than the tokens is one chunk.
  const auto c = linear_ce_case(37, 16, 50, 7);
  const auto ref = loss_and_grads(c, 0.7, false, 0);
  for (std::int64_t chunk : {1, 8, 37, 64}) {
    const auto got = loss_and_grads(c, 0.7, true, chunk);
    for (std::size_t i = 0; i < ref.size(); ++i)
      EXPECT_LT(rel_err(got[i], ref[i]), 1e-12) << "chunk " << chunk << ", output " << i;
  }
}

TEST(FusedLinearCrossEntropy, WeightGradientAccumulatesInItsDtypeOrInFp32) {
  // bf16 inputs in chunks of one token: 37 roundings of the weight's gradient in its own dtype, one
  // in fp32. Both against the fp64 gradient of the same rounded inputs: the fp32 accumulation is
  // the closer, and the bf16 one stays within bf16's tolerance.
  const auto c = linear_ce_case(37, 16, 50, 5);
  const auto h16 = c.hidden.to(at::kBFloat16), w16 = c.weight.to(at::kBFloat16);
  LinearCeCase rounded{h16.to(at::kDouble), w16.to(at::kDouble), c.labels};
  const auto ref = loss_and_grads(rounded, 1.0, false, 0)[2];
  double err[2];
  for (const bool fp32 : {false, true}) {
    auto h = h16.clone().requires_grad_(true), w = w16.clone().requires_grad_(true);
    kernels::linear_cross_entropy_sum_chunked(h, w, c.labels, -100, 1, fp32).backward();
    EXPECT_EQ(w.grad().scalar_type(), at::kBFloat16);
    err[fp32] = rel_err(w.grad(), ref);
  }
  EXPECT_LT(err[1], err[0]);
  EXPECT_LT(err[0], 1e-2);
}

TEST(FusedLinearCrossEntropy, FrozenWeightGetsNoGradientAndIgnoredRowsNone) {
  auto c = linear_ce_case(20, 8, 30, 11);
  c.labels.narrow(0, 0, 5).fill_(-100);
  auto h = c.hidden.clone().requires_grad_(true);
  const auto loss = kernels::linear_cross_entropy_sum_chunked(h, c.weight, c.labels, -100, 6);
  loss.backward();
  EXPECT_FALSE(c.weight.grad().defined());
  EXPECT_EQ(h.grad().narrow(0, 0, 5).abs().max().item<double>(), 0.0);
  EXPECT_GT(h.grad().narrow(0, 5, 15).abs().max().item<double>(), 0.0);
  // Every label ignored: the sum is zero, and so is every gradient.
  auto h2 = c.hidden.clone().requires_grad_(true);
  const auto none = kernels::linear_cross_entropy_sum_chunked(h2, c.weight, at::full({20}, -100, at::kLong), -100, 6);
  none.backward();
  EXPECT_EQ(none.item<double>(), 0.0);
  EXPECT_EQ(h2.grad().abs().max().item<double>(), 0.0);
}

TEST(FusedLinearCrossEntropy, ChunkRowsFollowTheBudget) {
  // 1b/8b vocabulary in bf16 with 512 MiB: 2093 rows fit, rounded down to 2048 (4 chunks of 8192).
  EXPECT_EQ(kernels::linear_ce_chunk_rows(8192, 128256, 2), 2048);
  EXPECT_EQ(kernels::linear_ce_chunk_rows(8192, 128256, 4), 1024);
  EXPECT_EQ(kernels::linear_ce_chunk_rows(100, 128256, 2), 100);      // fewer tokens than a chunk
  EXPECT_EQ(kernels::linear_ce_chunk_rows(5000, 1 << 22, 4), 128);    // at least one tile
  EXPECT_EQ(kernels::linear_ce_chunk_rows(8192, 32000, 2, 1 << 20), 128);
}

TEST(FusedLoraLinear, MatchesReferenceIncludingGradients) {
  auto gen = at::detail::createCPUGenerator(5);
  const auto x0 = at::empty({2, 7, 12}, at::kDouble).normal_(0, 1, gen);
  const auto w = at::empty({20, 12}, at::kDouble).normal_(0, 0.1, gen);
  const auto a0 = at::empty({4, 12}, at::kDouble).normal_(0, 0.3, gen);
  const auto b0 = at::empty({20, 4}, at::kDouble).normal_(0, 0.3, gen);
  const auto gy = at::empty({2, 7, 20}, at::kDouble).normal_(0, 1, gen);
  std::vector<std::vector<at::Tensor>> results;
  for (bool fused : {false, true}) {
    auto x = x0.clone().requires_grad_(true), a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    const auto y = fused ? kernels::lora_linear(x, w, a, b, 2.0) : kernels::lora_linear_reference(x, x, w, a, b, 2.0);
    y.backward(gy);
    results.push_back({y.detach(), x.grad(), a.grad(), b.grad()});
  }
  for (std::size_t i = 0; i < results[0].size(); ++i) EXPECT_LT(rel_err(results[1][i], results[0][i]), 1e-12) << "output " << i;
}

TEST(FusedLoraLinear, RefusesATrainableBaseWeight) {
  const auto x = at::ones({3, 4}), a = at::ones({2, 4}), b = at::ones({5, 2});
  const auto w = at::ones({5, 4}).requires_grad_(true);
  EXPECT_THROW(kernels::lora_linear(x, w, a, b, 1.0), std::exception);
}

// The LoRA linear multiplies its fp32 adapters in the activations' bf16 (Unsloth's arithmetic, not
// PEFT's fp32 one): within the fused ops' bf16 tolerance of PEFT's computation run in fp32, and its
// adapter gradients come out fp32.
TEST(FusedLoraLinear, Bf16ActivationsStayWithinToleranceOfTheFp32Reference) {
  auto gen = at::detail::createCPUGenerator(8);
  const auto x0 = at::empty({64, 48}, at::kFloat).normal_(0, 1, gen);
  const auto w = at::empty({40, 48}, at::kFloat).normal_(0, 0.05, gen);
  const auto a0 = at::empty({8, 48}, at::kFloat).normal_(0, 0.15, gen);
  const auto b0 = at::empty({40, 8}, at::kFloat).normal_(0, 0.3, gen);
  const auto gy = at::empty({64, 40}, at::kFloat).normal_(0, 1, gen);
  std::vector<std::vector<at::Tensor>> results;
  for (bool fused : {false, true}) {
    const auto dtype = fused ? at::kBFloat16 : at::kFloat;
    auto x = x0.to(dtype, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true), a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    const auto y = fused ? kernels::lora_linear(x, w.to(dtype), a, b, 2.0)
                         : kernels::lora_linear_reference(x, x, w, a, b, 2.0);
    y.backward(gy.to(dtype));
    results.push_back({y.detach(), x.grad(), a.grad(), b.grad()});
  }
  EXPECT_EQ(results[1][2].scalar_type(), at::kFloat);
  EXPECT_EQ(results[1][3].scalar_type(), at::kFloat);
  for (std::size_t i = 0; i < results[0].size(); ++i) EXPECT_LT(rel_err(results[1][i], results[0][i]), 1e-2) << "output " << i;
}

// The fused MLP (activation recomputed in backward, residual in the down GEMM's epilogue) against
// the stock composition in fp64, full and LoRA, with and without a residual, every gradient.
TEST(FusedSwigluMlp, MatchesReferenceIncludingGradients) {
  for (const char* name : {"swiglu_mlp", "swiglu_mlp_lora"}) {
    const auto& op = kernels::find_op(name);
    kernels::OpShape shape{"test", /*tokens=*/13, /*hidden=*/12, /*intermediate=*/20};
    shape.lora_rank = 4;
    auto gen = kernels::make_generator(at::Device(at::kCPU), 11);
    const auto in = op.make_inputs(shape, at::kDouble, at::Device(at::kCPU), gen);
    for (bool with_residual : {true, false}) {
      std::vector<std::vector<at::Tensor>> results;
      for (bool fused : {false, true}) {
        std::vector<at::Tensor> args;
        for (std::size_t i = 0; i < in.inputs.size(); ++i)
          args.push_back(in.inputs[i].to(at::kDouble).requires_grad_(in.differentiable[i]));
        if (!with_residual) args[1] = at::Tensor();
        auto y = (fused ? op.fused(args) : op.reference(args))[0];
        y.backward(in.grad_outputs[0].to(at::kDouble));
        std::vector<at::Tensor> r{y.detach()};
        for (std::size_t i = 0; i < args.size(); ++i)
          if (args[i].defined() && in.differentiable[i]) r.push_back(args[i].grad());
        results.push_back(r);
      }
      ASSERT_EQ(results[0].size(), results[1].size());
      for (std::size_t i = 0; i < results[0].size(); ++i)
        EXPECT_LT(rel_err(results[1][i], results[0][i]), 1e-12) << name << (with_residual ? " residual" : "") << " tensor " << i;
    }
  }
}

TEST(FusedSwigluMlp, RefusesShapesThatDoNotChainAndTrainableWeightsUnderAdapters) {
  const auto x = at::ones({3, 4});
  const kernels::Projection gate{at::ones({6, 4})}, up{at::ones({6, 4})}, down{at::ones({4, 6})};
  EXPECT_NO_THROW(kernels::swiglu_mlp(x, {}, gate, up, down));
  EXPECT_THROW(kernels::swiglu_mlp(x, {}, gate, up, kernels::Projection{at::ones({4, 5})}), std::exception);
  EXPECT_THROW(kernels::swiglu_mlp(x, at::ones({2, 4}), gate, up, down), std::exception);
  const kernels::Projection trainable_lora{at::ones({6, 4}).requires_grad_(true), at::ones({2, 4}), at::ones({6, 2}), 1.0};
  EXPECT_THROW(kernels::swiglu_mlp(x, {}, trainable_lora, up, down), std::exception);
}

// The baseline's bf16 LoRA model casts each adapted input to the adapters' fp32 once, for all the
// linears reading it: q/k/v share one cast and gate/up another, rather than an fp32 copy each (which
// their GEMMs saved: 3 GiB on lora-1b). Read off the autograd graph as the casts (ToCopyBackward0)
// with 3 and with 2 consumers. 3: q/k/v's, in every layer but the first, whose attention reads the
// frozen embedding and needs no gradient. 2: gate/up's in every layer, and each RMSNorm's fp32 copy
// of its input (read by the square and the product): 2 per layer and the final norm, less the first
// layer's input norm (the embedding again). Before the shared casts: 0 with 3, and 2 L with 2.
TEST(BaselineMemory, OneAdapterCastPerInput) {
  train::Config cfg;
  cfg.preset = "tiny";
  cfg.mode = train::Mode::lora;
  cfg.lora_targets = train::lora_module_names();
  const train::LlamaModel model(cfg, at::TensorOptions().dtype(at::kBFloat16));
  const auto tokens = at::randint(1, 200, {2, 16}, at::kLong);
  const auto loss = model.loss_sum(tokens, tokens);
  // Every node of the graph, with how many nodes consume its output.
  std::unordered_map<torch::autograd::Node*, int> consumers;
  std::vector<torch::autograd::Node*> todo{loss.grad_fn().get()};
  std::unordered_set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto* node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node).second) continue;
    for (const auto& edge : node->next_edges()) {
      if (!edge.function) continue;
      ++consumers[edge.function.get()];
      todo.push_back(edge.function.get());
    }
  }
  std::map<int, int> casts;  // consumers -> casts with that many
  for (auto* node : seen)
    if (node->name() == "ToCopyBackward0") ++casts[consumers[node]];
  const int layers = train::preset_shape("tiny").layers;
  EXPECT_EQ(casts[3], layers - 1);
  EXPECT_EQ(casts[2], layers + (2 * layers + 1 - 1));
}

}  // namespace
}  // namespace ddpbench
