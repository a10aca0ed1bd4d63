#include "train/batches.h"

#include "common/error.h"
#include "train/token_file.h"

namespace ddpbench::train {

namespace {

class SyntheticSource : public BatchSource {
 public:
  SyntheticSource(const Config& cfg, int vocab)
      : data_(cfg.seed, vocab, cfg.seq_len, cfg.lengths, cfg.data, cfg.markov_states), cfg_(cfg) {}
  TokenBatch micro_batch(int step, int rank, int micro) const override {
    return data_.micro_batch(step, rank, micro, cfg_.grad_accum, cfg_.micro_batch);
  }

 private:
  SyntheticData data_;
  Config cfg_;
};

class FileSource : public BatchSource {
 public:
  FileSource(const Config& cfg, int vocab, int world_size)
      : file_(cfg.data_file), cfg_(cfg), global_batch_(static_cast<std::int64_t>(world_size) * cfg.micro_batch * cfg.grad_accum) {
    if (file_.header().vocab > static_cast<std::uint32_t>(vocab))
      throw UsageError("--data-file: " + cfg.data_file + " has vocabulary " + std::to_string(file_.header().vocab) +
                       ", larger than the model's " + std::to_string(vocab));
  }
  TokenBatch micro_batch(int step, int rank, int micro) const override {
    const std::int64_t first = (static_cast<std::int64_t>(rank) * cfg_.grad_accum + micro) * cfg_.micro_batch;
    return file_.rows(step, global_batch_, first, cfg_.micro_batch, cfg_.seq_len);
  }

 private:
  TokenFile file_;
  Config cfg_;
  std::int64_t global_batch_;
};

}  // namespace

std::unique_ptr<BatchSource> BatchSource::make(const Config& cfg, int vocab, int world_size) {
  if (!cfg.data_file.empty()) return std::make_unique<FileSource>(cfg, vocab, world_size);
  return std::make_unique<SyntheticSource>(cfg, vocab);
}

void dump_synthetic_data(const Config& cfg, int vocab, int world_size, const std::string& path) {
  const SyntheticData data(cfg.seed, vocab, cfg.seq_len, cfg.lengths, cfg.data, cfg.markov_states);
  const std::int64_t global_batch = static_cast<std::int64_t>(world_size) * cfg.micro_batch * cfg.grad_accum;
  std::vector<std::vector<std::uint32_t>> docs;
  docs.reserve(static_cast<std::size_t>(global_batch * cfg.total_steps()));
  for (int step = 0; step < cfg.total_steps(); ++step) {
    const auto batch = data.rows(step, 0, static_cast<int>(global_batch));
    for (int r = 0; r < batch.rows; ++r) {
      const auto* row = batch.tokens.data() + static_cast<std::size_t>(r) * batch.seq_len;
      docs.emplace_back(row, row + batch.lengths[static_cast<std::size_t>(r)]);
    }
  }
  write_token_file(path, static_cast<std::uint32_t>(vocab), docs);
}

}  // namespace ddpbench::train
