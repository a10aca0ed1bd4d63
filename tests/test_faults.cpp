// The faults of the README's table, each injected by the test itself (a corrupted file, a bad
// token on one rank, a signal to a real rank or to the suite), against the real binary: what the
// user gets (one line and exit status 2 up front, the guilty rank named, the measured steps kept,
// a suite stopped and resumed), and nothing left running.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_helpers.h"
#include "common/strings.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using cli_helpers::lines;
using cli_helpers::rank_process;
using cli_helpers::run;
using cli_helpers::ScopedEnv;
using ddpbench::testing_helpers::contains;

class Faults : public ddpbench::testing_helpers::TempDirTest {
 protected:
  nlohmann::json load(const std::string& rel) { return nlohmann::json::parse(ddpbench::read_file(path(rel))); }
  // Exit status 2 and one line on stderr that holds `needle`.
  void expect_refused(const std::string& args, const std::string& needle) {
    SCOPED_TRACE(args);
    const auto r = run(args, dir_);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, needle)) << r.err;
  }
  // The first (only) run folder under runs/.
  fs::path run_dir() const { return fs::directory_iterator(dir_ / "runs")->path(); }
};

// --- memory and size bounds ------------------------------------------------------------------

TEST_F(Faults, RunsThatCannotFitAreRefusedBeforeAnythingIsAllocated) {
  // A budget the test sets (DDPBENCH_HOST_MEMORY), so that the verdict does not depend on this host.
  const ScopedEnv budget("DDPBENCH_HOST_MEMORY", "16G");
  expect_refused("train --seq-len 1000000000", "memory: tiny lora, micro-batch 2 x seq-len 1000000000 needs an estimated");
  expect_refused("train --micro-batch 100000", "memory: tiny lora, micro-batch 100000 x seq-len 128");
  expect_refused("train --preset 8b --device cpu", "memory: 8b lora");
  expect_refused("prepare --preset 8b --out prepared", "memory: preparing 8b");
  expect_refused("train --nproc 100000", "--nproc: 100000 ranks on one node, more than the 1024");
  // 20 workloads of 5 x 100^4 cells each: counted, not expanded.
  std::string values;
  for (int v = 2; v <= 101; ++v) values += (v > 2 ? ", " : "") + std::to_string(v);
  std::ofstream suite(path("huge.toml"));
  suite << "name = \"huge\"\n[defaults]\ntrainer = [\"builtin\", \"hf\", \"liger\", \"unsloth\", \"hf-loop\"]\n";
  for (const char* key : {"nproc", "micro_batch", "grad_accum", "seq_len"}) suite << key << " = [" << values << "]\n";
  for (int w = 0; w < 20; ++w) suite << "[[workload]]\nname = \"w" << w << "\"\n";
  suite.close();
  expect_refused("run huge.toml", "more than 10000 cells");
  expect_refused("run huge.toml --dry-run", "more than 10000 cells");
  // Refused up front: no run folder, no prepared files.
  EXPECT_FALSE(fs::exists(dir_ / "runs"));
  EXPECT_FALSE(fs::exists(dir_ / "prepared"));
}

TEST_F(Faults, NoMemoryCheckRunsWhatTheEstimateRefuses) {
  const ScopedEnv budget("DDPBENCH_HOST_MEMORY", "1M");  // less than any rank process needs
  expect_refused("prepare --seq-len 16 --steps 1 --warmup 0 --out prepared", "pass --no-memory-check to run it anyway");
  const auto r = run("prepare --seq-len 16 --steps 1 --warmup 0 --out prepared --no-memory-check", dir_);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir_ / "prepared/tokens.bin"));
  expect_refused("train --seq-len 16 --steps 1 --warmup 0", "memory: tiny lora");
  const auto t = run("train --seq-len 16 --steps 1 --warmup 0 --no-memory-check --out out.json", dir_);
  EXPECT_EQ(t.status, 0) << t.output;
  EXPECT_EQ(load("out.json")["status"]["state"], "ok");
}

// --- corrupt inputs ----------------------------------------------------------------------------

