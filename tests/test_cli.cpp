// The command line as a user meets it: one clear line and exit 2 for bad input, and real DDP runs
// through the launcher (2 Gloo ranks as separate processes) that leave a result document behind.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_helpers.h"
#include "common/strings.h"
#include "launch/launch.h"
#include "results/cells.h"
#include "profile/activity.h"

namespace {

namespace fs = std::filesystem;
using cli_helpers::lines;
using cli_helpers::rank_process;
using cli_helpers::Result;
using cli_helpers::run;
using cli_helpers::ScopedEnv;
using cli_helpers::start_long_train;

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ddpbench_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  nlohmann::json load(const std::string& rel) { return nlohmann::json::parse(ddpbench::read_file((dir_ / rel).string())); }
  // The folder of the one run under runs/, and its run.json.
  fs::path only_run() { return fs::directory_iterator(dir_ / "runs")->path(); }
  nlohmann::json load_run_index() { return nlohmann::json::parse(ddpbench::read_file((only_run() / "run.json").string())); }
  fs::path dir_;
};

TEST_F(Cli, BadFlagValuesGiveOneClearLineAndExitTwo) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"train --nproc 0", "--nproc"},
      {"train --lengths uniform:9:3", "MIN (9) must not exceed MAX (3)"},
      {"train --preset huge", "unknown preset 'huge'"},
      {"train --micro-batch two", "--micro-batch"},
      {"train --optim-state bf16", "--optim-state: unknown value 'bf16'"},
      {"train --markov-states 0", "--markov-states"},
      {"train --no-such-flag", "--no-such-flag"},
      {"run no/such/suite.toml", "no/such/suite.toml"},
      {"run --repeats 0", "--repeats: must be at least 1"},
      {"frobnicate", "frobnicate"},
      {"train --debug-step-delay-ms -5", "--debug-step-delay-ms"},
      {"gate", "--baseline and --current are both needed"},
      {"gate --baseline no/such/run --current no/such/run", "no/such/run: no such file or folder"},
      {"gate --update a --current b", "excludes --update"},
      {"gate --baseline a --current b --match cell", "--match"},
  };
  for (const auto& [args, expected] : cases) {
    SCOPED_TRACE(args);
    const auto r = run(args, dir_);
    EXPECT_EQ(r.status, 2);
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
  }
}

TEST_F(Cli, HelpExitsZeroForEverySubcommand) {
  for (const char* sub : {"", "train", "run", "doctor", "profile", "analyze", "gate"}) {
    SCOPED_TRACE(sub);
    const auto r = run(std::string(sub) + " --help", dir_);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.output.find("Usage"), std::string::npos);
  }
  EXPECT_NE(run("train --help", dir_).output.find("--grad-accum"), std::string::npos);
}

