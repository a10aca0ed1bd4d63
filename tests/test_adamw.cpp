// AdamW of the built-in trainer against AdamW's update written out in fp64, on fresh random
// inputs; the fp32-state variant also against the bf16-state one, where the latter loses updates.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "train/adamw.h"

namespace ddpbench::train {
namespace {

constexpr double kLr = 1e-3, kWd = 0.1, kB1 = 0.9, kB2 = 0.999, kEps = 1e-8;

struct Reference {  // AdamW in fp64, as torch.optim.AdamW defines it
  at::Tensor p, m, v;
  int t = 0;
  explicit Reference(const at::Tensor& p0) : p(p0.to(at::kDouble)), m(at::zeros_like(p)), v(at::zeros_like(p)) {}
  void step(const at::Tensor& grad, double lr) {
    const auto g = grad.to(at::kDouble);
    ++t;
    m = kB1 * m + (1 - kB1) * g;
    v = kB2 * v + (1 - kB2) * g * g;
    p = p * (1 - lr * kWd);
    const double bc1 = 1 - std::pow(kB1, t), bc2 = 1 - std::pow(kB2, t);
    p = p - (lr / bc1) * m / (v.sqrt() / std::sqrt(bc2) + kEps);
  }
};

std::vector<at::Tensor> make_params(at::ScalarType dtype, std::vector<std::vector<std::int64_t>> shapes, std::uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> ps;
  for (const auto& s : shapes) ps.push_back(at::randn(s, gen, at::kFloat).to(dtype).set_requires_grad(true));
  return ps;
}

void set_random_grads(std::vector<at::Tensor>& ps, std::uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : ps) p.mutable_grad() = at::randn(p.sizes(), gen, at::kFloat).to(p.scalar_type());
}

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  const auto r = ref.to(at::kDouble);
  return ((a.to(at::kDouble) - r).abs() / (r.abs() + 1e-3)).max().item<double>();
}

const std::vector<std::vector<std::int64_t>> kShapes{{10, 3}, {3}, {4, 5}, {1}};

TEST(AdamW, Fp32ParametersFollowTheFp64Reference) {
  auto ps = make_params(at::kFloat, kShapes, 1);
  std::vector<Reference> refs(ps.begin(), ps.end());
  AdamW opt(ps, kWd, OptimState::fp32);
  for (int step = 0; step < 5; ++step) {
    set_random_grads(ps, 100 + step);
    for (std::size_t i = 0; i < ps.size(); ++i) refs[i].step(ps[i].grad(), kLr);
    opt.step(kLr);
  }
  for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_LT(max_rel(ps[i], refs[i].p), 1e-5) << "parameter " << i;
}

TEST(AdamW, Bf16WeightsWithFp32StateFollowTheReferenceOnTheirMaster) {
  auto ps = make_params(at::kBFloat16, kShapes, 2);
  std::vector<Reference> refs;
  for (auto& p : ps) refs.emplace_back(p.detach().to(at::kFloat));  // the master starts as the bf16 weight
  // A scratch of 7 elements cuts every parameter into pieces and chunks: the result must not care.
  AdamW opt(ps, kWd, OptimState::fp32, /*scratch_elems=*/7);
  for (int step = 0; step < 5; ++step) {
    set_random_grads(ps, 200 + step);
    for (std::size_t i = 0; i < ps.size(); ++i) refs[i].step(ps[i].grad(), kLr);
    opt.step(kLr);
  }
  for (std::size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(opt.master(i).scalar_type(), at::kFloat);
    EXPECT_LT(max_rel(opt.master(i), refs[i].p), 1e-5) << "parameter " << i;
    // The bf16 weight is its master rounded to nearest, nothing else.
    EXPECT_TRUE(at::equal(ps[i].detach(), opt.master(i).to(at::kBFloat16))) << "parameter " << i;
  }
}

TEST(AdamW, ScratchSizeDoesNotChangeTheResult) {
  auto small = make_params(at::kBFloat16, kShapes, 3);
  auto large = make_params(at::kBFloat16, kShapes, 3);
  AdamW a(small, kWd, OptimState::fp32, 5), b(large, kWd, OptimState::fp32);
  for (int step = 0; step < 3; ++step) {
    set_random_grads(small, 300 + step);
    set_random_grads(large, 300 + step);
    a.step(kLr);
    b.step(kLr);
  }
  for (std::size_t i = 0; i < small.size(); ++i) EXPECT_TRUE(at::equal(a.master(i), b.master(i))) << "parameter " << i;
}

// Why fp32 state: an update below half a bf16 ulp of the weight rounds away every step when the
// update is applied to the bf16 weight, while the master accumulates it.
TEST(AdamW, SmallUpdatesSurviveOnlyWithFp32State) {
  constexpr double tiny_lr = 1e-4;  // Adam's normalised step ~lr; weights ~1 have a bf16 ulp of 2^-7
  auto with_master = make_params(at::kBFloat16, {{256}}, 4);
  auto in_bf16 = make_params(at::kBFloat16, {{256}}, 4);
  const auto start = in_bf16[0].detach().clone();
  AdamW fp32(with_master, 0.0, OptimState::fp32), param(in_bf16, 0.0, OptimState::param);
  for (int step = 0; step < 100; ++step) {
    for (auto* ps : {&with_master, &in_bf16}) (*ps)[0].mutable_grad() = at::ones({256}, at::kBFloat16);
    fp32.step(tiny_lr);
    param.step(tiny_lr);
  }
  // 100 steps of ~1e-4 move every weight by ~1e-2: visible in bf16 for |w| < 1 or so.
  const auto moved = (with_master[0].detach().to(at::kFloat) - start.to(at::kFloat)).abs().gt(0).sum().item<std::int64_t>();
  const auto stuck = (in_bf16[0].detach().to(at::kFloat) - start.to(at::kFloat)).abs().gt(0).sum().item<std::int64_t>();
  EXPECT_GT(moved, 200) << "fp32 master weights should carry the small updates";
  EXPECT_LT(stuck, moved / 2) << "bf16 state should lose most of them";
  EXPECT_GT(fp32.state_bytes(), param.state_bytes());
}

}  // namespace
}  // namespace ddpbench::train
