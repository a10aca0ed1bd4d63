// Suite files: a matrix of cells (workload x trainer x GPU count x micro-batch x grad-accum x
// seq-len), each a complete trainer configuration. The format (TOML):
//
//   name = "lora-1b"
//   [defaults]                 # any trainer setting (see `ddpbench train --help`)
//   preset = "1b"
//   nproc = [1, 2, 4]          # matrix keys take a list: trainer, nproc, micro_batch,
//   [[workload]]               #   grad_accum, seq_len
//   name = "lora-r16"
//   mode = "lora"
//
// Top-level `aa = ["builtin", "hf"]` (or `aa = true`: ["builtin"]) adds beside each one-rank cell of
// those trainers its A/A twin, workload "<name>-aa"; `profile = [...]` the profiled twins.
#pragma once
#include <string>
#include <vector>

#include "train/config.h"

namespace ddpbench::suite {

struct Cell {
  std::string name;      // "lora-r16/builtin/n2/b4/g1/s2048": unique within the suite
  std::string workload;
  train::Config config;
  // An A/A twin (suite key `aa`): the name of the cell whose work it repeats at half the micro-batch
  // and twice the accumulation; empty for every other cell.
  std::string aa_of;
};

struct Suite {
  std::string name;
  std::string description;
  std::vector<Cell> cells;
};

// Cells one suite may expand to: beyond this a suite is a typo (every cell is a DDP run of
// minutes), and expanding it would exhaust memory before anything ran.
inline constexpr int kMaxCells = 10000;

// UsageError "<source>:<line>: <what>" for anything the file gets wrong, or more than kMaxCells cells.
Suite parse_suite(const std::string& toml_text, const std::string& source);
Suite load_suite(const std::string& path);

// The keys that may hold a list and so span the matrix.
const std::vector<std::string>& matrix_keys();

}  // namespace ddpbench::suite
