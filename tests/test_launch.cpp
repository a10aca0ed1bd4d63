// The launcher against real processes: /bin/sh scripts stand in for trainers, so these tests need no
// torch and no GPU, and exercise the fork/exec, supervision and teardown paths for real.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "launch/launch.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ddpbench::launch::Outcome;
using ddpbench::launch::Spec;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ddpbench-launch-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t read_pid(const std::string& path) {
  std::string text = slurp(path);
  return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
}

Spec sh_spec(const TempDir& dir, const std::string& script, int nproc = 2) {
  Spec s;
  s.topology.nproc_per_node = nproc;
  s.argv = {"/bin/sh", "-c", script};
  s.extra_env["OUTDIR"] = dir.path;
  s.log_dir = dir / "logs";
  s.echo_rank0 = false;
  s.timeout = 20s;
  s.kill_grace = 500ms;
  return s;
}

// Killed orphans are reaped by whatever adopted them; a zombie left by an adopter that does not
// reap (a container's PID 1) is dead all the same, so it counts as gone.
bool is_zombie(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

bool gone(pid_t pid) {
  auto until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < until) {
    if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
    if (is_zombie(pid)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

}  // namespace

TEST(RankEnvironment, TwoNodesSecondNode) {
  Spec s;
  s.topology.nproc_per_node = 2;
  s.topology.nnodes = 2;
  s.topology.node_rank = 1;
  s.topology.master_addr = "gpu03";
  s.threads_per_rank = 3;
  auto env = ddpbench::launch::rank_environment(s, 1, 29500);
  EXPECT_EQ(env.at("RANK"), "3");
  EXPECT_EQ(env.at("LOCAL_RANK"), "1");
  EXPECT_EQ(env.at("WORLD_SIZE"), "4");
  EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "2");
  EXPECT_EQ(env.at("GROUP_RANK"), "1");
  EXPECT_EQ(env.at("NODE_RANK"), "1");
  EXPECT_EQ(env.at("MASTER_ADDR"), "gpu03");
  EXPECT_EQ(env.at("MASTER_PORT"), "29500");
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "3");
  auto env0 = ddpbench::launch::rank_environment(s, 0, 29500);
  EXPECT_EQ(env0.at("RANK"), "2");
}

TEST(RankEnvironment, SetsEveryRendezvousVariable) {
  Spec s;
  s.topology.nproc_per_node = 2;
  std::set<std::string> set_names;
  for (const auto& [name, value] : ddpbench::launch::rank_environment(s, 0, 29500)) set_names.insert(name);
  for (const auto& name : ddpbench::launch::rendezvous_variables()) EXPECT_EQ(set_names.count(name), 1u) << name;
  // and nothing else but the threads (extra_env is empty here)
  EXPECT_EQ(set_names.size(), ddpbench::launch::rendezvous_variables().size() + 1);
  EXPECT_EQ(set_names.count("OMP_NUM_THREADS"), 1u);
}

TEST(RankEnvironment, ExtraEnvWinsAndThreadsDefault) {
  Spec s;
  s.topology.nproc_per_node = 1024;  // more ranks than cores: still at least one thread
  s.extra_env = {{"MASTER_ADDR", "override"}, {"FOO", "bar"}};
  auto env = ddpbench::launch::rank_environment(s, 0, 1234);
  EXPECT_EQ(env.at("MASTER_ADDR"), "override");
  EXPECT_EQ(env.at("FOO"), "bar");
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "1");
  s.topology.nproc_per_node = 1;
  int threads = std::stoi(ddpbench::launch::rank_environment(s, 0, 1234).at("OMP_NUM_THREADS"));
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST(Launch, RanksSeeTheirEnvironment) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(echo "$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_PORT" > "$OUTDIR/r$RANK")");
  Outcome o = ddpbench::launch::run(s);
  ASSERT_TRUE(o.ok) << o.reason;
  EXPECT_FALSE(o.timed_out);
  EXPECT_FALSE(o.failed_rank.has_value());
  ASSERT_EQ(o.ranks.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(o.ranks[r].local_rank, r);
    EXPECT_EQ(o.ranks[r].exit_code, 0);
    EXPECT_FALSE(o.ranks[r].killed_by_launcher);
  }
  std::istringstream r0(slurp(dir / "r0")), r1(slurp(dir / "r1"));
  int rank, local, world, port0, port1;
  ASSERT_TRUE(r0 >> rank >> local >> world >> port0);
  EXPECT_EQ(rank, 0);
  EXPECT_EQ(local, 0);
  EXPECT_EQ(world, 2);
  ASSERT_TRUE(r1 >> rank >> local >> world >> port1);
  EXPECT_EQ(rank, 1);
  EXPECT_EQ(local, 1);
  EXPECT_EQ(world, 2);
  EXPECT_GT(port0, 0);  // port 0 in the spec: one free port picked for the whole run
  EXPECT_EQ(port0, port1);
}

