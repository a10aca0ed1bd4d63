#include "train/model.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <filesystem>
#include <map>

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/error.h"
#include "common/strings.h"
#include "kernels/fused.h"
#include "kernels/mlp/mlp.h"
#include "kernels/lora/lora.h"
#include "kernels/reference.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/hf_config.h"
#include "train/safetensors.h"

namespace ddpbench::train {

namespace {

bool is_lora_target(const Config& cfg, const std::string& module) {
  return cfg.mode == Mode::lora &&
         std::find(cfg.lora_targets.begin(), cfg.lora_targets.end(), module) != cfg.lora_targets.end();
}

}  // namespace

// Drawn on the CPU in fp32 and then moved, so the same seed gives the same weights on any device
// and in any dtype; in parallel chunks because the 8b preset's 8e9 values take about 50 s on one
// core (a first 8b run on an H100 host did not get past initialisation in 60 s).
at::Tensor init_normal(at::IntArrayRef shape, double std, at::TensorOptions options, at::Generator& gen, std::int64_t chunk) {
  const std::int64_t kChunk = chunk;
  auto values = at::empty(shape, at::kFloat);
  auto flat = values.view({-1});
  const auto tensor_seed = static_cast<std::uint64_t>(at::empty({}, at::kLong).random_(gen).item<std::int64_t>());
  const std::int64_t chunks = (flat.numel() + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t c = begin; c < end; ++c) {
      auto chunk_gen = at::detail::createCPUGenerator(mix64(tensor_seed ^ mix64(static_cast<std::uint64_t>(c))));
      flat.narrow(0, c * kChunk, std::min(kChunk, flat.numel() - c * kChunk)).normal_(0.0, std, chunk_gen);
    }
  });
  return values.to(options);
}

namespace {

// Gradient checkpointing of one decoder layer: forward without keeping activations, then in backward
// run the layer again with autograd on and back-propagate through it. The nested backward
// accumulates parameter gradients (and fires the DDP reducer's hooks) as a normal backward would.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  using Body = std::function<at::Tensor(const at::Tensor&)>;
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Body body) {
    ctx->saved_data["body"] = c10::IValue::make_capsule(c10::make_intrusive<BodyHolder>(std::move(body)));
    ctx->save_for_backward({input});
    at::NoGradGuard no_grad;
    return body_of(ctx)(input);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor output;
    {
      at::AutoGradMode enable(true);
      output = body_of(ctx)(input);
    }
    torch::autograd::backward({output}, {grads[0]});
    return {input.grad(), at::Tensor()};
  }

 private:
  struct BodyHolder : torch::CustomClassHolder {
    explicit BodyHolder(Body b) : body(std::move(b)) {}
    Body body;
  };
  static const Body& body_of(torch::autograd::AutogradContext* ctx) {
    return static_cast<BodyHolder*>(ctx->saved_data["body"].toCapsule().get())->body;
  }
};

}  // namespace

LlamaModel::LlamaModel(const Config& cfg, at::TensorOptions options)
    : cfg_(cfg), fused_(cfg.impl == "fused"), shape_(preset_shape(cfg.preset)), gen_(at::detail::createCPUGenerator(cfg.seed)) {
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
  if (fused_) return kernels::rms_norm(x, weight, shape_.norm_eps);
  return kernels::reference_rms_norm(x, weight, shape_.norm_eps);
}

std::pair<at::Tensor, at::Tensor> LlamaModel::add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                           const at::Tensor& weight) const {
  if (fused_) return kernels::add_rms_norm(x, residual, weight, shape_.norm_eps);
  auto h = x + residual;
  auto normed = rms_norm(h, weight);
  return {std::move(h), std::move(normed)};
}

// q [B, T, Hq, D], k [B, T, Hk, D]; cos, sin [T, D].
std::pair<at::Tensor, at::Tensor> LlamaModel::rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                   const at::Tensor& sin) const {
  if (fused_) return kernels::rope_qk(q, k, cos, sin);
  return {kernels::reference_rope(q, cos, sin), kernels::reference_rope(k, cos, sin)};
}