TEST_F(Cli, TrainTwoGlooRanksWritesAResultDocument) {
  const auto r = run("train --nproc 2 --grad-accum 2 --seq-len 32 --lengths uniform:8:32 --warmup 1 --steps 3 --out out.json", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  // The live log: one line per step, from rank 0 only.
  EXPECT_EQ(lines(r.output.substr(0, r.output.find("done:"))) - 1, 4u) << r.output;
  const auto doc = load("out.json");
  EXPECT_EQ(doc["schema_version"], 1);
  EXPECT_EQ(doc["status"]["state"], "ok");
  EXPECT_EQ(doc["config"]["nproc"], 2);
  ASSERT_EQ(doc["steps"].size(), 4u);
  EXPECT_TRUE(doc["steps"][0]["warmup"].get<bool>());
  ASSERT_EQ(doc["ranks"].size(), 2u);
  EXPECT_EQ(doc["summary"]["measured_steps"], 3);
  EXPECT_GT(doc["summary"]["tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(doc["ranks"][1]["predicted_tokens_per_step"].size(), 4u);
  EXPECT_FALSE(doc["fingerprint"]["cpu_model"].get<std::string>().empty());
  // `train` names its cell by the workload "<preset>-<mode>" and the configuration it ran.
  const std::string workload = doc["config"]["preset"].get<std::string>() + "-" + doc["config"]["mode"].get<std::string>();
  EXPECT_EQ(doc["cell_id"], ddpbench::results::cell_id(workload, doc["config"]));
  EXPECT_EQ(doc["cell_id"].get<std::string>().rfind("tiny-lora/builtin/n2/", 0), 0u) << doc["cell_id"];
  EXPECT_EQ(doc["repeat"], 1);
  // Per-rank logs exist for both ranks.
  std::size_t logs = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "runs"))
    logs += e.path().filename().string().rfind("rank", 0) == 0 && e.path().extension() == ".log";
  EXPECT_EQ(logs, 2u);
}

// Two launchers as two nodes of one rank each (the multi-node path on one machine): node 0 hosts
// the rendezvous store for the cell and gathers rank 1's report into its document, whose per-rank
// figures are then over both ranks; node 1's document holds its own rank and says it is partial.
TEST_F(Cli, TwoLaunchersAsTwoNodesGatherEveryRankOnNodeZero) {
  const int port = ddpbench::launch::pick_free_port();
  const std::string common = "train --nnodes 2 --nproc 1 --master-port " + std::to_string(port) +
                             " --grad-accum 2 --seq-len 32 --lengths uniform:8:32 --warmup 1 --steps 3 --node-rank ";
  Result node[2];
  for (int n : {0, 1}) fs::create_directories(dir_ / ("node" + std::to_string(n)));
  std::thread other([&] { node[1] = run(common + "1 --out out.json", dir_ / "node1"); });
  node[0] = run(common + "0 --out out.json", dir_ / "node0");
  other.join();
  ASSERT_EQ(node[0].status, 0) << node[0].output;
  ASSERT_EQ(node[1].status, 0) << node[1].output;
  const auto doc0 = load("node0/out.json"), doc1 = load("node1/out.json");
  ASSERT_EQ(doc0["ranks"].size(), 2u) << doc0.dump(1);
  EXPECT_EQ(doc0["ranks"][0]["rank"], 0);
  EXPECT_EQ(doc0["ranks"][1]["rank"], 1);
  EXPECT_FALSE(doc0.contains("partial")) << doc0["partial"].dump();
  // The tokens of both ranks, over the two of them.
  double tokens = 0, time = 0;
  for (const auto& st : doc0["steps"])
    if (!st["warmup"].get<bool>()) {
      tokens += st["tokens"].get<double>();
      time += st["step_time_s"].get<double>();
    }
  const auto& s0 = doc0["summary"];
  EXPECT_NEAR(s0["tokens_per_s"].get<double>(), tokens / time, 1e-9 * tokens / time);
  EXPECT_NEAR(s0["tokens_per_s_per_gpu"].get<double>(), tokens / time / 2, 1e-9 * tokens / time);
  // Each step's tokens are both ranks': rank 1's, from node 1's document, are a part of them.
  ASSERT_EQ(doc1["steps"].size(), doc0["steps"].size());
  EXPECT_LT(doc1["steps"][1]["tokens"].get<double>(), doc0["steps"][1]["tokens"].get<double>());
  ASSERT_TRUE(doc1.contains("partial")) << doc1.dump(1);
  EXPECT_EQ(doc1["partial"]["world_size"], 2);
  EXPECT_EQ(doc1["partial"]["ranks"], nlohmann::json::array({1}));
  EXPECT_NE(doc1["partial"]["reason"].get<std::string>().find("node 0's document holds every rank"), std::string::npos);
  EXPECT_EQ(doc1["ranks"].size(), 1u);
  const auto& s1 = doc1["summary"];
  EXPECT_DOUBLE_EQ(s1["tokens_per_s_per_gpu"].get<double>(), s1["tokens_per_s"].get<double>());
}

TEST_F(Cli, NonFiniteLossFailsTheRunNamingTheStep) {
  // --lr 1e308 sends the weights to inf in the first update; the next step's loss is NaN.
  const auto r = run("train --nproc 2 --seq-len 32 --warmup 0 --steps 4 --lr 1e308 --mode full --out out.json", dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  const auto doc = load("out.json");
  const auto& st = doc["status"];
  EXPECT_EQ(st["state"], "failed") << st.dump();
  const std::string phase = st["phase"].get<std::string>();
  ASSERT_EQ(phase.rfind("step ", 0), 0u) << st.dump();
  const std::string reason = st["reason"].get<std::string>();
  EXPECT_NE(reason.find("non-finite loss at " + phase + " "), std::string::npos) << reason;
  EXPECT_NE(r.err.find("failed in " + phase), std::string::npos) << r.err;
}

// --env reaches every rank: an interface that does not exist, named for Gloo, fails the ranks'
// rendezvous with that name in the reason, and the cell's configuration records the variable.
TEST_F(Cli, EnvReachesEveryRankAndIsRecordedInTheConfiguration) {
  const auto r = run("train --nproc 2 --seq-len 32 --warmup 0 --steps 1 --env GLOO_SOCKET_IFNAME=ddpbench-no-if "
                     "--out out.json",
                     dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  const auto doc = load("out.json");
  EXPECT_EQ(doc["status"]["state"], "failed") << doc["status"].dump();
  EXPECT_NE(doc["status"].dump().find("ddpbench-no-if"), std::string::npos) << doc["status"].dump();
  EXPECT_EQ(doc["config"]["env"], nlohmann::json::array({"GLOO_SOCKET_IFNAME=ddpbench-no-if"})) << doc["config"].dump();
  // The loopback named the same way: the ranks meet.
  const auto ok = run("train --nproc 2 --seq-len 32 --warmup 0 --steps 1 --env GLOO_SOCKET_IFNAME=lo --out ok.json", dir_);
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(load("ok.json")["status"]["state"], "ok");
}

TEST_F(Cli, UnwritableOutputsAreRefusedBeforeTheRun) {
  fs::create_directories(dir_ / "a_folder");
  const std::vector<std::pair<std::string, std::string>> cases{
      {"train --runs-dir ''", "--runs-dir: empty"},
      {"train --out a_folder", "a_folder is a folder"},
      {"train --out /proc/x/y.json", "/proc/x"},
      {"check-loss --runs-dir ''", "--runs-dir: empty"},
      {"check-loss --out /proc/x/y.json", "/proc/x"},
  };
  for (const auto& [args, needle] : cases) {
    const auto r = run(args + " --steps 1 --warmup 0 --seq-len 16", dir_);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_EQ(lines(r.err), 1u) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
  }
  // Refused up front: no run folder was started, nothing written beside the bad paths.
  EXPECT_FALSE(fs::exists(dir_ / "runs"));
  EXPECT_TRUE(fs::is_empty(dir_ / "a_folder"));
}

TEST_F(Cli, HangupEndsTheRanksAndStillWritesTheResult) {
  const pid_t pid = start_long_train(dir_);
  ASSERT_GT(pid, 0) << "rank 0 logged no step";
  ::kill(pid, SIGHUP);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st)) << "the launcher died of signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  EXPECT_EQ(WEXITSTATUS(st), 1);
  const auto doc = load("out.json");
  EXPECT_EQ(doc["status"]["state"], "failed") << doc["status"].dump();
  EXPECT_NE(doc["status"].dump().find("interrupted by signal 1"), std::string::npos) << doc["status"].dump();
}

TEST_F(Cli, StoppedRankIsNamedWithItsPhaseWithinSecondsOfTheStall) {
  const pid_t pid = start_long_train(dir_);
  ASSERT_GT(pid, 0) << "rank 0 logged no step";
  const pid_t rank1 = rank_process(pid, 1);
  if (rank1 <= 0) ::kill(pid, SIGKILL);
  ASSERT_GT(rank1, 0) << "no rank 1 process under the launcher " << pid;
  // Heartbeats carry the phase every 0.5 s: let one tell the launcher that rank 1 is in a step.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ::kill(rank1, SIGSTOP);
  const auto stopped_at = std::chrono::steady_clock::now();
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  const auto took = std::chrono::steady_clock::now() - stopped_at;
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 1);
  // The default stall timeout (10 s), not the run's deadline (30 minutes).
  EXPECT_LT(took, std::chrono::seconds(20));
  const auto doc = load("out.json");
  const std::string status = doc["status"].dump();
  EXPECT_EQ(doc["status"]["state"], "failed") << status;
  EXPECT_NE(status.find("rank 1 (node 0, local 1) stalled in step "), std::string::npos) << status;
  EXPECT_EQ(doc["status"]["rank"], 1) << status;
  EXPECT_EQ(doc["status"]["phase"].get<std::string>().rfind("step ", 0), 0u) << status;
  EXPECT_TRUE(::kill(rank1, 0) != 0 || errno == ESRCH);  // ended, and reaped by the launcher
}

TEST_F(Cli, SameSeedSameConfigGivesTheSameLossCurveAcrossRuns) {
  const std::string args = "train --nproc 2 --seq-len 32 --lengths uniform:8:32 --warmup 0 --steps 4 --lr 1e-2 --mode full";
  ASSERT_EQ(run(args + " --out a.json", dir_).status, 0);
  ASSERT_EQ(run(args + " --out b.json", dir_).status, 0);
  ASSERT_EQ(run(args + " --seed 7 --out c.json", dir_).status, 0);
  auto losses = [&](const char* f) {
    std::vector<double> l;
    const auto doc = load(f);
    for (const auto& s : doc["steps"]) l.push_back(s["loss"].get<double>());
    return l;
  };
  EXPECT_EQ(losses("a.json").size(), 4u);
  EXPECT_EQ(losses("a.json"), losses("b.json"));
  EXPECT_NE(losses("a.json"), losses("c.json"));
}