TEST(CpuShare, ContiguousEqualSharesWithTheRemainderFirst) {
  using ddpbench::launch::cpu_share;
  const std::vector<int> cpus = {0, 1, 2, 3, 4, 5, 8, 9, 10, 11};  // a mask with a hole
  EXPECT_EQ(cpu_share(cpus, 2, 0), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(cpu_share(cpus, 2, 1), (std::vector<int>{5, 8, 9, 10, 11}));
  EXPECT_EQ(cpu_share(cpus, 4, 0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(cpu_share(cpus, 4, 1), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(cpu_share(cpus, 4, 2), (std::vector<int>{8, 9}));
  EXPECT_EQ(cpu_share(cpus, 4, 3), (std::vector<int>{10, 11}));
  EXPECT_EQ(cpu_share({6, 7}, 4, 3), (std::vector<int>{7}));  // fewer CPUs than ranks: shared
  EXPECT_TRUE(cpu_share({}, 2, 0).empty());
  EXPECT_TRUE(cpu_share(cpus, 2, 2).empty());
}

TEST(Launch, BoundRanksRunOnTheirOwnShareOfTheCpus) {
  const auto cpus = ddpbench::launch::usable_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 CPUs in the affinity mask, this process has " << cpus.size();
  TempDir dir;
  // The kernel's own account of each rank's affinity, read by the rank itself.
  Spec s = sh_spec(dir, R"(grep Cpus_allowed_list /proc/self/status > "$OUTDIR/r$RANK")");
  s.bind_cpus = true;
  Outcome o = ddpbench::launch::run(s);
  ASSERT_TRUE(o.ok) << o.reason;
  // "Cpus_allowed_list:\t0-4,8" -> {0, 1, 2, 3, 4, 8}
  auto allowed = [&](int rank) {
    std::string text = slurp(dir / ("r" + std::to_string(rank)));
    text = text.substr(text.find('\t') + 1);
    std::vector<int> list;
    std::istringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
      const auto dash = item.find('-');
      const int lo = std::stoi(item), hi = dash == std::string::npos ? lo : std::stoi(item.substr(dash + 1));
      for (int c = lo; c <= hi; ++c) list.push_back(c);
    }
    return list;
  };
  for (int r = 0; r < 2; ++r) EXPECT_EQ(allowed(r), ddpbench::launch::cpu_share(cpus, 2, r)) << "rank " << r;
  // Unbound, a rank keeps the launcher's whole mask.
  s.bind_cpus = false;
  ASSERT_TRUE(ddpbench::launch::run(s).ok);
  EXPECT_EQ(allowed(1), cpus);
}

TEST(Launch, SearchesPathAndKeepsGivenPort) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(echo "$MASTER_PORT $OMP_NUM_THREADS" > "$OUTDIR/r$RANK")", 1);
  s.argv[0] = "sh";
  s.topology.master_port = 29511;
  s.threads_per_rank = 2;
  Outcome o = ddpbench::launch::run(s);
  ASSERT_TRUE(o.ok) << o.reason;
  EXPECT_EQ(slurp(dir / "r0"), "29511 2\n");
}

TEST(Launch, MultiNodeNeedsExplicitPort) {
  TempDir dir;
  Spec s = sh_spec(dir, "true");
  s.topology.nnodes = 2;
  EXPECT_THROW(ddpbench::launch::run(s), ddpbench::UsageError);
  try {
    ddpbench::launch::run(s);
  } catch (const ddpbench::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--master-port"), std::string::npos) << e.what();
  }
}

TEST(Launch, FailingRankTearsDownTheOthers) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(if [ "$RANK" = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 30)");
  auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(o.ok);
  EXPECT_FALSE(o.timed_out);
  ASSERT_TRUE(o.failed_rank.has_value());
  EXPECT_EQ(*o.failed_rank, 1);
  EXPECT_NE(o.reason.find("rank 1"), std::string::npos) << o.reason;
  EXPECT_NE(o.reason.find("status 3"), std::string::npos) << o.reason;
  ASSERT_EQ(o.ranks.size(), 2u);
  EXPECT_TRUE(o.ranks[0].killed_by_launcher);
  EXPECT_EQ(o.ranks[0].signal, SIGTERM);
  EXPECT_FALSE(o.ranks[1].killed_by_launcher);
  EXPECT_EQ(o.ranks[1].exit_code, 3);
  EXPECT_LT(took, 5s);
}

TEST(Launch, RankKilledBySignalIsNamed) {
  TempDir dir;
  Spec s = sh_spec(dir, "kill -9 $$", 1);
  Outcome o = ddpbench::launch::run(s);
  EXPECT_FALSE(o.ok);
  ASSERT_EQ(o.ranks.size(), 1u);
  EXPECT_EQ(o.ranks[0].signal, 9);
  EXPECT_EQ(o.reason, "rank 0 (node 0, local 0) was killed by signal 9 (Killed)");
}

TEST(Launch, TimeoutKillsRanksAndTheirChildren) {
  TempDir dir;
  // Rank 0 ignores SIGTERM (and so does its child), so only the SIGKILL after the grace ends it.
  Spec s = sh_spec(dir, R"(echo $$ > "$OUTDIR/pid$RANK"
if [ "$RANK" = 0 ]; then trap '' TERM; fi
sleep 1000 & echo $! > "$OUTDIR/child$RANK"; wait)");
  s.timeout = 1s;
  auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(o.ok);
  EXPECT_TRUE(o.timed_out);
  EXPECT_NE(o.reason.find("timed out after 1.0 s"), std::string::npos) << o.reason;
  EXPECT_NE(o.reason.find("ranks still running: 0, 1"), std::string::npos) << o.reason;
  EXPECT_TRUE(o.ranks[0].killed_by_launcher);
  EXPECT_TRUE(o.ranks[1].killed_by_launcher);
  EXPECT_EQ(o.ranks[0].signal, SIGKILL);
  EXPECT_EQ(o.ranks[1].signal, SIGTERM);
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 4s);
  for (int r = 0; r < 2; ++r) {
    pid_t rank_pid = read_pid(dir / ("pid" + std::to_string(r)));
    pid_t child_pid = read_pid(dir / ("child" + std::to_string(r)));
    ASSERT_GT(rank_pid, 0);
    ASSERT_GT(child_pid, 0);
    EXPECT_TRUE(gone(rank_pid)) << "rank " << r << " pid " << rank_pid;
    EXPECT_TRUE(gone(child_pid)) << "child of rank " << r << " pid " << child_pid;
  }
}

TEST(Launch, ChildOfAFinishedRankIsNotLeftBehind) {
  TempDir dir;
  // The rank succeeds at once but leaves a child that holds its output pipe.
  Spec s = sh_spec(dir, R"(sleep 1000 & echo $! > "$OUTDIR/child$RANK"; exit 0)", 1);
  auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  EXPECT_TRUE(o.ok) << o.reason;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  pid_t child_pid = read_pid(dir / "child0");
  ASSERT_GT(child_pid, 0);
  EXPECT_TRUE(gone(child_pid));
}

TEST(Launch, SilentRankTripsHeartbeat) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(if [ "$RANK" = 0 ]; then
  i=0; while [ $i -lt 100 ]; do echo tick; sleep 0.05; i=$((i+1)); done
else
  echo start; exec sleep 30
fi)");
  s.heartbeat_timeout = 600ms;
  auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(o.ok);
  ASSERT_TRUE(o.failed_rank.has_value());
  EXPECT_EQ(*o.failed_rank, 1) << o.reason;  // rank 0 kept talking, so it is not the hung one
  EXPECT_NE(o.reason.find("rank 1 (node 0, local 1)"), std::string::npos) << o.reason;
  EXPECT_NE(o.reason.find("heartbeat"), std::string::npos) << o.reason;
  EXPECT_EQ(o.failed_log_tail, "start");
  EXPECT_GE(took, 600ms);
  EXPECT_LT(took, 4s);
}