at::Tensor LlamaModel::adapter_input(const at::Tensor& x, std::initializer_list<const Linear*> readers) const {
  // As PEFT does for a bf16 base model: adapters are kept and computed in fp32, the input cast to
  // their dtype. Once per input, not once per adapted linear: three (q, k, v) or two (gate, up)
  // fp32 copies of one activation, each saved by its GEMM, were 3 GiB of the 1b preset's LoRA peak.
  if (fused_) return {};
  for (const auto* lin : readers)
    if (lin->lora_a.defined()) return x.to(lin->lora_a.scalar_type());
  return {};
}

at::Tensor LlamaModel::linear(const Linear& lin, const at::Tensor& x, const at::Tensor& x_adapter) const {
  if (!lin.lora_a.defined()) return at::linear(x, lin.weight);
  if (fused_) return kernels::lora_linear(x, lin.weight, lin.lora_a, lin.lora_b, lin.lora_scale);
  return kernels::lora_linear_reference(x, x_adapter.defined() ? x_adapter : x.to(lin.lora_a.scalar_type()), lin.weight,
                                        lin.lora_a, lin.lora_b, lin.lora_scale);
}

at::Tensor LlamaModel::attention(const Layer& L, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  const auto B = x.size(0), T = x.size(1);
  const std::int64_t hd = shape_.head_dim();
  const auto xa = adapter_input(x, {&L.q, &L.k, &L.v});
  auto [q, k] = rope(linear(L.q, x, xa).view({B, T, shape_.heads, hd}), linear(L.k, x, xa).view({B, T, shape_.kv_heads, hd}),
                     cos, sin);
  auto v = linear(L.v, x, xa).view({B, T, shape_.kv_heads, hd});
  // Right padding needs no mask under causal attention: real tokens only see earlier real tokens,
  // and padded positions carry no label.
  auto out = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), {}, 0.0,
                                              /*is_causal=*/true, std::nullopt,
                                              /*enable_gqa=*/shape_.kv_heads != shape_.heads);
  const auto merged = out.transpose(1, 2).reshape({B, T, shape_.hidden});
  return linear(L.o, merged, adapter_input(merged, {&L.o}));
}

at::Tensor LlamaModel::layer_forward(const Layer& L, const at::Tensor& h_in, const at::Tensor& cos, const at::Tensor& sin) const {
  const auto [h, x] = add_rms_norm(attention(L, rms_norm(h_in, L.input_norm), cos, sin), h_in, L.post_attention_norm);
  // Under fused the whole MLP is one op (kernels/mlp): the activation is recomputed, not saved.
  if (fused_) {
    const auto proj = [](const Linear& lin) { return kernels::Projection{lin.weight, lin.lora_a, lin.lora_b, lin.lora_scale}; };
    return kernels::swiglu_mlp(x, h, proj(L.gate), proj(L.up), proj(L.down));
  }
  const auto xa = adapter_input(x, {&L.gate, &L.up});
  const auto act = at::silu(linear(L.gate, x, xa)) * linear(L.up, x, xa);
  return h + linear(L.down, act, adapter_input(act, {&L.down}));
}

// The LM head and the summed loss of the shifted labels [B, T] (ignore index where none).
at::Tensor LlamaModel::head_loss_sum(const at::Tensor& h, const at::Tensor& labels) const {
  if (fused_)
    return kernels::linear_cross_entropy_sum(h.reshape({-1, h.size(-1)}), lm_head_, labels.reshape({-1}), kIgnoreIndex);
  // fp32 logits for the loss, as Transformers' ForCausalLMLoss upcasts them (logits.float()).
  const auto logits = at::linear(h, lm_head_);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}), {},
                                at::Reduction::Sum, kIgnoreIndex);
}