TEST_F(Cli, RunWithoutArgumentsRunsTheCpuSmokeSuite) {
  const auto r = run("run", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("scaling"), std::string::npos);
  const fs::path runs = dir_ / "runs";
  ASSERT_TRUE(fs::exists(runs));
  const auto run_dir = fs::directory_iterator(runs)->path();
  const auto index = nlohmann::json::parse(ddpbench::read_file((run_dir / "run.json").string()));
  EXPECT_EQ(index["suite"], "smoke-cpu");
  ASSERT_EQ(index["cells"].size(), 4u);
  for (const auto& c : index["cells"]) {
    EXPECT_EQ(c["status"], "ok") << c.dump();
    const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir / c["file"].get<std::string>()).string()));
    EXPECT_EQ(doc["status"]["state"], "ok");
  }
  const auto csv = ddpbench::read_file((run_dir / "results.csv").string());
  EXPECT_NE(csv.find("tokens_per_s_per_gpu"), std::string::npos);
}

TEST_F(Cli, RunDryRunListsTheMatrix) {
  std::ofstream(dir_ / "s.toml") << "name = \"t\"\n[defaults]\nnproc = [1, 2]\nseq_len = [32, 64]\n[[workload]]\nname = \"w\"\n";
  const auto r = run("run s.toml --dry-run", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("4 cell(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("w/builtin/n2/b2/g1/s64"), std::string::npos) << r.output;
  const auto bad = run("run s.toml --filter nothing-matches", dir_);
  EXPECT_EQ(bad.status, 2);

  const auto rounds = run("run s.toml --dry-run --repeats 3 --filter n2", dir_);
  ASSERT_EQ(rounds.status, 0) << rounds.output;
  EXPECT_NE(rounds.output.find("2 cell(s) x 3 round(s)"), std::string::npos) << rounds.output;
  EXPECT_NE(rounds.output.find("w/builtin/n2/b2/g1/s32#"), std::string::npos) << rounds.output;  // cell ids
  EXPECT_EQ(rounds.output.find("/n1/"), std::string::npos) << rounds.output;

  // Several filters: a cell runs when its name contains any of them.
  const auto either = run("run s.toml --dry-run --filter n1/b2/g1/s32 --filter n2/b2/g1/s64", dir_);
  ASSERT_EQ(either.status, 0) << either.output;
  EXPECT_NE(either.output.find("2 cell(s)"), std::string::npos) << either.output;
  EXPECT_NE(either.output.find("w/builtin/n1/b2/g1/s32#"), std::string::npos) << either.output;
  EXPECT_NE(either.output.find("w/builtin/n2/b2/g1/s64#"), std::string::npos) << either.output;
  EXPECT_FALSE(fs::exists(dir_ / "runs"));
}

// Two workloads whose names differ only in '/' against '_', each run twice: four documents in
// four files, the rounds interleaved (every cell once, then every cell again), each document
// carrying its cell_id and repeat, and run.json's summary and scaling built from the repeats.
TEST_F(Cli, RunRepeatsInterleavesRoundsIntoUniqueFiles) {
  std::ofstream(dir_ / "s.toml") << "name = \"rep\"\n[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\nnproc = 1\n"
                                    "micro_batch = 1\nseq_len = 16\nwarmup = 0\nsteps = 2\n"
                                    "[[workload]]\nname = \"x/y\"\n[[workload]]\nname = \"x_y\"\n";
  const auto r = run("run s.toml --repeats 2", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("tok/s range"), std::string::npos) << r.output;
  const auto run_dir = only_run();
  const auto index = load_run_index();
  EXPECT_EQ(index["repeats"], 2);
  ASSERT_EQ(index["cells"].size(), 4u) << index.dump(1);
  const std::vector<std::pair<std::string, int>> order{{"x/y", 1}, {"x_y", 1}, {"x/y", 2}, {"x_y", 2}};
  std::set<std::string> files;
  std::map<std::string, std::string> id_of;  // workload -> cell_id
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& e = index["cells"][i];
    SCOPED_TRACE(e.dump());
    const auto [workload, repeat] = order[i];
    EXPECT_EQ(e["name"], workload + "/builtin/n1/b1/g1/s16");
    EXPECT_EQ(e["repeat"], repeat);
    EXPECT_EQ(e["status"], "ok");
    const auto id = e["cell_id"].get<std::string>();
    EXPECT_EQ(id.rfind(workload + "/builtin/n1/b1/g1/s16#", 0), 0u);
    if (!id_of.emplace(workload, id).second) EXPECT_EQ(id_of[workload], id);  // the same cell in both rounds
    const auto file = e["file"].get<std::string>();
    files.insert(file);
    const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir / file).string()));
    EXPECT_EQ(doc["cell_id"], id);
    EXPECT_EQ(doc["repeat"], repeat);
    EXPECT_EQ(doc["status"]["state"], "ok");
  }
  EXPECT_EQ(files.size(), 4u);
  EXPECT_NE(id_of["x/y"], id_of["x_y"]);
  ASSERT_EQ(index["summary"].size(), 2u);
  for (const auto& row : index["summary"]) {
    EXPECT_EQ(row["ok_repeats"], 2) << row.dump();
    const auto& tps = row["tokens_per_s"];
    EXPECT_LE(tps["min"].get<double>(), tps["median"].get<double>()) << row.dump();
    EXPECT_LE(tps["median"].get<double>(), tps["max"].get<double>()) << row.dump();
  }
  // Each workload is its own scaling group, its 1-rank cell its own baseline.
  ASSERT_EQ(index["scaling"].size(), 2u);
  for (const auto& p : index["scaling"]) {
    EXPECT_EQ(p["baseline_cell_id"], p["cell_id"]) << p.dump();
    EXPECT_DOUBLE_EQ(p["efficiency"].get<double>(), 1.0);
  }
}

// profile = ["builtin"] on the smoke suite's tiny shapes: the two-rank cell once more with --profile,
// whose document breaks each rank's steps down by phase (on the CPU the phases are all there is).
TEST_F(Cli, RunProfilesTheListedTrainersAtTheLargestRankCount) {
  std::ofstream(dir_ / "s.toml") << "name = \"prof\"\nprofile = [\"builtin\"]\n[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\n"
                                    "nproc = [1, 2]\nmicro_batch = 2\ngrad_accum = 2\nseq_len = 32\nlengths = \"uniform:8:32\"\n"
                                    "warmup = 1\nsteps = 3\n[[workload]]\nname = \"lora-tiny\"\nmode = \"lora\"\n";
  const auto r = run("run s.toml", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto run_dir = only_run();
  const auto index = load_run_index();
  ASSERT_EQ(index["cells"].size(), 3u) << index.dump(1);
  EXPECT_EQ(index["cells"][2]["name"], "lora-tiny-profile/builtin/n2/b2/g2/s32");
  for (int i : {0, 1}) {
    const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir / index["cells"][i]["file"].get<std::string>()).string()));
    EXPECT_FALSE(doc.contains("profile")) << index["cells"][i]["name"];
  }
  const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir / index["cells"][2]["file"].get<std::string>()).string()));
  EXPECT_EQ(doc["status"]["state"], "ok") << doc["status"].dump();
  EXPECT_TRUE(doc["config"]["profile"].get<bool>());
  ASSERT_TRUE(doc.contains("profile")) << doc.dump(1).substr(0, 2000);
  ASSERT_EQ(doc["profile"]["ranks"].size(), 2u) << doc["profile"].dump(1).substr(0, 2000);
  EXPECT_TRUE(doc["profile"]["missing"].empty());
  EXPECT_EQ(doc["profile"]["traces"].size(), 2u);
  // The measured steps broken down by phase, on the host's clock: forward and backward took time,
  // and each phase lies within the steps.
  for (const auto& rank : doc["profile"]["ranks"]) {
    const auto& total = rank["summary"]["total"];
    SCOPED_TRACE(total.dump());
    EXPECT_EQ(rank["summary"]["measured_steps"], 3);
    const auto& phases = total["phases_ns"];
    EXPECT_GT(phases["forward"].get<double>(), 0);
    EXPECT_GT(phases["backward"].get<double>(), 0);
    for (const auto& [name, ns] : phases.items()) EXPECT_LE(ns.get<double>(), total["step_ns"].get<double>()) << name;
  }
}