TEST(Launch, StoppedRankIsNamedWithItsLastPhaseWithinTheStallTimeout) {
  TempDir dir;
  // Both ranks beat (as HeartbeatWriter does) and print nothing; rank 1 stops its whole process
  // group after half a second, as SIGSTOP from outside would. The run deadline is far away.
  Spec s = sh_spec(dir, R"(beat() { while :; do echo "step $1" > "$DDPBENCH_HEARTBEAT_FILE"; sleep 0.1; done; }
if [ "$RANK" = 1 ]; then beat 3 & sleep 0.5; kill -STOP 0; fi
beat 7 & sleep 30)");
  s.stall_timeout = 1s;
  const auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(o.ok);
  EXPECT_FALSE(o.timed_out);
  ASSERT_TRUE(o.failed_rank.has_value()) << o.reason;
  EXPECT_EQ(*o.failed_rank, 1) << o.reason;
  EXPECT_NE(o.reason.find("rank 1 (node 0, local 1) stalled in step 3: no heartbeat for"), std::string::npos) << o.reason;
  EXPECT_EQ(o.failed_phase, "step 3");
  EXPECT_GE(took, 1500ms);
  EXPECT_LT(took, 5s);  // within seconds of the stall, not at the 20 s deadline
}

TEST(Launch, HeartbeatWriterBeatsWithTheCurrentPhase) {
  TempDir dir;
  const std::string path = dir / "beat";
  {
    ddpbench::launch::HeartbeatWriter writer(path, 50ms);
    writer.phase("step 4");
    std::this_thread::sleep_for(300ms);
    const auto first = fs::last_write_time(path);
    EXPECT_EQ(slurp(path), "step 4\n");
    std::this_thread::sleep_for(200ms);
    EXPECT_NE(fs::last_write_time(path), first);  // still beating
  }
  const auto stopped = fs::last_write_time(path);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(fs::last_write_time(path), stopped);  // the destructor ended the thread
}