TEST_F(Faults, CorruptInputsAreRefusedBeforeLaunchWithExitTwo) {
  const std::string flags = " --seq-len 16 --warmup 0 --steps 2";
  ASSERT_EQ(run("prepare" + flags + " --out in", dir_).status, 0);
  fs::copy(path("in"), path("bad"), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  // Weights cut short: the header promises more bytes than the file holds.
  const auto weights = path("bad/checkpoint/model.safetensors");
  fs::resize_file(weights, fs::file_size(weights) / 2);
  expect_refused("train" + flags + " --checkpoint bad/checkpoint --data-file in/tokens.bin", "model.safetensors");
  // A token file whose magic is overwritten.
  {
    std::fstream f(path("bad/tokens.bin"), std::ios::in | std::ios::out | std::ios::binary);
    f.write("GARBAGE!", 8);
  }
  expect_refused("train" + flags + " --checkpoint in/checkpoint --data-file bad/tokens.bin", "--data-file: ");
  expect_refused("train" + flags + " --data-file bad/tokens.bin", "bad magic");
  expect_refused("train" + flags + " --data-file in", "--data-file: in is a folder, not a token file");
  // Refused before any rank started: no rank log anywhere.
  if (fs::exists(dir_ / "runs"))
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "runs")) EXPECT_NE(e.path().extension(), ".log") << e.path();
  // `analyze` of a truncated activity file.
  fs::create_directories(path("act"));
  std::ofstream(path("act/rank0.activity.json")) << "{\"rank\": 0, \"world_size\": 1, \"kernels\": [";
  expect_refused("analyze act", "act/rank0.activity.json");
}

TEST_F(Faults, ARankThatCannotReadItsDataFailsInPhaseDataNotRendezvous) {
  // The rank's own check, for a file that goes bad after the launcher's: one rank run directly.
  ASSERT_EQ(run("prepare --seq-len 16 --warmup 0 --steps 2 --out in", dir_).status, 0);
  ASSERT_EQ(run("train --seq-len 16 --warmup 0 --steps 1 --data-file in/tokens.bin --runs-dir r --out ok.json", dir_).status, 0);
  auto config = load("ok.json")["config"];
  config["data_file"] = path("in/checkpoint");  // a folder
  ddpbench::write_file_atomic(path("config.json"), config.dump());
  fs::create_directories(path("ranks"));
  const auto r = run("_worker --config config.json --out ranks", dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  const auto report = load("ranks/rank0.json");
  EXPECT_EQ(report["status"], "failed");
  EXPECT_EQ(report["phase"], "data") << report.dump();
  EXPECT_GT(report["failed_at"].get<double>(), 0);
}

// --- LoRA and data settings that contradict what the run would use -----------------------------

TEST_F(Faults, LoraSettingsThatContradictTheCheckpointAreRefused) {
  const std::string flags = " --seq-len 16 --warmup 0 --steps 1";
  ASSERT_EQ(run("prepare" + flags + " --out in", dir_).status, 0);  // r 16, alpha 32, all 7 modules
  const std::string ckpt = " --checkpoint in/checkpoint";
  expect_refused("train" + flags + ckpt + " --lora-alpha 16", "--lora-alpha: 16 differs from lora_alpha 32");
  expect_refused("train" + flags + ckpt + " --lora-targets q_proj,v_proj", "--lora-targets: q_proj,v_proj differs from target_modules");
  expect_refused("train" + flags + ckpt + " --lora-rank 8", "--lora-rank: 8 differs from r 16");
  expect_refused("train" + flags + " --lora-targets ''", "--lora-targets: empty");
  expect_refused("train" + flags + " --markov-states 1000000", "--markov-states: 1000000 is more than the 255 tokens");
}

// --- the rank that failed first is the one named ---------------------------------------------

// Overwrites token `position` of document `doc` of a token file (token_file.h's layout).
void corrupt_token(const std::string& file, std::uint64_t doc, std::uint64_t position, std::uint32_t id) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  std::uint64_t documents = 0;
  f.seekg(16);
  f.read(reinterpret_cast<char*>(&documents), 8);
  std::uint64_t offset = 0;
  for (std::uint64_t d = 0; d < doc; ++d) {
    std::uint32_t len = 0;
    f.seekg(static_cast<std::streamoff>(32 + 4 * d));
    f.read(reinterpret_cast<char*>(&len), 4);
    offset += len;
  }
  f.seekp(static_cast<std::streamoff>(32 + 4 * documents + 4 * (offset + position)));
  f.write(reinterpret_cast<const char*>(&id), 4);
}

TEST_F(Faults, TheFirstRankToFailIsNamedNotThePeerThatLostItsConnection) {
  const std::string flags = " --nproc 2 --seq-len 16 --warmup 0 --steps 4";
  ASSERT_EQ(run("prepare" + flags + " --out in", dir_).status, 0);
  // Global batch 4 (2 ranks x micro-batch 2): rank 1 reads documents 2 and 3 of each step's four,
  // so at step 2 documents 10 and 11.
  corrupt_token(path("in/tokens.bin"), 10, 3, 60000);
  const auto r = run("train" + flags + " --data-file in/tokens.bin --out out.json", dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  const auto doc = load("out.json");
  const auto& st = doc["status"];
  EXPECT_EQ(st["rank"], 1) << st.dump();
  EXPECT_EQ(st["phase"], "step 2") << st.dump();
  EXPECT_TRUE(contains(st["reason"].get<std::string>(), "document 10 token 3 has id 60000")) << st.dump();
  // What was measured before it stays: steps 0 and 1 on both ranks.
  EXPECT_EQ(st["completed_steps"], 2) << st.dump();
  EXPECT_EQ(doc["steps"].size(), 2u);
}

// --- measured steps survive a rank's death --------------------------------------------------------

std::size_t stream_lines(const fs::path& runs, int rank) {
  std::size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(runs))
    if (e.path().filename() == "rank" + std::to_string(rank) + ".steps.jsonl") n += lines(ddpbench::read_file(e.path().string()));
  return n;
}

