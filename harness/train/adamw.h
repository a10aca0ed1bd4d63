// AdamW for the built-in trainer, on ATen's fused kernel (the one torch.optim.AdamW(fused=True)
// runs). Internal to the LibTorch side (ddpbench_torch and its tests).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace ddpbench::train {

// OptimState (config.h) says where the state of a bf16 parameter lives; fp32 parameters (LoRA
// adapters, everything on the CPU) are updated in place with fp32 state either way.
class AdamW {
 public:
  // `scratch_elems`: the fp32 gradient copies of master-weight parameters are made in pieces of
  // at most this many elements, so the transient memory stays bounded whatever the model size.
  AdamW(std::vector<at::Tensor> params, double weight_decay, OptimState state,
        std::int64_t scratch_elems = std::int64_t{1} << 25);
  void step(double lr);
  // Bytes of optimizer state held on the device: moments, master weights and the scratch (the
  // scalar step counts left out, as the HF trainer's figure leaves them out).
  std::int64_t state_bytes() const;
  // The fp32 master weight of params[i] (the parameter itself where it is fp32 already).
  const at::Tensor& master(std::size_t i) const { return master_[i]; }

 private:
  struct Piece {  // one contiguous slice of one master-weight parameter
    std::size_t param;
    std::int64_t offset, length;
  };
  std::vector<at::Tensor> params_, master_, exp_avg_, exp_avg_sq_, steps_;
  std::vector<std::size_t> direct_;              // parameters updated in place (state in their dtype)
  std::vector<std::vector<Piece>> chunks_;       // master-weight parameters, cut to fit the scratch
  std::vector<at::Tensor> piece_steps_;          // the fused kernel's step count, one per piece
  at::Tensor scratch_;                           // fp32 gradient copies of one chunk
  double weight_decay_;
};

}  // namespace ddpbench::train