TEST(Launch, LogsHoldAllOutputOfEachRank) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(echo "out $RANK"; echo "err $RANK" >&2; if [ "$RANK" = 1 ]; then seq 1 50000; fi)");
  s.log_dir = dir / "nested/logs/dir";  // created like mkdir -p
  Outcome o = ddpbench::launch::run(s);
  ASSERT_TRUE(o.ok) << o.reason;
  ASSERT_EQ(o.ranks[0].log_path, dir / "nested/logs/dir/rank0.log");
  std::string log0 = slurp(o.ranks[0].log_path);
  std::string log1 = slurp(o.ranks[1].log_path);
  EXPECT_NE(log0.find("out 0\n"), std::string::npos) << log0;
  EXPECT_NE(log0.find("err 0\n"), std::string::npos) << log0;
  EXPECT_EQ(log0.find("out 1"), std::string::npos) << log0;
  EXPECT_NE(log1.find("out 1\nerr 1\n1\n2\n"), std::string::npos);
  ASSERT_GE(log1.size(), 6u);
  EXPECT_EQ(log1.substr(log1.size() - 6), "50000\n");  // drained to the end after the exit
}

TEST(Launch, LogFilesNamedByGlobalRank) {
  TempDir dir;
  Spec s = sh_spec(dir, "echo hello $RANK");
  s.topology.nnodes = 2;
  s.topology.node_rank = 1;
  s.topology.master_port = 29512;
  Outcome o = ddpbench::launch::run(s);
  ASSERT_TRUE(o.ok) << o.reason;
  EXPECT_EQ(o.ranks[1].global_rank, 3);
  EXPECT_EQ(slurp(dir / "logs/rank2.log"), "hello 2\n");
  EXPECT_EQ(slurp(dir / "logs/rank3.log"), "hello 3\n");
}

TEST(Launch, FailedLogTailIsTheLastTwentyLines) {
  TempDir dir;
  Spec s = sh_spec(dir, "seq 1 100; exit 1", 1);
  Outcome o = ddpbench::launch::run(s);
  EXPECT_FALSE(o.ok);
  ASSERT_EQ(o.failed_rank, 0);
  std::string expected;
  for (int i = 81; i <= 100; ++i) expected += std::to_string(i) + (i < 100 ? "\n" : "");
  EXPECT_EQ(o.failed_log_tail, expected);
}