TEST_F(Cli, DoctorDescribesTheEnvironment) {
  const auto r = run("doctor --nproc 2", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* what : {"libtorch", "nccl", "hardware", "rank 1"}) EXPECT_NE(r.output.find(what), std::string::npos) << what;
  const auto j = run("doctor --json", dir_);
  ASSERT_EQ(j.status, 0);
  const auto fingerprint = nlohmann::json::parse(j.output.substr(0, j.output.rfind('}') + 1), nullptr, false);
  EXPECT_FALSE(fingerprint.is_discarded());
  EXPECT_GT(fingerprint.value("cpu_cores", 0), 0);
}

}  // namespace

namespace {

bool python_has_hf() { return std::system("python3 -c 'import transformers, peft' >/dev/null 2>&1") == 0; }

std::vector<double> loss_curve(const nlohmann::json& doc) {
  std::vector<double> l;
  for (const auto& s : doc["steps"]) l.push_back(s["loss"].get<double>());
  return l;
}

// `prepare` writes what the built-in trainer starts from: training from its checkpoint and token
// file must give the same loss curve, bit for bit, as training from the seed.
// Two ranks' recorded activity, as a GPU run leaves it: rank 1 reaches every allreduce 3 ms before
// rank 0, so its NCCL kernels run 3 ms longer. `analyze` names rank 0 the straggler and writes the
// profile JSON; a marker that matches no range is a usage error that says which names it saw.
TEST_F(Cli, AnalyzeRecordedActivityFindsTheStraggler) {
  for (int rank : {0, 1}) {
    ddpbench::profile::RankActivity a;
    a.rank = rank;
    a.world_size = 2;
    a.device_name = "NVIDIA H100 80GB HBM3";
    for (std::uint64_t step = 0; step < 4; ++step) {
      const std::uint64_t s = step * 20'000'000;
      a.ranges.push_back({s, s + 20'000'000, 1, "step"});
      ddpbench::profile::KernelRecord gemm;
      gemm.start = s + 100'000;
      gemm.end = s + 10'000'000;
      gemm.name = "gemm";
      a.kernels.push_back(gemm);
      ddpbench::profile::KernelRecord allreduce;
      allreduce.start = s + (rank == 1 ? 10'000'000 : 13'000'000);
      allreduce.end = s + 14'000'000;
      allreduce.name = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL";
      allreduce.stream = 20;
      a.kernels.push_back(allreduce);
    }
    ddpbench::write_file_atomic((dir_ / ("rank" + std::to_string(rank) + ".activity.json")).string(),
                                ddpbench::profile::to_json(a).dump());
  }
  const auto r = run("analyze . --warmup 1 --gap-us 100 --traces traces", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1/2 on NVIDIA H100 80GB HBM3: 3 steps measured"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("straggler: rank 0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("last to arrive in 3 of 3 steps"), std::string::npos) << r.output;
  const auto j = load("profile.json");
  EXPECT_EQ(j["ranks"].size(), 2u);
  EXPECT_EQ(j["ranks"][0]["gap_threshold_ns"], 100'000);
  const auto& wait = j["stragglers"]["collective_wait"];
  EXPECT_EQ(wait["last_most_often"], 0);
  EXPECT_DOUBLE_EQ(wait["ranks"][1]["median_wait_ns"].get<double>(), 3'000'000.0);
  // The traces folder holds the traces and nothing else: Holistic Trace Analysis reads every .json in it.
  std::set<std::string> traces;
  for (const auto& entry : fs::directory_iterator(dir_ / "traces")) traces.insert(entry.path().filename().string());
  EXPECT_EQ(traces, (std::set<std::string>{"rank0.trace.json", "rank1.trace.json"}));
  EXPECT_NE(r.output.find("traces (Perfetto, Holistic Trace Analysis): traces/"), std::string::npos) << r.output;
  // By default beside the activity folder, as in a run folder: run/ranks -> run/traces.
  fs::create_directories(dir_ / "run" / "ranks");
  for (const char* f : {"rank0.activity.json", "rank1.activity.json"}) fs::copy_file(dir_ / f, dir_ / "run" / "ranks" / f);
  ASSERT_EQ(run("analyze run/ranks/ --warmup 1", dir_).status, 0);
  EXPECT_TRUE(fs::exists(dir_ / "run" / "traces" / "rank1.trace.json"));

  const auto bad = run("analyze . --step-marker iteration", dir_);
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("step"), std::string::npos) << bad.err;
  EXPECT_EQ(run("analyze no-such-folder", dir_).status, 2);
}

TEST_F(Cli, TrainingFromPreparedCheckpointAndTokenFileEqualsTrainingFromTheSeed) {
  const std::string flags = "--mode lora --lora-rank 4 --seq-len 32 --lengths uniform:4:32 --nproc 2 --grad-accum 2 --warmup 0 --steps 3 --lr 1e-2";
  ASSERT_EQ(run("prepare " + flags + " --out in", dir_).status, 0);
  for (const char* f : {"in/checkpoint/config.json", "in/checkpoint/model.safetensors", "in/checkpoint/adapter_config.json",
                        "in/checkpoint/adapter_model.safetensors", "in/tokens.bin"})
    EXPECT_TRUE(std::filesystem::exists(dir_ / f)) << f;
  ASSERT_EQ(run("train " + flags + " --out seed.json", dir_).status, 0);
  ASSERT_EQ(run("train " + flags + " --checkpoint in/checkpoint --data-file in/tokens.bin --out files.json", dir_).status, 0);
  const auto a = load("seed.json"), b = load("files.json");
  ASSERT_EQ(a["steps"].size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(a["steps"][i]["loss"], b["steps"][i]["loss"]) << "step " << i;
  // A checkpoint of another shape is refused with one line.
  const auto bad = run("train --preset 350m --checkpoint in/checkpoint --steps 1", dir_);
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("not the shape of preset 350m"), std::string::npos) << bad.err;
}

// Equal work: the built-in trainer and the Hugging Face + PEFT reference, started by the same
// launcher from one checkpoint and one token file, must follow the same loss curve (fp32 on the
// CPU: to rounding) and report the same global token counts.
TEST_F(Cli, BuiltinAndHuggingFaceTrainersAgreeOnEqualWork) {
  if (!python_has_hf()) GTEST_SKIP() << "transformers and peft are not importable by python3; scripts/setup installs them";
  for (const char* mode : {"lora", "full"}) {
    SCOPED_TRACE(mode);
    const std::string flags = std::string("--mode ") + mode +
                              " --lora-rank 4 --seq-len 32 --lengths uniform:4:32 --nproc 2 --grad-accum 3 --warmup 0 --steps 4 --lr 1e-2"
                              " --lr-warmup 3";  // the schedule must be the same in both trainers too
    ASSERT_EQ(run("prepare " + flags + " --out in", dir_).status, 0);
    const std::string inputs = " --checkpoint in/checkpoint --data-file in/tokens.bin";
    const auto b = run("train " + flags + inputs + " --out builtin.json", dir_);
    ASSERT_EQ(b.status, 0) << b.output;
    const auto h = run("train " + flags + inputs + " --trainer hf --out hf.json", dir_);
    ASSERT_EQ(h.status, 0) << h.output;
    const auto builtin = load("builtin.json"), hf = load("hf.json");
    const auto lb = loss_curve(builtin), lh = loss_curve(hf);
    ASSERT_EQ(lb.size(), 4u);
    ASSERT_EQ(lh.size(), 4u);
    for (std::size_t i = 0; i < lb.size(); ++i) {
      EXPECT_LT(std::fabs(lb[i] - lh[i]) / lh[i], 1e-5) << "step " << i << ": " << lb[i] << " vs " << lh[i];
      EXPECT_EQ(builtin["steps"][i]["global_predicted_tokens"], hf["steps"][i]["global_predicted_tokens"]);
    }
    EXPECT_EQ(builtin["ranks"][0]["trainable_parameters"], hf["ranks"][0]["trainable_parameters"]);
    std::filesystem::remove_all(dir_ / "in");
  }
}

// The loss rule checked on the built-in trainer: 2 Gloo ranks x 2 micro-batches of uneven lengths
// against 1 rank with the same 8 sequences in one micro-batch passes; both wrong variants fail it
// with exit 1 and say why.
TEST_F(Cli, CheckLossPassesTheRuleAndFailsBothWrongVariants) {
  const std::string flags = "check-loss --trainer builtin --preset tiny --mode full --seq-len 32 --lr 1e-2";
  const auto good = run(flags + " --out good.json", dir_);
  ASSERT_EQ(good.status, 0) << good.output;
  EXPECT_NE(good.output.find("PASS: largest relative difference"), std::string::npos) << good.output;
  const auto verdict = load("good.json");
  EXPECT_TRUE(verdict["pass"].get<bool>());
  EXPECT_EQ(verdict["world_size"], 2);
  EXPECT_EQ(verdict["grad_accum"], 2);
  EXPECT_EQ(verdict["lengths"], "uniform:4:32");
  EXPECT_EQ(verdict["steps"].size(), 3u);
  EXPECT_LT(verdict["max_loss_rel_diff"].get<double>(), 1e-5);
  for (const char* rule : {"mean-of-micro-means", "local-tokens"}) {
    SCOPED_TRACE(rule);
    const auto bad = run(flags + " --loss-norm " + rule + " --out bad.json", dir_);
    EXPECT_EQ(bad.status, 1) << bad.output;
    EXPECT_NE(bad.output.find("FAIL"), std::string::npos) << bad.output;
    EXPECT_GT(load("bad.json")["max_grad_norm_rel_diff"].get<double>(), 1e-3);
  }
}

// The Hugging Face Trainer keeps the rule (average_tokens_across_devices=True) and check-loss says so.
TEST_F(Cli, CheckLossPassesTheHuggingFaceTrainer) {
  if (!python_has_hf()) GTEST_SKIP() << "transformers and peft are not importable by python3; scripts/setup installs them";
  const auto r = run("check-loss --trainer hf --preset tiny --mode lora --lora-rank 4 --seq-len 32 --lr 1e-2 --out v.json", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(load("v.json")["pass"].get<bool>());
  EXPECT_EQ(load("v.json")["fingerprint"]["python_packages"]["transformers"].get<std::string>().empty(), false);
}

// A trainer whose packages are not installed is a skipped cell with the reason, not a failure.
TEST_F(Cli, TrainerWithoutItsPackagesIsSkipped) {
  if (std::system("python3 -c 'import liger_kernel' >/dev/null 2>&1") == 0)
    GTEST_SKIP() << "liger_kernel is installed here, so a liger cell would run";
  const auto r = run("train --trainer liger --preset tiny --steps 1 --warmup 0 --out liger.json", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("skipped: trainer liger needs liger-kernel"), std::string::npos) << r.output;
  const auto doc = load("liger.json");
  EXPECT_EQ(doc["status"]["state"], "skipped");
  EXPECT_NE(doc["status"]["reason"].get<std::string>().find("liger-kernel"), std::string::npos);
  EXPECT_TRUE(doc["steps"].empty());
}

}  // namespace

namespace {

std::vector<nlohmann::json> collectives_cells(const fs::path& run_dir) {
  std::vector<nlohmann::json> out;
  const auto index = nlohmann::json::parse(ddpbench::read_file((run_dir / "run.json").string()));
  EXPECT_EQ(index["kind"], "collectives");
  for (const auto& c : index["cells"]) out.push_back(nlohmann::json::parse(ddpbench::read_file((run_dir / c["file"].get<std::string>()).string())));
  return out;
}

}  // namespace

TEST_F(Cli, BenchCollectivesOnTwoGlooRanksChecksEverySizeAndWritesTheRunFormat) {
  const auto r = run("bench collectives --nproc 2 --device cpu --max-bytes 4K --repetitions 2 --iterations 2 --out coll", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto cells = collectives_cells(dir_ / "coll");
  // all-reduce and broadcast in place only (c10d has no out-of-place form), the others both; 2 dtypes.
  ASSERT_EQ(cells.size(), 12u);
  std::size_t rows = 0;
  for (const auto& doc : cells) {
    SCOPED_TRACE(doc["cell"].get<std::string>());
    EXPECT_EQ(doc["status"]["state"], "ok");
    EXPECT_NE(doc["cell_id"].get<std::string>().find('#'), std::string::npos);
    const std::string c = doc["config"]["collective"];
    const double factor = c == "all_reduce" ? 1.0 : c == "broadcast" ? 1.0 : 0.5;  // 2(n-1)/n, 1, (n-1)/n at n = 2
    ASSERT_FALSE(doc["rows"].empty());
    EXPECT_EQ(doc["rows"].back()["bytes"], 4096);
    for (const auto& row : doc["rows"]) {
      EXPECT_EQ(row["wrong"], 0);
      EXPECT_EQ(row["repetitions"], 2);
      EXPECT_GT(row["time_s"].get<double>(), 0);
      EXPECT_NEAR(row["algbw_GBps"].get<double>(), row["bytes"].get<double>() / row["time_s"].get<double>() / 1e9, 1e-9);
      EXPECT_NEAR(row["busbw_GBps"].get<double>(), factor * row["algbw_GBps"].get<double>(), 1e-9);
      ++rows;
    }
  }
  EXPECT_GT(rows, 100u);
  EXPECT_TRUE(fs::exists(dir_ / "coll" / "results.csv"));
}

TEST_F(Cli, BenchCollectivesOnOneRankAddsTheCopyBaseline) {
  const auto r = run("bench collectives --nproc 1 --device cpu --collectives all_reduce --dtypes fp32 --max-bytes 1K "
                     "--repetitions 1 --iterations 1 --out coll", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto cells = collectives_cells(dir_ / "coll");
  ASSERT_EQ(cells.size(), 2u);
  for (const auto& doc : cells) {
    const bool copy = doc["config"]["collective"] == "copy";
    EXPECT_EQ(doc["config"]["mode"], copy ? "out-of-place" : "in-place");
    for (const auto& row : doc["rows"]) {
      EXPECT_EQ(row["wrong"], 0);
      // One rank: an all-reduce moves nothing over a bus (2(n-1)/n = 0); a copy's busbw is its algbw.
      EXPECT_DOUBLE_EQ(row["busbw_GBps"].get<double>(), copy ? row["algbw_GBps"].get<double>() : 0.0);
    }
  }
}

TEST_F(Cli, BenchKernelsConvertsGivenOutputIntoTheRunFormat) {
  // bench_kernels' and liger_ops.py's output as they write it (hand-made: no GPU here), merged and
  // converted with --from: one cell per op/preset/pass, kernels.json for the report.
  auto entry = [](const std::string& name, double us, double bps, double check = -1) {
    nlohmann::json e = {{"name", name + "/iterations:5/manual_time"}, {"run_name", name + "/iterations:5/manual_time"},
                        {"run_type", "iteration"}, {"real_time", us}, {"time_unit", "us"}, {"bytes_per_second", bps},
                        {"model_bytes", bps * us * 1e-6}, {"peak_extra_bytes", 1024.0}};
    if (check >= 0) e["check_rel_error"] = check;
    return e;
  };
  const nlohmann::json ours = {{"benchmarks", nlohmann::json::array({entry("copy/67108864", 35, 3.8e12),
                                                                      entry("swiglu/1b/bwd/baseline", 400, 1.2e12),
                                                                      entry("swiglu/1b/bwd/fused", 150, 3.3e12, 4e-3)})}};
  const nlohmann::json liger = {{"benchmarks", nlohmann::json::array({entry("swiglu/1b/bwd/liger", 250, 2.0e12)})}};
  ddpbench::write_file_atomic((dir_ / "g.json").string(), ours.dump());
  ddpbench::write_file_atomic((dir_ / "l.json").string(), liger.dump());
  const auto r = run("bench kernels --presets 1b --from g.json,l.json --out kern", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto index = nlohmann::json::parse(ddpbench::read_file((dir_ / "kern" / "run.json").string()));
  EXPECT_EQ(index["kind"], "kernels");
  ASSERT_EQ(index["cells"].size(), 1u);
  const auto doc = nlohmann::json::parse(ddpbench::read_file((dir_ / "kern" / index["cells"][0]["file"].get<std::string>()).string()));
  EXPECT_EQ(doc["cell"], "kernels/swiglu/1b/bwd");
  EXPECT_EQ(doc["status"]["state"], "ok");
  EXPECT_EQ(doc["rows"].size(), 3u);
  EXPECT_NEAR(doc["summary"]["speedup_vs_liger"].get<double>(), 250.0 / 150.0, 1e-9);
  EXPECT_EQ(doc["config"]["l2_flush"], false);  // no l2_flush counter: written before the flag, timed warm
  EXPECT_TRUE(fs::exists(dir_ / "kern" / "kernels.json"));
  EXPECT_TRUE(fs::exists(dir_ / "kern" / "results.csv"));
  // A fused row whose check failed fails its cell and the command.
  const nlohmann::json bad = {{"benchmarks", nlohmann::json::array({entry("swiglu/1b/bwd/fused", 150, 3.3e12, 0.5)})}};
  ddpbench::write_file_atomic((dir_ / "bad.json").string(), bad.dump());
  EXPECT_EQ(run("bench kernels --from bad.json --out kern-bad", dir_).status, 1);
  EXPECT_EQ(run("bench kernels --from missing.json --out kern-missing", dir_).status, 2);
}

TEST_F(Cli, BenchKernelsTimesL2ColdUnlessToldAndRefusesFilesTimedDifferently) {
  // Stand-ins for bench_kernels and liger_ops.py (no GPU here): each notes its arguments and writes
  // entries whose l2_flush counter is the --l2-flush it was given, as the real programs do.
  const std::string fake_bench = R"SH(#!/bin/sh
echo "$*" >> "$(dirname "$0")/bench-args.txt"
flush=; out=; prev=
for a in "$@"; do
  case $prev in --l2-flush) flush=$a ;; --describe) echo '{"ops": []}' > "$a"; exit 0 ;; esac
  case $a in --benchmark_out=*) out=${a#--benchmark_out=} ;; esac
  prev=$a
done
e() { printf '{"name":"%s","run_name":"%s","run_type":"iteration","real_time":%s,"time_unit":"us","bytes_per_second":%s,"model_bytes":6e7,"l2_flush":%s}' "$1" "$1" "$2" "$3" "$flush"; }
printf '{"benchmarks":[%s,%s,%s]}\n' "$(e copy/33554432 20 3.4e12)" "$(e swiglu/1b/bwd/baseline 150 0.4e12)" "$(e swiglu/1b/bwd/fused 20 3e12)" > "$out"
)SH";
  const std::string fake_liger = R"SH(echo "$*" >> "$(dirname "$0")/liger-args.txt"
flush=; out=; prev=
for a in "$@"; do case $prev in --l2-flush) flush=$a ;; --out) out=$a ;; esac; prev=$a; done
printf '{"benchmarks":[{"name":"swiglu/1b/bwd/liger","run_name":"swiglu/1b/bwd/liger","run_type":"iteration","real_time":40,"time_unit":"us","bytes_per_second":1.5e12,"model_bytes":6e7,"l2_flush":%s}]}\n' "$flush" > "$out"
)SH";
  ddpbench::write_file_atomic((dir_ / "bench_kernels.sh").string(), fake_bench);
  fs::permissions(dir_ / "bench_kernels.sh", fs::perms::owner_all);
  ddpbench::write_file_atomic((dir_ / "liger_ops.sh").string(), fake_liger);
  const ScopedEnv bench("DDPBENCH_BENCH_KERNELS", (dir_ / "bench_kernels.sh").c_str());
  const ScopedEnv script("DDPBENCH_LIGER_OPS_SCRIPT", (dir_ / "liger_ops.sh").c_str());
  const ScopedEnv python("DDPBENCH_PYTHON", "/bin/sh");
  for (const bool cold : {true, false}) {
    SCOPED_TRACE(cold ? "default" : "--no-l2-flush");
    fs::remove(dir_ / "bench-args.txt");
    fs::remove(dir_ / "liger-args.txt");
    const std::string out = cold ? "cold" : "warm";
    const auto r = run("bench kernels --presets 1b --ops swiglu --repetitions 1 --out " + out + (cold ? "" : " --no-l2-flush"), dir_);
    ASSERT_EQ(r.status, 0) << r.output;
    const std::string flag = std::string("--l2-flush ") + (cold ? "1" : "0");
    // Both programs got the setting: the benchmark run, its --describe for Liger's shapes, and Liger's timing.
    const auto bench_args = ddpbench::read_file((dir_ / "bench-args.txt").string());
    EXPECT_EQ(lines(bench_args), 2u) << bench_args;
    EXPECT_EQ(bench_args.find(cold ? "--l2-flush 0" : "--l2-flush 1"), std::string::npos) << bench_args;
    EXPECT_NE(bench_args.find(flag), std::string::npos) << bench_args;
    EXPECT_NE(ddpbench::read_file((dir_ / "liger-args.txt").string()).find(flag), std::string::npos);
    EXPECT_NE(r.output.find(cold ? "timed L2-cold" : "timed L2-warm"), std::string::npos) << r.output;
    const auto index = load(out + "/run.json");
    EXPECT_EQ(index["l2_flush"], cold);
    EXPECT_EQ(index["liger"], "timed");
    ASSERT_EQ(index["cells"].size(), 1u);
    const auto doc = load(out + "/" + index["cells"][0]["file"].get<std::string>());
    EXPECT_EQ(doc["config"]["l2_flush"], cold);
    EXPECT_EQ(doc["rows"].size(), 3u);
  }
  // Liger's warm file with the cold run's: refused before anything is written.
  const auto mixed = run("bench kernels --from cold/work/gbench.json,warm/work/liger.json --out mixed", dir_);
  EXPECT_EQ(mixed.status, 2) << mixed.output;
  EXPECT_EQ(lines(mixed.err), 1u) << mixed.err;
  EXPECT_NE(mixed.err.find("swiglu/1b/bwd/liger L2-warm"), std::string::npos) << mixed.err;
  EXPECT_FALSE(fs::exists(dir_ / "mixed"));
  EXPECT_EQ(run("bench kernels --from cold/work/gbench.json,cold/work/liger.json --out same", dir_).status, 0);
  EXPECT_EQ(load("same/run.json")["l2_flush"], true);
}

