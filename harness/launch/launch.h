// The launcher: one process per rank with a torchrun-compatible environment, supervised until all
// ranks end, one of them fails, or the deadline passes. Knows nothing of what the ranks run, so the
// built-in trainer, the Python reference trainer and test scripts all go through the same path.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ddpbench::launch {

// Where this node sits in the world. nnodes x nproc_per_node ranks in all.
struct Topology {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: pick a free port (single node only)

  int world_size() const { return nproc_per_node * nnodes; }
  int global_rank(int local_rank) const { return node_rank * nproc_per_node + local_rank; }
};

// Fills nnodes, node_rank and master_addr from Slurm's variables (SLURM_NNODES, SLURM_NODEID,
// SLURM_JOB_NODELIST or SLURM_NODELIST, first host of a list such as "gpu[03-05,09],cpu1"), where
// they are set; fields given explicitly by the user are applied afterwards by the caller.
Topology topology_from_slurm(const std::map<std::string, std::string>& env, Topology base);
// First host name of a Slurm node list: "gpu[03-05,09],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);
// A TCP port on the loopback interface that nothing listens on now.
int pick_free_port();

struct Spec {
  Topology topology;
  std::vector<std::string> argv;                  // the command every rank runs
  std::map<std::string, std::string> extra_env;   // added to every rank's environment
  std::string log_dir;                            // rank<k>.log per global rank k is written here
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  // whole run
  std::chrono::milliseconds heartbeat_timeout{0};  // 0: off; else a rank silent this long is hung
  // A rank that has written its heartbeat file (kHeartbeatFileEnv) and then stops updating it this
  // long (a stopped or frozen process) is named with its last phase; 0: off. Ranks that never beat
  // (arbitrary commands) are not watched this way.
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};  // SIGTERM, then SIGKILL after this
  bool echo_rank0 = true;  // copy local rank 0's output to our stdout as it comes
  int threads_per_rank = 0;  // OMP_NUM_THREADS; 0: cores / nproc_per_node, at least 1
  // Each local rank on its own share of the launcher's CPUs (cpu_share), so that one rank's host
  // threads cannot slow another's: the exclusive binding torchrun's --numa-binding offers.
  bool bind_cpus = false;
};

// The CPUs that local rank `local_rank` of `nproc` gets out of `cpus` (sorted): contiguous, equal
// shares, the first ranks one more where they do not divide; with fewer CPUs than ranks, one each,
// shared round-robin. Empty when cpus is.
std::vector<int> cpu_share(const std::vector<int>& cpus, int nproc, int local_rank);

// The CPUs this process may run on (its affinity mask), sorted.
std::vector<int> usable_cpus();

struct RankExit {
  int global_rank = 0;
  int local_rank = 0;
  int exit_code = -1;  // valid when signal == 0
  int signal = 0;      // the signal that ended it, 0 if it exited
  bool killed_by_launcher = false;
  std::string log_path;
};

struct Outcome {
  bool ok = false;
  bool timed_out = false;
  // The signal (SIGINT, SIGTERM, SIGHUP) that stopped the run, 0 if none: the caller stops too (a
  // suite does not go on to its next cell after Ctrl-C or Slurm's scancel).
  int interrupted_by = 0;
  std::optional<int> failed_rank;  // the first rank to fail, by time
  std::string reason;              // one line: "rank 1 (node 0, local 1) exited with status 3"
  std::string failed_log_tail;     // the last lines of that rank's log
  std::string failed_phase;        // that rank's last phase from its heartbeat file; empty if it never beat
  std::vector<RankExit> ranks;     // one per local rank, in local rank order
  double seconds = 0;
};

// Runs the ranks of this node and supervises them: when one exits non-zero or by a signal, the
// others are torn down (SIGTERM to each rank's process group, SIGKILL after kill_grace); at the
// timeout, all are. SIGINT, SIGTERM and SIGHUP to the launcher are forwarded the same way. Returns
// when every rank has been reaped; no process of a rank's process group is left behind, nor any
// descendant that left it (setsid): the launcher is their subreaper while it runs, and ends them.
Outcome run(const Spec& spec);

// The file a rank's HeartbeatWriter updates: set by the launcher for every rank it starts.
inline constexpr const char* kHeartbeatFileEnv = "DDPBENCH_HEARTBEAT_FILE";

// The rank's side of the stall check: a thread that rewrites the heartbeat file with the current
// phase every `every`, so that it goes quiet exactly when the whole process does (SIGSTOP, frozen),
// not when the training thread merely waits in a long step or a collective.
class HeartbeatWriter {
 public:
  HeartbeatWriter(std::string path, std::chrono::milliseconds every);
  ~HeartbeatWriter();
  HeartbeatWriter(const HeartbeatWriter&) = delete;
  HeartbeatWriter& operator=(const HeartbeatWriter&) = delete;
  void phase(const std::string& phase);  // written at the next beat
  // One from kHeartbeatFileEnv, beating every 500 ms; null where the launcher set none.
  static std::unique_ptr<HeartbeatWriter> from_environment();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The variables by which the ranks of a run find each other (RANK ... MASTER_PORT), which
// rank_environment sets for each rank: a run's own environment (train::Config::env) may not move them.
const std::vector<std::string>& rendezvous_variables();

// The environment one rank sees, beyond the launcher's own: RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, GROUP_RANK, NODE_RANK, MASTER_ADDR, MASTER_PORT, OMP_NUM_THREADS, plus extra_env.
std::map<std::string, std::string> rank_environment(const Spec& spec, int local_rank, int master_port);

}  // namespace ddpbench::launch