TEST(Launch, EchoesOnlyLocalRankZero) {
  TempDir dir;
  Spec s = sh_spec(dir, R"(echo "said-by-$RANK")");
  s.echo_rank0 = true;
  testing::internal::CaptureStdout();
  Outcome o = ddpbench::launch::run(s);
  std::string out = testing::internal::GetCapturedStdout();
  ASSERT_TRUE(o.ok) << o.reason;
  EXPECT_NE(out.find("said-by-0"), std::string::npos) << out;
  EXPECT_EQ(out.find("said-by-1"), std::string::npos) << out;
}

TEST(Launch, RanksStartWithDefaultSignals) {
  TempDir dir;
  Spec s = sh_spec(dir, "", 1);
  s.argv = {"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"};
  // As under nohup: an ignored disposition would otherwise survive exec into the rank.
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGHUP, &ign, &old), 0);
  Outcome o = ddpbench::launch::run(s);
  ::sigaction(SIGHUP, &old, nullptr);
  ASSERT_TRUE(o.ok) << o.reason;
  std::string log = slurp(o.ranks[0].log_path);
  EXPECT_NE(log.find("SigBlk:\t0000000000000000"), std::string::npos) << log;
  EXPECT_NE(log.find("SigIgn:\t0000000000000000"), std::string::npos) << log;
}

TEST(Launch, EchoToAClosedPipeDoesNotKillTheLauncher) {
  TempDir dir;
  Spec s = sh_spec(dir, "seq 1 1000", 1);
  s.echo_rank0 = true;
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[0]);
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  ::dup2(p[1], STDOUT_FILENO);
  ::close(p[1]);
  Outcome o = ddpbench::launch::run(s);
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE));
  ASSERT_TRUE(o.ok) << o.reason;
  std::string log = slurp(o.ranks[0].log_path);
  ASSERT_GE(log.size(), 5u);
  EXPECT_EQ(log.substr(log.size() - 5), "1000\n");  // the log is complete though the echo stopped
}

TEST(Launch, MissingExecutableFailsWith127) {
  TempDir dir;
  Spec s = sh_spec(dir, "", 2);
  s.argv = {"ddpbench-no-such-program-xyz", "--flag"};
  Outcome o = ddpbench::launch::run(s);
  EXPECT_FALSE(o.ok);
  ASSERT_TRUE(o.failed_rank.has_value());
  const auto& failed = o.ranks[static_cast<std::size_t>(*o.failed_rank)];
  EXPECT_EQ(failed.exit_code, 127);
  EXPECT_NE(o.reason.find("127"), std::string::npos) << o.reason;
  EXPECT_NE(o.reason.find("execvp(ddpbench-no-such-program-xyz): No such file or directory"), std::string::npos)
      << o.reason;
  std::string log = slurp(failed.log_path);
  EXPECT_NE(log.find("cannot start rank " + std::to_string(*o.failed_rank) +
                     ": execvp(ddpbench-no-such-program-xyz): No such file or directory"),
            std::string::npos)
      << log;
}