TEST_F(Cli, PredictFitsABenchCollectivesRunAndPredictsAHandMadeRun) {
  // Sizes up to 16 MiB, so that the bandwidth term stands well out of loopback Gloo's latency and of
  // the milliseconds of noise a loaded 2-core machine adds.
  const auto r = run("bench collectives --nproc 2 --device cpu --collectives all_reduce --dtypes bf16 --min-bytes 64K --max-bytes 16M "
                     "--repetitions 1 --iterations 2 --out coll", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  nlohmann::json doc = {{"schema_version", 1}, {"fingerprint", nlohmann::json::object()}, {"steps", nlohmann::json::array()},
                        {"status", {{"state", "ok"}}},
                        {"config", {{"grad_accum", 1}, {"micro_batch", 1}, {"seq_len", 32}, {"preset", "tiny"}, {"device", "cpu"}}},
                        {"summary", {{"step_time_p50_s", 0.05}, {"step_time_mean_s", 0.05}, {"tokens_per_s_per_gpu", 640.0}, {"peak_allocated_bytes", 1e8}}},
                        {"ranks", {{{"buckets", 2}, {"bucket_bytes", 4e6}, {"parameters", 1e6}, {"trainable_parameters", 1e6}, {"optimizer_state_bytes", 8e6}}}}};
  ddpbench::write_file_atomic((dir_ / "run1.json").string(), doc.dump());
  const auto p = run("predict run1.json --collectives coll --gpus 1,2,...,16 --out p.json", dir_);
  ASSERT_EQ(p.status, 0) << p.output;
  EXPECT_NE(p.output.find("fit error"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("assumptions"), std::string::npos);
  const auto out = load("p.json");
  EXPECT_EQ(out["fit"]["ranks"], 2);
  EXPECT_GT(out["fit"]["bandwidth_GBps"].get<double>(), 0);
  const auto& preds = out["runs"][0]["predictions"];
  ASSERT_FALSE(preds.empty());
  EXPECT_EQ(preds[0]["strategy"], "ddp");
  EXPECT_EQ(preds[0]["gpus"], 1);
  EXPECT_DOUBLE_EQ(preds[0]["efficiency"].get<double>(), 1.0);
  for (const auto& pr : preds) EXPECT_LE(pr["efficiency"].get<double>(), 1.0 + 1e-12);
}

TEST_F(Cli, BenchCollectivesDataCheckCountsAWrongElement) {
  // One rank spoils one element after each collective: the check must find exactly that one.
  const auto r = run("bench collectives --nproc 2 --device cpu --collectives all_reduce,all_gather --dtypes fp32 --max-bytes 256 "
                     "--repetitions 1 --iterations 1 --inject-error-rank 1 --out coll", dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("wrong element"), std::string::npos) << r.output;
  const auto cells = collectives_cells(dir_ / "coll");
  ASSERT_EQ(cells.size(), 3u);
  for (const auto& doc : cells) {
    EXPECT_EQ(doc["status"]["state"], "failed");
    for (const auto& row : doc["rows"]) EXPECT_EQ(row["wrong"], 1) << doc["cell"];
  }
}

TEST_F(Cli, BenchAndPredictRejectBadInputWithOneLine) {
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {"bench collectives --max-bytes 3X --device cpu", "--max-bytes"},
           {"bench collectives --nproc 0 --device cpu", "--nproc"},
           {"bench collectives --device cpu --collectives all_to_all", "all_to_all"},
           {"predict no/such/run", "no/such/run"},
           {"predict . --gpus 0", "--gpus"},
           {"train --trainer hf --shard-optimizer", "--shard-optimizer"},
       }) {
    SCOPED_TRACE(args);
    const auto r = run(args, dir_);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
  }
  for (const char* sub : {"bench collectives", "predict"}) EXPECT_EQ(run(std::string(sub) + " --help", dir_).status, 0) << sub;
}