// Waits until both ranks of the long train under dir have streamed at least `steps` steps.
bool wait_for_steps(const fs::path& dir, std::size_t steps) {
  for (int i = 0; i < 600; ++i) {
    if (stream_lines(dir / "runs", 0) >= steps && stream_lines(dir / "runs", 1) >= steps) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST_F(Faults, ARankKilledMidRunLeavesItsCompletedStepsInTheResult) {
  const pid_t pid = cli_helpers::start_long_train(dir_);
  ASSERT_GT(pid, 0) << "rank 0 logged no step";
  ASSERT_TRUE(wait_for_steps(dir_, 3));
  const pid_t rank1 = rank_process(pid, 1);
  ASSERT_GT(rank1, 0);
  ::kill(rank1, SIGKILL);  // no report from it: only its stream
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  const auto doc = load("out.json");
  const auto& status = doc["status"];
  EXPECT_EQ(status["state"], "failed");
  EXPECT_EQ(status["rank"], 1) << status.dump();  // killed, not rank 0 that lost its peer
  EXPECT_TRUE(contains(status["reason"].get<std::string>(), "signal 9")) << status.dump();
  EXPECT_GE(doc["steps"].size(), 3u);
  EXPECT_EQ(status["completed_steps"], doc["steps"].size());
  EXPECT_EQ(doc["summary"]["measured_steps"], doc["steps"].size());
  EXPECT_GT(doc["summary"]["tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(doc["ranks"].size(), 2u);
}

TEST_F(Faults, AnInterruptedRunKeepsEveryCompletedStep) {
  const pid_t pid = cli_helpers::start_long_train(dir_);
  ASSERT_GT(pid, 0) << "rank 0 logged no step";
  ASSERT_TRUE(wait_for_steps(dir_, 3));
  ::kill(pid, SIGINT);  // the ranks are ended by the launcher: neither writes a report
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  const auto doc = load("out.json");
  EXPECT_TRUE(contains(doc["status"]["reason"].get<std::string>(), "interrupted by signal 2")) << doc["status"].dump();
  EXPECT_GE(doc["steps"].size(), 3u);
  EXPECT_EQ(doc["status"]["completed_steps"], doc["steps"].size());
  EXPECT_GT(doc["steps"][0]["loss"].get<double>(), 0);
}

// --- a suite: every cell checked up front, a failing cell recorded, Ctrl-C stops it all -----------

TEST_F(Faults, EveryCellsInputsAreCheckedBeforeTheFirstCellRuns) {
  const std::string defaults = "[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\nnproc = 1\nmicro_batch = 1\nseq_len = 16\n"
                               "warmup = 0\nsteps = 1\n";
  std::ofstream(path("late.toml")) << "name = \"late\"\n" << defaults << "[[workload]]\nname = \"good\"\n"
                                   << "[[workload]]\nname = \"missing-data\"\ndata_file = \"no/such/tokens.bin\"\n";
  for (const std::string dry : {"", " --dry-run"})
    expect_refused("run late.toml" + dry, "cell missing-data/builtin/n1/b1/g1/s16: --data-file: no/such/tokens.bin does not exist");
  const std::string long_name(300, 'w');
  std::ofstream(path("long.toml")) << "name = \"long\"\n" << defaults << "[[workload]]\nname = \"good\"\n"
                                   << "[[workload]]\nname = \"" << long_name << "\"\n";
  for (const std::string dry : {"", " --dry-run"})
    expect_refused("run long.toml" + dry, "more than the 255 a file name may have");
  EXPECT_FALSE(fs::exists(dir_ / "runs"));  // nothing ran, not even the good cells
}

TEST_F(Faults, ACellThatFailsAtRunTimeIsRecordedAndTheSuiteGoesOn) {
  ASSERT_EQ(run("prepare --seq-len 16 --micro-batch 1 --warmup 0 --steps 2 --out in", dir_).status, 0);
  corrupt_token(path("in/tokens.bin"), 1, 2, 60000);  // step 1's only document: past every check before the run
  std::ofstream(path("s.toml")) << "name = \"mixed\"\n[defaults]\npreset = \"tiny\"\ndevice = \"cpu\"\nnproc = 1\n"
                                   "micro_batch = 1\nseq_len = 16\nwarmup = 0\nsteps = 2\n"
                                << "[[workload]]\nname = \"bad-token\"\ndata_file = \"" << path("in/tokens.bin") << "\"\n"
                                << "[[workload]]\nname = \"good\"\n";
  const auto r = run("run s.toml", dir_);
  EXPECT_EQ(r.status, 1) << r.output;
  const auto index = nlohmann::json::parse(ddpbench::read_file((run_dir() / "run.json").string()));
  EXPECT_EQ(index["state"], "done");
  ASSERT_EQ(index["cells"].size(), 2u) << index.dump(1);
  const std::string bad = index["cells"][0]["status"].get<std::string>();
  EXPECT_TRUE(contains(bad, "failed: rank 0 failed in step 1: ") && contains(bad, "has id 60000")) << bad;
  EXPECT_EQ(index["cells"][1]["status"], "ok");
  const auto doc = nlohmann::json::parse(ddpbench::read_file((run_dir() / index["cells"][0]["file"].get<std::string>()).string()));
  EXPECT_EQ(doc["status"]["completed_steps"], 1);  // step 0 was measured before step 1's bad token
  EXPECT_EQ(index["summary"].size(), 2u);
}

// Live processes whose command line mentions `text`.
std::size_t processes_mentioning(const std::string& text) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    try {
      std::string cmdline = ddpbench::read_file("/proc/" + name + "/cmdline");
      std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
      n += contains(cmdline, text);
    } catch (const std::exception&) {
      // ended meanwhile
    }
  }
  return n;
}

TEST_F(Faults, ASignalledSuiteStopsAndResumeRunsOnlyWhatIsMissing) {
  // The CPU smoke suite's LoRA cells (1 and 2 ranks): SIGTERM (Slurm's scancel) once the first is done.
  const pid_t pid = cli_helpers::spawn(dir_, {"run", "--filter", "lora-tiny"});
  ASSERT_GT(pid, 0);
  const bool first_done = cli_helpers::wait_for_file_text(dir_, "run.json", "\"status\": \"ok\"");
  ::kill(pid, SIGTERM);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(first_done);
  ASSERT_TRUE(WIFEXITED(st)) << "ended by signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  EXPECT_EQ(WEXITSTATUS(st), 128 + SIGTERM);
  const fs::path run = run_dir();
  EXPECT_EQ(processes_mentioning(run.string()), 0u);  // no rank left behind
  auto index = nlohmann::json::parse(ddpbench::read_file((run / "run.json").string()));
  EXPECT_EQ(index["state"], "interrupted") << index.dump(1);
  EXPECT_EQ(index["interrupted_by"], SIGTERM);
  // The first cell intact; the second (if it had started) ended and marked, never a third.
  ASSERT_GE(index["cells"].size(), 1u);
  ASSERT_LE(index["cells"].size(), 2u);
  EXPECT_EQ(index["cells"][0]["status"], "ok");
  const std::string first_file = index["cells"][0]["file"].get<std::string>();
  const auto first_doc = ddpbench::read_file((run / first_file).string());
  if (index["cells"].size() == 2) EXPECT_EQ(index["cells"][1]["status"].get<std::string>().rfind("interrupted: ", 0), 0u);
  ASSERT_EQ(index["summary"].size(), 2u);
  EXPECT_NE(index["summary"][1]["status"], "ok") << index["summary"].dump();  // interrupted, or not run

  const auto resumed = cli_helpers::run("run --resume " + run.string(), dir_);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming: 1 cell repeat(s) already done are kept")) << resumed.output;
  EXPECT_EQ(resumed.output.find("== lora-tiny/builtin/n1/"), std::string::npos) << resumed.output;  // not run again
  EXPECT_NE(resumed.output.find("== lora-tiny/builtin/n2/"), std::string::npos) << resumed.output;
  index = nlohmann::json::parse(ddpbench::read_file((run / "run.json").string()));
  EXPECT_EQ(index["state"], "done");
  ASSERT_EQ(index["cells"].size(), 2u);
  for (const auto& c : index["cells"]) EXPECT_EQ(c["status"], "ok") << c.dump();
  EXPECT_EQ(ddpbench::read_file((run / first_file).string()), first_doc);  // the kept document untouched
  ASSERT_EQ(index["summary"].size(), 2u);
  EXPECT_EQ(index["scaling"].size(), 2u);
  expect_refused("run --resume " + run.string() + " --filter x", "--resume: the run's own suite");
  expect_refused("run --resume nowhere", "--resume: nowhere/run.json does not exist");
}

}  // namespace
