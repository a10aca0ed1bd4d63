// Checkpoints in Hugging Face format, seen from code that does not include LibTorch.
#pragma once
#include <string>

#include "train/config.h"

namespace ddpbench::train {

// The weights the built-in trainer starts from under cfg (preset, mode, LoRA settings, seed), as a
// Hugging Face checkpoint folder: bf16 for cuda configurations, fp32 for cpu ones.
void write_initial_checkpoint(const Config& cfg, const std::string& dir);

}  // namespace ddpbench::train