at::Tensor LlamaModel::loss_sum(const at::Tensor& tokens, const at::Tensor& labels) const {
  const auto options = embed_.options();
  const auto T = tokens.size(1);
  const auto [cos, sin] = kernels::rope_tables(T, shape_.head_dim(), shape_.rope_theta, options);
  auto h = at::embedding(embed_, tokens);
  for (const auto& L : layers_) {
    if (cfg_.grad_ckpt && h.requires_grad()) {
      h = CheckpointedLayer::apply(h, [this, &L, cos = cos, sin = sin](const at::Tensor& x) {
        return layer_forward(L, x, cos, sin);
      });
    } else {
      h = layer_forward(L, h, cos, sin);
    }
  }
  // Shift the labels rather than the logits: no copy of the largest activation.
  const auto shifted = at::cat({labels.narrow(1, 1, T - 1), at::full({labels.size(0), 1}, kIgnoreIndex, labels.options())}, 1);
  return head_loss_sum(rms_norm(h, final_norm_), shifted);
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

namespace ddpbench::train {

namespace {

constexpr const char* kPeftPrefix = "base_model.model.";

bool is_lora_name(const std::string& name) { return name.find(".lora_") != std::string::npos; }

std::string safetensors_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kBFloat16: return "BF16";
    case at::kHalf: return "F16";
    case at::kDouble: return "F64";
    default: throw RunError(std::string("no safetensors dtype for ") + c10::toString(t));
  }
}

at::ScalarType scalar_type_of(const std::string& dtype, const std::string& where) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "F64") return at::kDouble;
  throw UsageError(where + ": tensor dtype " + dtype + " is not a floating-point type the model can load");
}

void write_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> keep;  // CPU copies that the records point into
  std::vector<safetensors::TensorData> records;
  for (const auto& [name, t] : named) {
    keep.push_back(t.detach().to(at::kCPU).contiguous());
    const auto& c = keep.back();
    records.push_back({name, safetensors_dtype(c.scalar_type()), c.sizes().vec(), c.data_ptr(),
                       static_cast<std::size_t>(c.numel()) * c.element_size()});
  }
  safetensors::write(path, records, {{"format", "pt"}});
}

}  // namespace

void LlamaModel::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  const std::string dtype = embed_.scalar_type() == at::kBFloat16 ? "bfloat16" : "float32";
  write_file_atomic(dir + "/config.json", hf_llama_config(shape_, dtype).dump(2) + "\n");
  std::vector<std::pair<std::string, at::Tensor>> base, adapters;
  for (const auto& p : params_) {
    if (is_lora_name(p.name)) adapters.emplace_back(kPeftPrefix + p.name, p.tensor);
    else base.emplace_back(p.name, p.tensor);
  }
  write_tensors(dir + "/model.safetensors", base);
  if (!adapters.empty()) {
    write_file_atomic(dir + "/adapter_config.json",
                      peft_lora_config(cfg_.lora_rank, cfg_.lora_alpha, cfg_.lora_targets).dump(2) + "\n");
    write_tensors(dir + "/adapter_model.safetensors", adapters);
  }
}

void LlamaModel::load_hf(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(config_path));
  } catch (const std::exception& e) {
    throw UsageError("--checkpoint: " + config_path + ": " + e.what());
  }
  const auto shape = shape_from_hf_config(config, config_path);
  if (!same_weights_shape(shape, shape_))
    throw UsageError("--checkpoint: " + config_path + " describes another model shape than preset " + cfg_.preset);
  const safetensors::File base(dir + "/model.safetensors");
  const std::string adapter_path = dir + "/adapter_model.safetensors";
  std::unique_ptr<safetensors::File> adapters;
  if (std::filesystem::exists(adapter_path)) adapters = std::make_unique<safetensors::File>(adapter_path);
  at::NoGradGuard no_grad;
  for (auto& p : params_) {
    const bool lora = is_lora_name(p.name);
    if (lora && !adapters) continue;
    const auto& file = lora ? *adapters : base;
    const std::string key = lora ? kPeftPrefix + p.name : p.name;
    const auto* rec = file.find(key);
    if (!rec) throw UsageError("--checkpoint: " + dir + " has no tensor " + key);
    if (rec->shape != p.tensor.sizes().vec())
      throw UsageError("--checkpoint: tensor " + key + " has shape " + c10::str(at::IntArrayRef(rec->shape)) +
                       ", the model's is " + c10::str(p.tensor.sizes()));
    const auto src = at::from_blob(const_cast<void*>(rec->data), rec->shape,
                                   at::TensorOptions().dtype(scalar_type_of(rec->dtype, dir)));
    p.tensor.copy_(src);
  }
}

void write_initial_checkpoint(const Config& cfg, const std::string& dir) {
  const auto options = at::TensorOptions().dtype(cfg.device == "cuda" ? at::kBFloat16 : at::kFloat);
  const LlamaModel model(cfg, options);
  model.save_hf(dir);
}

}  // namespace ddpbench::train