namespace {

// aa = ["builtin", "hf"] on the tiny preset: each trainer's one-rank cell gets its A/A twin (half the
// micro-batch, twice the accumulation), which reads the very inputs of its cell, so each floor is
// rounding alone (fp32 here: tiny); run.json and the summary state both floors and judge the hf
// curve against the built-in one by the larger, naming whose it is.
TEST_F(Cli, RunStatesEachTrainersAaFloorAndJudgesByTheLarger) {
  if (!python_has_hf()) GTEST_SKIP() << "transformers and peft are not importable by python3; scripts/setup installs them";
  std::ofstream(dir_ / "s.toml") << "name = \"aa\"\naa = [\"builtin\", \"hf\"]\n[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\n"
                                    "mode = \"full\"\nmicro_batch = 2\nseq_len = 16\nwarmup = 1\nsteps = 3\nlr = 1e-2\n"
                                    "trainer = [\"builtin\", \"hf\"]\nnproc = 1\n[[workload]]\nname = \"w\"\n";
  const auto r = run("run s.toml", dir_);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("A/A floors (max |loss difference|"), std::string::npos) << r.output;
  const auto run_dir = only_run();
  const auto index = load_run_index();
  ASSERT_EQ(index["cells"].size(), 4u);
  std::map<std::string, nlohmann::json> docs;
  for (const auto& e : index["cells"]) {
    docs[e["name"].get<std::string>()] = nlohmann::json::parse(ddpbench::read_file((run_dir / e["file"].get<std::string>()).string()));
    ASSERT_EQ(docs[e["name"].get<std::string>()]["status"]["state"], "ok") << e.dump();
  }
  for (const char* t : {"builtin", "hf"}) {  // the twin reads its cell's checkpoint and tokens
    const auto& cell = docs.at(std::string("w/") + t + "/n1/b2/g1/s16");
    const auto& twin = docs.at(std::string("w-aa/") + t + "/n1/b1/g2/s16");
    EXPECT_EQ(twin["config"]["data_file"], cell["config"]["data_file"]) << t;
    EXPECT_EQ(twin["config"]["checkpoint"], cell["config"]["checkpoint"]) << t;
  }
  const auto& f = index["loss_floors"];
  ASSERT_EQ(f["floors"].size(), 2u) << f.dump();
  std::map<std::string, double> floor, bias_floor;
  for (const auto& x : f["floors"]) {
    ASSERT_TRUE(x["floor"].is_number()) << x.dump();
    ASSERT_TRUE(x["bias_floor"].is_number()) << x.dump();
    floor[x["trainer"].get<std::string>()] = x["floor"].get<double>();
    bias_floor[x["trainer"].get<std::string>()] = x["bias_floor"].get<double>();
    EXPECT_LE(x["bias_floor"].get<double>(), x["floor"].get<double>()) << x.dump();  // a mean is at most the max
    // Equal work to rounding: another token or weight would move a loss by far more.
    EXPECT_LT(x["floor"].get<double>(), 1e-4) << x.dump();
    EXPECT_EQ(x["twin"], "w-aa/" + x["trainer"].get<std::string>() + "/n1/b1/g2/s16");
  }
  ASSERT_EQ(floor.size(), 2u);
  ASSERT_EQ(f["against_builtin"].size(), 1u) << f.dump();
  const auto& j = f["against_builtin"][0];
  EXPECT_EQ(j["cell"], "w/hf/n1/b2/g1/s16");
  EXPECT_EQ(j["baseline_cell"], "w/builtin/n1/b2/g1/s16");
  const double larger = std::max(floor["builtin"], floor["hf"]);
  EXPECT_DOUBLE_EQ(j["floor"].get<double>(), larger);
  EXPECT_EQ(j["floor_of"], floor["hf"] > floor["builtin"] ? "hf" : "builtin");
  EXPECT_EQ(j["verdict"], j["distance"].get<double>() <= larger ? "within A/A floor" : "beyond A/A floor");
  EXPECT_LT(j["distance"].get<double>(), 1e-4);
  // The bias is judged by the workload's A/A bias: the largest of every twinned trainer's.
  const double bias_larger = std::max(bias_floor["builtin"], bias_floor["hf"]);
  EXPECT_DOUBLE_EQ(j["bias_floor"].get<double>(), bias_larger);
  EXPECT_LE(std::fabs(j["bias"].get<double>()), j["distance"].get<double>());
  EXPECT_EQ(j["bias_verdict"], std::fabs(j["bias"].get<double>()) <= bias_larger ? "no bias beyond A/A" : "biased");
  EXPECT_NE(r.output.find("w/hf/n1/b2/g1/s16  max "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("; mean "), std::string::npos) << r.output;
}

// A suite with a Python trainer makes its equal-work inputs once per run for the cells that differ
// only in trainer and rank count (one checkpoint, a token file per rank count), and every one of
// those cells reads them. A cell's tokens do not depend on the other rank counts of its run: the
// 1-GPU cells of a run with 2-GPU cells train as those of a run without them.
TEST_F(Cli, RunMakesEqualWorkInputsOncePerWorkload) {
  if (!python_has_hf()) GTEST_SKIP() << "transformers and peft are not importable by python3; scripts/setup installs them";
  auto suite = [&](const std::string& file, const std::string& nproc) {
    std::ofstream(dir_ / file) << "name = \"shared\"\n[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\nmode = \"full\"\n"
                                  "micro_batch = 2\nseq_len = 16\nwarmup = 0\nsteps = 2\n"
                                  "trainer = [\"builtin\", \"hf-loop\"]\nnproc = ["
                               << nproc << "]\n[[workload]]\nname = \"w\"\n";
  };
  suite("s.toml", "1, 2");
  suite("s1.toml", "1");
  std::map<std::string, std::map<std::string, std::vector<double>>> losses;  // runs dir -> cell -> losses
  for (const auto& [file, runs] : {std::pair{"s.toml", "runs"}, std::pair{"s1.toml", "runs1"}}) {
    const auto r = run(std::string("run ") + file + " --runs-dir " + runs, dir_);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto run_dir = fs::directory_iterator(dir_ / runs)->path();
    std::vector<fs::path> inputs;
    for (const auto& e : fs::directory_iterator(run_dir / "inputs")) inputs.push_back(e.path());
    ASSERT_EQ(inputs.size(), 1u);
    const auto index = nlohmann::json::parse(ddpbench::read_file((run_dir / "run.json").string()));
    ASSERT_EQ(index["cells"].size(), std::string(file) == "s.toml" ? 4u : 2u);
    for (const auto& e : index["cells"]) {
      const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir / e["file"].get<std::string>()).string()));
      ASSERT_EQ(doc["status"]["state"], "ok") << doc["status"].dump();
      const auto shared = fs::relative(inputs[0], dir_);  // run gives paths as relative as its --runs-dir
      EXPECT_EQ(doc["config"]["checkpoint"], (shared / "checkpoint").string());
      const auto nproc = doc["config"]["nproc"].get<int>();
      EXPECT_EQ(doc["config"]["data_file"], (shared / ("tokens-n" + std::to_string(nproc) + ".bin")).string());
      for (const auto& step : doc["steps"]) losses[runs][e["name"].get<std::string>()].push_back(step["loss"].get<double>());
    }
  }
  auto& both = losses["runs"];
  // Equal work across trainers at each rank count, from the one set of inputs.
  for (const char* n : {"n1", "n2"}) {
    const auto& a = both[std::string("w/builtin/") + n + "/b2/g1/s16"];
    const auto& b = both[std::string("w/hf-loop/") + n + "/b2/g1/s16"];
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_LT(std::fabs(a[i] - b[i]) / b[i], 1e-5) << n << " step " << i;
  }
  // The 1-GPU cells of both runs: the same tokens, so the same curves.
  for (const char* cell : {"w/builtin/n1/b2/g1/s16", "w/hf-loop/n1/b2/g1/s16"}) {
    const auto& a = both[cell];
    const auto& b = losses["runs1"][cell];
    ASSERT_EQ(b.size(), a.size()) << cell;
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_LT(std::fabs(a[i] - b[i]) / b[i], 1e-6) << cell << " step " << i;
  }
}

}  // namespace
