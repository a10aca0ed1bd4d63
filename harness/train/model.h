// The built-in Llama-family decoder on ATen ops: RMSNorm, RoPE, grouped-query attention through
// scaled_dot_product_attention, SwiGLU MLP, untied LM head, optional LoRA adapters. Parameters
// carry Hugging Face names so checkpoints map one to one. Included by LibTorch units only.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "train/config.h"

namespace ddpbench::train {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// N(0, std^2) values of `shape` in fp32 on the CPU, moved to `options`: drawn in chunks of `chunk`
// elements, each from its own generator seeded by one draw of `gen` and the chunk's index, in
// parallel; the values depend on the seed and the chunk size, not on the thread count.
at::Tensor init_normal(at::IntArrayRef shape, double std, at::TensorOptions options, at::Generator& gen,
                       std::int64_t chunk = std::int64_t{1} << 20);

class LlamaModel {
 public:
  // Random initialisation from cfg.seed through a generator of the model's own, so that models
  // built at once in several threads (tests) get the same weights (normal(0, 0.02) as Hugging Face
  // initialises Llama; LoRA A as PEFT does, B zero).
  LlamaModel(const Config& cfg, at::TensorOptions options);

  // Sum of per-token cross-entropy over the labels that are not ignored, in fp32, with labels
  // shifted by one inside (position t predicts label t + 1).
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& labels) const;

  // Hugging Face format: config.json + model.safetensors, and for LoRA PEFT's adapter_config.json +
  // adapter_model.safetensors. Loading checks every shape; LoRA adapters absent from the folder
  // keep their seeded initialisation.
  void save_hf(const std::string& dir) const;
  void load_hf(const std::string& dir);

  const std::vector<NamedTensor>& parameters() const { return params_; }
  std::vector<at::Tensor> trainable() const;
  std::int64_t parameter_count(bool trainable_only) const;

 private:
  struct Linear {
    at::Tensor weight;  // [out, in]
    at::Tensor lora_a;  // [r, in], undefined without LoRA
    at::Tensor lora_b;  // [out, r]
    double lora_scale = 0;
  };
  struct Layer {
    at::Tensor input_norm, post_attention_norm;
    Linear q, k, v, o, gate, up, down;
  };

  Linear make_linear(const std::string& prefix, std::int64_t in, std::int64_t out, at::TensorOptions options);
  // The ops that --impl fused replaces, one switch point each: the ATen composition under baseline,
  // kernels/fused.h under fused.
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) const;
  std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                 const at::Tensor& weight) const;
  std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                         const at::Tensor& sin) const;
  // x_adapter: x in the adapters' dtype, made once by adapter_input for all the linears that read x
  // (the baseline's autograd saves it; undefined under fused, whose LoRA linear multiplies the
  // adapters in x's dtype, and where none of the readers has an adapter).
  at::Tensor linear(const Linear& lin, const at::Tensor& x, const at::Tensor& x_adapter) const;
  at::Tensor adapter_input(const at::Tensor& x, std::initializer_list<const Linear*> readers) const;
  at::Tensor head_loss_sum(const at::Tensor& h, const at::Tensor& labels) const;
  at::Tensor layer_forward(const Layer& layer, const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin) const;
  at::Tensor attention(const Layer& layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

  Config cfg_;
  bool fused_ = false;  // --impl fused
  ModelShape shape_;
  at::Generator gen_;
  at::Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  std::vector<NamedTensor> params_;
};

}  // namespace ddpbench::train
