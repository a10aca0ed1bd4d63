// `ddpbench predict`: step time, exposed communication, tokens/s per GPU, scaling efficiency and
// memory per GPU beyond the GPUs at hand, from what one run measured (its step, the profile's
// phases, the gradient buckets) and a latency-bandwidth (alpha-beta) model of the collectives,
// fitted to a collectives run or taken from a stated link figure. Torch-free: it reads documents.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::predict {

// One link: a collective step costs alpha seconds, a byte 1 / bandwidth seconds.
struct Link {
  double alpha_s = 0;
  double bandwidth = 0;  // bytes/s, per GPU and direction
};

// GPUs in nodes of gpus_per_node: `intra` within a node, `inter` between nodes (one NIC per GPU).
// single_domain: every GPU reaches every other over `intra` (one NVLink domain), no inter hop.
struct Fabric {
  Link intra;
  Link inter;
  int gpus_per_node = 8;
  bool single_domain = false;
};

enum class Algorithm { ring, tree };

struct CollectiveTime {
  double seconds = 0;
  Algorithm algorithm = Algorithm::ring;
};

// All-reduce of `bytes` over n GPUs, `per_node` of them in each node (default: packed):
//   ring: 2(n-1)/n x bytes / B + 2 x (latency of n-1 hops)
//   tree: 2 x bytes / B         + 2 x (latency of log2 n levels)  (pipelined up and down a binary tree)
// and the faster of the two, as NCCL picks per size. B is the slowest link on the path.
CollectiveTime all_reduce_time(const Fabric& f, double bytes, int n, int per_node = 0);
// Ring reduce-scatter or all-gather of a total array of `bytes`: (n-1)/n x bytes / B + (n-1) hops.
double scatter_gather_time(const Fabric& f, double bytes, int n, int per_node = 0);

struct FitPoint {
  double bytes = 0;
  double measured_s = 0;
  double model_s = 0;
  double rel_error() const { return measured_s > 0 ? (model_s - measured_s) / measured_s : 0; }
};

// The model on measured points it was not fitted to (reduce-scatter, all-gather: what ZeRO-1 runs).
struct HeldOut {
  std::string series;  // reduce_scatter/bf16/out-of-place
  std::vector<FitPoint> points;
  double max_abs_rel_error = 0;
  double median_abs_rel_error = 0;
};

struct Fit {
  Link link;
  int ranks = 0;
  std::string source;  // where the points came from
  std::vector<FitPoint> points;
  double max_abs_rel_error = 0;
  double median_abs_rel_error = 0;
  std::vector<HeldOut> held_out;
};

// alpha and B from measured all-reduce times at `ranks` ranks in one node: a weighted least-squares
// line t = a + b x bytes minimising relative error (so that 8 B and 4 GiB count alike), read as
// b = 2(n-1)/n / B (large sizes run the ring) and a = the smaller of the ring's and the tree's hop
// count x alpha (small sizes run the faster); the error is that of the full model on each point.
// UsageError when fewer than 2 points or ranks < 2 (one rank moves nothing).
Fit fit_all_reduce(const std::vector<std::pair<double, double>>& bytes_seconds, int ranks, int gpus_per_node);

// Reads the measured all-reduce rows of a collectives run folder (run.json + cells/): the dtype
// given if present, else any; the in-place series (what DDP runs). The run's reduce-scatter and
// all-gather series of that dtype become held-out checks of the fitted model.
Fit fit_collectives_run(const std::string& run_dir, const std::string& dtype, int gpus_per_node);

// What the predictions start from, read from a result document.
struct Measured {
  std::string cell;
  int ranks = 1;
  int grad_accum = 1;
  int micro_batch = 1;
  int seq_len = 0;
  int hidden = 0, layers = 0, heads = 0, kv_heads = 0;
  int element_bytes = 2;           // weights and activations: bf16 on GPUs, fp32 on the CPU
  double step_s = 0;               // median step
  double tokens_per_gpu_step = 0;  // non-padding tokens per GPU per optimizer step
  bool has_profile = false;
  double exposed_comm_s = 0;       // measured (profile), at `ranks`
  double backward_s = 0;           // backward of all micro-steps (profile phase, else assumed)
  double optimizer_s = 0;          // optimizer step (profile phase, else 0)
  int buckets = 0;
  double grad_bytes = 0;           // all buckets: the gradients DDP all-reduces
  double weight_bytes = 0;
  double optimizer_bytes = 0;
  double peak_bytes = 0;
  std::vector<double> step_times;  // the measured steps (warm-up left out), seconds
  std::vector<std::string> assumptions;
};
Measured measured_from(const nlohmann::json& doc, const std::string& where);

struct Memory {
  double weights = 0, grads = 0, optimizer = 0, activations = 0;
  double total() const { return weights + grads + optimizer + activations; }
};

struct Prediction {
  std::string strategy;  // ddp, zero1, tp, pp
  int gpus = 1;
  int dp = 1, tp = 1, pp = 1;
  double step_s = 0;
  double exposed_comm_s = 0;
  double straggler_s = 0;  // the wait for the slowest GPU of a synchronous step, beyond the measured run's
  double tokens_per_s_per_gpu = 0;
  double efficiency = 0;  // tokens/s per GPU against one GPU running the whole step alone
  Memory memory;
};

// E[max of q independent draws] from the empirical distribution of `samples`, q >= 1 real:
// sum over the sorted x_(i) of x_(i) ((i/m)^q - ((i-1)/m)^q); q = 1 gives their mean. A synchronous
// step ends when its slowest rank does: the step of n ranks is the maximum of n ranks' own times.
double expected_max(std::vector<double> samples, double q);

// Exposed time of a bucket schedule: n buckets become ready evenly through a window of `window`
// seconds (bucket i at window x (i+1)/n), each collective starts when its bucket is ready and the
// previous collective is done; what runs past the window is exposed.
double exposed_after_window(const std::vector<double>& comm_seconds, double window);

struct Model {
  Measured run;
  Fabric fabric;
  double compute_s = 0;  // the step without exposed communication: what every strategy divides
  std::vector<std::string> assumptions;
};
// The step without exposed communication: step - measured exposed communication (profile), else
// step - the model's exposed communication at the measured rank count.
Model make_model(const Measured& run, const Fabric& fabric);

std::vector<Prediction> predict(const Model& m, const std::vector<int>& gpus);

// "8,16,...,1024": a list, "..." doubling from the number before it to the one after.
std::vector<int> parse_gpu_counts(const std::string& text);

nlohmann::json to_json(const Fit& f);
nlohmann::json to_json(const Prediction& p);

}  // namespace ddpbench::predict