// Sends `sig` to the thread in run() after 300 ms; every rank must be ended and the reason say why.
static void expect_signal_tears_down(int sig) {
  TempDir dir;
  Spec s = sh_spec(dir, "exec sleep 30");
  // Blocked here too, so that a signal arriving outside run() cannot kill the test binary.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, sig);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  pthread_t self = ::pthread_self();
  std::thread poker([self, sig] {
    std::this_thread::sleep_for(300ms);
    ::pthread_kill(self, sig);
  });
  auto t0 = std::chrono::steady_clock::now();
  Outcome o = ddpbench::launch::run(s);
  auto took = std::chrono::steady_clock::now() - t0;
  poker.join();
  sigset_t pending;
  sigpending(&pending);
  bool left_pending = sigismember(&pending, sig);
  if (left_pending) {
    timespec zero{};
    sigtimedwait(&block, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_FALSE(left_pending);  // run() consumed it
  EXPECT_FALSE(o.ok);
  EXPECT_NE(o.reason.find("interrupted by signal " + std::to_string(sig)), std::string::npos) << o.reason;
  EXPECT_EQ(o.interrupted_by, sig);  // so that a suite stops too
  EXPECT_TRUE(o.ranks[0].killed_by_launcher);
  EXPECT_TRUE(o.ranks[1].killed_by_launcher);
  EXPECT_LT(took, 4s);
}

TEST(Launch, InterruptTearsDownAndSaysSo) { expect_signal_tears_down(SIGINT); }

// A closed terminal or ssh session must not kill the launcher before the result is written.
TEST(Launch, HangupIsHandledLikeAnInterrupt) { expect_signal_tears_down(SIGHUP); }

// Live processes (not zombies) whose command line is exactly `argv`.
static std::vector<pid_t> processes_running(const std::vector<std::string>& argv) {
  std::string want;
  for (const auto& a : argv) want += a + '\0';
  std::vector<pid_t> found;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (slurp("/proc/" + name + "/cmdline") == want && !is_zombie(pid)) found.push_back(pid);
  }
  return found;
}

TEST(Launch, DescendantsThatCallSetsidAreEnded) {
  TempDir dir;
  // A marker no other process has: the sleep's argument.
  const std::string seconds = std::to_string(900000 + ::getpid() % 90000);
  // Both ranks start a sleep in a session of its own, out of reach of the rank's process group;
  // rank 1 then fails (the teardown path for rank 0), rank 0 waits for its sleep.
  Spec s = sh_spec(dir, "setsid sleep " + seconds + " & echo $! > \"$OUTDIR/child$RANK\"\n"
                   "sleep 0.3; if [ \"$RANK\" = 1 ]; then exit 3; fi; wait");
  Outcome o = ddpbench::launch::run(s);
  EXPECT_FALSE(o.ok);
  ASSERT_TRUE(o.failed_rank.has_value());
  EXPECT_EQ(*o.failed_rank, 1) << o.reason;
  for (int r = 0; r < 2; ++r) {
    const pid_t child = read_pid(dir / ("child" + std::to_string(r)));
    ASSERT_GT(child, 0);
    EXPECT_TRUE(gone(child)) << "setsid child of rank " << r << ", pid " << child;
  }
  EXPECT_EQ(processes_running({"sleep", seconds}).size(), 0u);

  // A rank that exits 0 at once, its setsid child still running: the run is ok and nothing is left.
  Spec quick = sh_spec(dir, "setsid sleep " + seconds + " & exit 0", 1);
  const auto t0 = std::chrono::steady_clock::now();
  Outcome q = ddpbench::launch::run(quick);
  EXPECT_TRUE(q.ok) << q.reason;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_EQ(processes_running({"sleep", seconds}).size(), 0u);
}

TEST(Slurm, FirstHost) {
  using ddpbench::launch::first_slurm_host;
  EXPECT_EQ(first_slurm_host("gpu[03-05,09],cpu1"), "gpu03");
  EXPECT_EQ(first_slurm_host("node7"), "node7");
  EXPECT_EQ(first_slurm_host("a-[1-2]"), "a-1");
  EXPECT_EQ(first_slurm_host("node7,node8"), "node7");
  EXPECT_EQ(first_slurm_host("rack[2,4]-n[01-04]"), "rack2-n01");
  EXPECT_EQ(first_slurm_host(""), "");
  EXPECT_THROW(first_slurm_host("gpu[03-05"), ddpbench::UsageError);
}

TEST(Slurm, TopologyFromEnvironment) {
  ddpbench::launch::Topology base;
  base.nproc_per_node = 8;
  base.master_port = 29500;
  auto t = ddpbench::launch::topology_from_slurm(
      {{"SLURM_NNODES", "4"}, {"SLURM_NODEID", "2"}, {"SLURM_JOB_NODELIST", "gpu[03-05,09]"}}, base);
  EXPECT_EQ(t.nnodes, 4);
  EXPECT_EQ(t.node_rank, 2);
  EXPECT_EQ(t.master_addr, "gpu03");
  EXPECT_EQ(t.nproc_per_node, 8);  // untouched
  EXPECT_EQ(t.master_port, 29500);
  EXPECT_EQ(t.global_rank(1), 17);

  auto unset = ddpbench::launch::topology_from_slurm({}, base);
  EXPECT_EQ(unset.nnodes, 1);
  EXPECT_EQ(unset.master_addr, "127.0.0.1");
  auto fallback = ddpbench::launch::topology_from_slurm({{"SLURM_NODELIST", "n[1-2]"}}, base);
  EXPECT_EQ(fallback.master_addr, "n1");
  EXPECT_THROW(ddpbench::launch::topology_from_slurm({{"SLURM_NNODES", "four"}}, base), ddpbench::UsageError);
}

TEST(Port, PickedPortIsBindable) {
  int port = ddpbench::launch::pick_free_port();
  ASSERT_GT(port, 0);
  ASSERT_LT(port, 65536);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  ::close(fd);
}
