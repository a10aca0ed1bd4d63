// The collectives benchmark's torch-free half: one small table entry per collective, as nccl-tests
// has (its buffer sizes, the data each rank sends and the data each rank must receive, its bus
// bandwidth factor), the sizes swept, and the conversion of the benchmark program's Google
// Benchmark JSON into ddpbench's run format. ddp/collective_bench.h runs the entries through the
// trainer's own c10d layer inside bench/collectives; the CLI (`ddpbench bench collectives`) and the
// tests use this half only.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::collectives {

// The data of the check. Element i of rank r's send buffer is value(r, i): periodic in i with
// period `modulus`, shifted by rank_stride x r, so that ranks differ and a block landing in the wrong
// place is seen. window > 0: 1 where the residue is below window, else 0 (sums over up to 256 ranks
// stay exact in bf16); window == 0: the residue itself (0..modulus-1, exact in bf16 up to 256).
struct Pattern {
  int modulus = 257;
  int rank_stride = 1;
  int window = 0;
  double value(int rank, std::int64_t i) const;
};

// A stretch [offset, offset + count) of a buffer whose element offset + t is period[t % period.size()].
struct Stretch {
  std::int64_t offset = 0;
  std::int64_t count = 0;
  std::vector<double> period;
  double at(std::int64_t t) const { return period[static_cast<std::size_t>(t % static_cast<std::int64_t>(period.size()))]; }
};

// Buffer sizes in elements for one size point on one rank. In place, the send buffer is a view into
// the receive buffer (all-gather) or the receive buffer a view into the send buffer (reduce-scatter),
// at in_place_offset elements; for all-reduce and broadcast the two are the same buffer.
struct Layout {
  std::int64_t count = 0;  // the elements the size stands for (nccl-tests: the total array)
  std::int64_t send = 0;
  std::int64_t recv = 0;
  std::int64_t in_place_offset = 0;
  std::int64_t bytes = 0;  // count x element bytes: the size reported, algbw's numerator
};

struct Collective {
  std::string_view name;  // all_reduce, reduce_scatter, all_gather, broadcast, copy
  // busbw = algbw x bus_factor(ranks), nccl-tests' correction for the number of ranks.
  double (*bus_factor)(int world);
  // Layout of `bytes` (rounded down to whole elements, and for reduce-scatter and all-gather to a
  // multiple of the ranks, as nccl-tests does); count 0: this size cannot be run.
  Layout (*layout)(std::int64_t bytes, int element_bytes, int world, int rank);
  // What rank `rank` must hold in its receive buffer afterwards, given every rank sent
  // send_contents (one stretch, value(rank, t)).
  std::vector<Stretch> (*expected)(const Pattern& p, const Layout& l, int rank, int world);
  Pattern pattern;
  bool in_place;      // c10d offers the in-place form (for all-reduce and broadcast the only one)
  bool out_of_place;  // c10d offers the out-of-place form
};

std::span<const Collective> table();
const Collective& find(std::string_view name);  // UsageError naming the known ones

std::vector<Stretch> send_contents(const Collective& c, const Layout& l, int rank);

struct Bandwidth {
  double algbw = 0;  // bytes / s
  double busbw = 0;
};
Bandwidth bandwidth(const Collective& c, double bytes, double seconds, int world);

// 8 B, 16 B, ... doubling up to max_bytes (inclusive when it is a power of two times min_bytes).
std::vector<std::int64_t> sizes(std::int64_t min_bytes, std::int64_t max_bytes);

int element_bytes(std::string_view dtype);  // bf16 2, fp32 4; UsageError otherwise

// "all_reduce/bf16/in-place/1024": the benchmark names the program registers and the CLI parses.
std::string benchmark_name(std::string_view collective, std::string_view dtype, std::string_view mode, std::int64_t bytes);

// One measured size: the median over repetitions of the mean time of one collective.
struct Row {
  std::int64_t bytes = 0;
  std::int64_t count = 0;
  int repetitions = 0;
  double time_s = 0;      // median over repetitions
  double time_min_s = 0;  // fastest and slowest repetition
  double time_max_s = 0;
  double algbw = 0;       // bytes / time_s, bytes/s
  double busbw = 0;
  std::int64_t wrong = 0;  // elements that failed the check, summed over ranks; largest over repetitions
};

struct Series {
  std::string collective, dtype, mode;
  std::vector<Row> rows;  // by size
};

// Google Benchmark's JSON file: its writer prints non-finite statistics as bare nan and inf (the
// coefficient of variation of a counter that is always 0), which JSON has no words for; they are
// read as null. RunError naming `where` when it is not JSON otherwise.
nlohmann::json parse_gbench_json(const std::string& text, const std::string& where);

// An entry's real_time in seconds, whatever its time_unit (the kernel benchmarks read it too).
double gbench_seconds(const nlohmann::json& entry);

// Google Benchmark's JSON output (rank 0's) grouped into one series per collective/dtype/mode.
// Uses the iteration entries (aggregates are recomputed here, so one repetition works too).
std::vector<Series> series_from_gbench(const nlohmann::json& gbench, int world);

struct RunInfo {
  std::string run_id;
  int nproc = 1;
  int nnodes = 1;
  std::string device;   // cpu | cuda
  std::string backend;  // gloo | nccl
  std::int64_t max_bytes = 0;
  int repetitions = 0;
  int batch = 0;        // collectives per timed interval
  nlohmann::json fingerprint;
  std::string hardware_key;
};

// A result document in the run format: schema_version, kind "collectives", cell, cell_id, repeat,
// config, fingerprint, status, rows, and a summary of numbers the gate and reports can compare
// (largest busbw, busbw at the largest size, average busbw over sizes as nccl-tests prints it,
// smallest-size time, wrong elements). `steps` is empty and `ranks` names each rank's device.
nlohmann::json series_document(const Series& s, const RunInfo& info);
std::string series_file_name(const Series& s);  // all_reduce-bf16-in-place.json

}  // namespace ddpbench::collectives
