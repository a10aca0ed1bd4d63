#include "train/model.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "train/data.h"

namespace ddpbench::train {

namespace {

bool is_lora_target(const Config& cfg, const std::string& module) {
  return cfg.mode == Mode::lora &&
         std::find(cfg.lora_targets.begin(), cfg.lora_targets.end(), module) != cfg.lora_targets.end();
}

// Values are drawn on the CPU in fp32 and then moved, so the same seed gives the same weights on
// any device and in any dtype.
at::Tensor init_normal(at::IntArrayRef shape, double std, at::TensorOptions options, at::Generator& gen) {
  return at::empty(shape, at::kFloat).normal_(0.0, std, gen).to(options);
}

at::Tensor rotate_half(const at::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor LlamaModel::Linear::operator()(const at::Tensor& x) const {
  auto y = at::linear(x, weight);
  if (!lora_a.defined()) return y;
  // As PEFT does for a bf16 base model: adapters are kept and computed in fp32, the input cast to
  // their dtype and the update cast back.
  const auto update = at::linear(at::linear(x.to(lora_a.scalar_type()), lora_a), lora_b) * lora_scale;
  return y + update.to(y.scalar_type());
}

LlamaModel::LlamaModel(const Config& cfg, at::TensorOptions options)
    : cfg_(cfg), shape_(preset_shape(cfg.preset)), gen_(at::detail::createCPUGenerator(cfg.seed)) {
  const bool full = cfg.mode == Mode::full;
  const auto& s = shape_;
  const std::int64_t d = s.hidden, kv = static_cast<std::int64_t>(s.kv_heads) * s.head_dim();
  auto add = [&](const std::string& name, at::Tensor t, bool trainable) {
    t.set_requires_grad(trainable);
    params_.push_back({name, t});
    return t;
  };
  embed_ = add("model.embed_tokens.weight", init_normal({s.vocab, d}, 0.02, options, gen_), full);
  layers_.reserve(static_cast<std::size_t>(s.layers));
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer L;
    L.input_norm = add(p + "input_layernorm.weight", at::ones({d}, options), full);
    L.q = make_linear(p + "self_attn.q_proj", d, d, options);
    L.k = make_linear(p + "self_attn.k_proj", d, kv, options);
    L.v = make_linear(p + "self_attn.v_proj", d, kv, options);
    L.o = make_linear(p + "self_attn.o_proj", d, d, options);
    L.post_attention_norm = add(p + "post_attention_layernorm.weight", at::ones({d}, options), full);
    L.gate = make_linear(p + "mlp.gate_proj", d, s.mlp, options);
    L.up = make_linear(p + "mlp.up_proj", d, s.mlp, options);
    L.down = make_linear(p + "mlp.down_proj", s.mlp, d, options);
    layers_.push_back(std::move(L));
  }
  final_norm_ = add("model.norm.weight", at::ones({d}, options), full);
  lm_head_ = add("lm_head.weight", init_normal({s.vocab, d}, 0.02, options, gen_), full);
}

LlamaModel::Linear LlamaModel::make_linear(const std::string& prefix, std::int64_t in, std::int64_t out,
                                           at::TensorOptions options) {
  const std::string module = prefix.substr(prefix.rfind('.') + 1);
  Linear lin;
  lin.weight = init_normal({out, in}, 0.02, options, gen_);
  lin.weight.set_requires_grad(cfg_.mode == Mode::full);
  params_.push_back({prefix + ".weight", lin.weight});
  if (is_lora_target(cfg_, module)) {
    const std::int64_t r = cfg_.lora_rank;
    // PEFT's default: A ~ kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0, so
    // the adapted model starts equal to the base model.
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    const auto adapter = options.dtype(at::kFloat);
    lin.lora_a = at::empty({r, in}, at::kFloat).uniform_(-bound, bound, gen_).to(adapter).set_requires_grad(true);
    lin.lora_b = at::zeros({out, r}, adapter).set_requires_grad(true);
    lin.lora_scale = cfg_.lora_alpha / static_cast<double>(r);
    params_.push_back({prefix + ".lora_A.weight", lin.lora_a});
    params_.push_back({prefix + ".lora_B.weight", lin.lora_b});
  }
  return lin;
}

at::Tensor LlamaModel::rms_norm(const at::Tensor& x, const at::Tensor& weight) const {
  // As Hugging Face's LlamaRMSNorm: normalise in fp32, scale in the input dtype.
  const auto xf = x.to(at::kFloat);
  const auto normed = xf * at::rsqrt(xf.pow(2).mean({-1}, true) + shape_.norm_eps);
  return weight * normed.to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> LlamaModel::rope_tables(std::int64_t seq_len, at::TensorOptions options) const {
  const std::int64_t hd = shape_.head_dim();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options.device());
  const auto exponents = at::arange(0, hd, 2, f32.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(hd);
  const auto inv_freq = at::pow(shape_.rope_theta, exponents).reciprocal();
  const auto freqs = at::outer(at::arange(seq_len, f32), inv_freq);
  const auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(options.dtype()), emb.sin().to(options.dtype())};
}

at::Tensor LlamaModel::attention(const Layer& L, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  const auto B = x.size(0), T = x.size(1);
  const std::int64_t hd = shape_.head_dim();
  auto q = L.q(x).view({B, T, shape_.heads, hd}).transpose(1, 2);
  auto k = L.k(x).view({B, T, shape_.kv_heads, hd}).transpose(1, 2);
  auto v = L.v(x).view({B, T, shape_.kv_heads, hd}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  // Right padding needs no mask under causal attention: real tokens only see earlier real tokens,
  // and padded positions carry no label.
  auto out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt,
                                              /*enable_gqa=*/shape_.kv_heads != shape_.heads);
  return L.o(out.transpose(1, 2).reshape({B, T, shape_.hidden}));
}

at::Tensor LlamaModel::loss_sum(const at::Tensor& tokens, const at::Tensor& labels) const {
  const auto options = embed_.options();
  const auto T = tokens.size(1);
  const auto [cos, sin] = rope_tables(T, options);
  auto h = at::embedding(embed_, tokens);
  for (const auto& L : layers_) {
    h = h + attention(L, rms_norm(h, L.input_norm), cos, sin);
    const auto x = rms_norm(h, L.post_attention_norm);
    h = h + L.down(at::silu(L.gate(x)) * L.up(x));
  }
  const auto logits = at::linear(rms_norm(h, final_norm_), lm_head_);
  // Shift the labels rather than the logits: no copy of the largest activation.
  const auto shifted = at::cat({labels.narrow(1, 1, T - 1), at::full({labels.size(0), 1}, kIgnoreIndex, labels.options())}, 1);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}).to(at::kFloat), shifted.reshape({-1}), {},
                                at::Reduction::Sum, kIgnoreIndex);
}

std::vector<at::Tensor> LlamaModel::trainable() const {
  std::vector<at::Tensor> out;
  for (const auto& p : params_)
    if (p.tensor.requires_grad()) out.push_back(p.tensor);
  return out;
}

std::int64_t LlamaModel::parameter_count(bool trainable_only) const {
  std::int64_t n = 0;
  for (const auto& p : params_)
    if (!trainable_only || p.tensor.requires_grad()) n += p.tensor.numel();
  return n;
}

}  // namespace ddpbench::train
