// Hugging Face config files for the built-in model's shapes: config.json of a LlamaForCausalLM
// checkpoint and PEFT's adapter_config.json, so that Transformers and PEFT load what the built-in
// trainer saves (and the other way round).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace ddpbench::train {

// config.json for shape `s`; dtype is "bfloat16" or "float32" (UsageError otherwise). Both
// rope_parameters (Transformers 5) and rope_theta (older releases) are written.
nlohmann::json hf_llama_config(const ModelShape& s, const std::string& dtype);

// The shape a config.json describes, named "from:<source>". UsageError naming `source` and the
// field for a missing or wrong field, or for a model the built-in Llama cannot represent (another
// model_type or activation, biases, a head_dim other than hidden / heads, scaled RoPE).
ModelShape shape_from_hf_config(const nlohmann::json& j, const std::string& source);

// PEFT's adapter_config.json for LoRA on `targets` (PEFT module names, e.g. q_proj).
nlohmann::json peft_lora_config(int r, double alpha, const std::vector<std::string>& targets);

}  // namespace ddpbench::train
