// What the command-line tests share: running the binary, and starting and finding the processes
// of a long run to inject faults into (signals to the launcher or to one rank).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"

namespace cli_helpers {

namespace fs = std::filesystem;

struct Result {
  int status = -1;
  std::string output;  // stdout and stderr together
  std::string err;     // stderr alone
};

inline Result run(const std::string& args, const fs::path& cwd) {
  const fs::path err_file = cwd / "stderr.txt";
  const std::string cmd = "cd '" + cwd.string() + "' && '" DDPBENCH_BINARY "' " + args + " 2>'" + err_file.string() + "'";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream in(err_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  r.output += r.err;
  return r;
}

// Sets an environment variable for the tests of one scope (the binary inherits it through popen).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

inline std::size_t lines(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Starts the binary with `args` in dir, its output to /dev/null; the pid, -1 when fork fails.
inline pid_t spawn(const fs::path& dir, const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv{const_cast<char*>(DDPBENCH_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(DDPBENCH_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to 60 s (a loaded machine) for a file named `name` under dir/runs that holds `needle`.
inline bool wait_for_file_text(const fs::path& dir, const std::string& name, const std::string& needle) {
  for (int i = 0; i < 600; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!fs::exists(dir / "runs")) continue;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir / "runs", ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->path().filename() != name) continue;
      try {
        if (ddpbench::read_file(it->path().string()).find(needle) != std::string::npos) return true;
      } catch (const std::exception&) {
        // replaced meanwhile (an atomic write)
      }
    }
  }
  return false;
}

// Starts a long 2-rank `ddpbench train` (a 300 ms delay per step) in dir and returns its pid once
// rank 0 has logged its first step (-1 if it did not within 60 s).
inline pid_t start_long_train(const fs::path& dir) {
  const pid_t pid = spawn(dir, {"train", "--nproc", "2", "--seq-len", "16", "--warmup", "0", "--steps", "200",
                                "--debug-step-delay-ms", "300", "--out", "out.json"});
  if (pid < 0) return -1;
  if (wait_for_file_text(dir, "rank0.log", "step ")) return pid;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// The child of `parent` whose environment holds RANK=<rank>; -1 if none.
inline pid_t rank_process(pid_t parent, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat, environ;
    try {
      stat = ddpbench::read_file("/proc/" + name + "/stat");
      environ = ddpbench::read_file("/proc/" + name + "/environ");
    } catch (const std::exception&) {
      continue;  // ended meanwhile
    }
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos || std::stol(stat.substr(paren + 4)) != parent) continue;
    if (("\0" + environ).find(std::string("\0RANK=", 6) + std::to_string(rank) + '\0') != std::string::npos)
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

}  // namespace cli_helpers
