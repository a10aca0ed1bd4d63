// Synthetic token batches. Every sequence of every step is a pure function of (seed, step, its
// index in the global batch), so any split of the global batch over ranks and micro-batches sees
// the same sequences: the basis of the loss-normalisation equivalence tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace ddpbench::train {

inline constexpr std::int64_t kIgnoreIndex = -100;
inline constexpr std::int64_t kPadToken = 0;

// rows x seq_len, row-major. Labels equal the tokens where a token is real and kIgnoreIndex on
// padding; the model shifts them (position t predicts label t+1), as Hugging Face models do.
struct TokenBatch {
  int rows = 0;
  int seq_len = 0;
  std::vector<std::int64_t> tokens;
  std::vector<std::int64_t> labels;
  std::vector<int> lengths;

  // rows x seq_len of padding (token kPadToken, label kIgnoreIndex), lengths to be filled in.
  static TokenBatch padded(int rows, int seq_len);

  std::int64_t real_tokens() const;       // non-padding tokens
  std::int64_t padded_tokens() const { return static_cast<std::int64_t>(rows) * seq_len; }
  std::int64_t predicted_tokens() const;  // labels that count in the loss: sum of (length - 1)
};

inline constexpr int kMarkovSuccessors = 4;

// kind "random": every token uniform over the vocabulary, nothing to learn (pure speed runs).
// kind "markov": a sparse Markov chain over an active subset of the vocabulary (`markov_states`
// ids, each with 4 equally likely successors), so the loss falls from ln(vocab) towards ln(4) as a
// model learns it, and two loss curves that match mean something. A smaller subset is learnt in
// fewer steps: its unigram part alone takes the loss from ln(vocab) to about ln(markov_states).
class SyntheticData {
 public:
  SyntheticData(std::uint64_t seed, int vocab, int seq_len, Lengths lengths, const std::string& kind = "markov",
                int markov_states = kMarkovStates);

  // Micro-batch `micro` of `rank` at optimizer step `step`: rows (rank * grad_accum + micro) *
  // micro_batch ... + micro_batch - 1 of the step's global batch, so each rank reads its own shard.
  TokenBatch micro_batch(int step, int rank, int micro, int grad_accum, int micro_batch) const;
  // Global-batch rows [first, first + count) of `step`.
  TokenBatch rows(int step, std::int64_t first, int count) const;

 private:
  int length_of(int step, std::int64_t row) const;
  std::int64_t token_at(int step, std::int64_t row, int position) const;

  std::uint64_t successor(std::int64_t token, std::uint64_t choice) const;

  std::uint64_t seed_;
  int vocab_;
  int seq_len_;
  Lengths lengths_;
  bool markov_;
  std::vector<std::int64_t> active_;  // the Markov chain's states
};

// Counter-based hashing (splitmix64 finaliser): the same inputs give the same value on any machine.
std::uint64_t mix64(std::uint64_t x);

}  // namespace ddpbench::train
