// Where a rank's micro-batches come from: the synthetic generator or a token file, with one
// sharding of the global batch over ranks and micro-batches for both.
#pragma once
#include <memory>
#include <string>

#include "train/config.h"
#include "train/data.h"

namespace ddpbench::train {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual TokenBatch micro_batch(int step, int rank, int micro) const = 0;
  // From cfg.data_file when set, else the synthetic generator cfg.data; world_size counts all ranks.
  static std::unique_ptr<BatchSource> make(const Config& cfg, int vocab, int world_size);
};

// Writes what the synthetic generator produces for a whole run (warmup + steps optimizer steps of
// the global batch) as a token file, so another trainer can read exactly those batches.
void dump_synthetic_data(const Config& cfg, int vocab, int world_size, const std::string& path);

}  // namespace ddpbench::train
