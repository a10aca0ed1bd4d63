#include "launch/launch.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "common/error.h"

extern char** environ;

namespace ddpbench::launch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kTick{100};
// An escaped descendant (one that left the rank's process group) may hold a pipe open forever;
// past this we stop waiting for its end of file, since every rank has already been reaped.
constexpr milliseconds kDrainLimit{1000};
constexpr std::size_t kTailKeep = 64 * 1024;
constexpr int kTailLines = 20;

std::string errno_text(int err) { return std::strerror(err); }

std::string signal_text(int sig) {
  const char* d = sigdescr_np(sig);
  return "signal " + std::to_string(sig) + " (" + (d ? d : "unknown") + ")";
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// A descriptor that lands on 0, 1 or 2 (a caller that closed its stdio) would be clobbered by the
// child's dup2 onto those numbers, so every descriptor we hand to a child lives above them.
int above_stdio(int fd) {
  if (fd < 0 || fd > 2) return fd;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int err = errno;
  ::close(fd);
  errno = err;
  return moved;
}

std::pair<Fd, Fd> make_pipe(const std::string& what) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw RunError(what + ": pipe: " + errno_text(errno));
  Fd r(above_stdio(p[0]));
  Fd w(above_stdio(p[1]));
  if (!r || !w) throw RunError(what + ": pipe: " + errno_text(errno));
  return {std::move(r), std::move(w)};
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::string last_lines(const std::string& text, int n) {
  std::size_t end = text.size();
  while (end > 0 && text[end - 1] == '\n') --end;
  std::size_t pos = end;
  for (int i = 0; i < n; ++i) {
    if (pos == 0) return text.substr(0, end);
    std::size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text.substr(0, end);
    pos = nl;
    if (i == n - 1) return text.substr(nl + 1, end - nl - 1);
  }
  return text.substr(0, end);
}

int usable_cores() {
  // The affinity mask, not the machine's core count: under Slurm or taskset the launcher only owns
  // the CPUs it was given, and oversubscribing those is what OMP_NUM_THREADS is set to prevent.
  const auto cpus = usable_cpus();
  if (!cpus.empty()) return static_cast<int>(cpus.size());
  return std::max(1u, std::thread::hardware_concurrency());
}

void validate(const Spec& spec) {
  const Topology& t = spec.topology;
  if (spec.argv.empty()) throw UsageError("launch: no command to run");
  if (t.nproc_per_node < 1)
    throw UsageError("launch: nproc_per_node must be at least 1, got " + std::to_string(t.nproc_per_node));
  if (t.nnodes < 1) throw UsageError("launch: nnodes must be at least 1, got " + std::to_string(t.nnodes));
  if (t.node_rank < 0 || t.node_rank >= t.nnodes)
    throw UsageError("launch: node rank " + std::to_string(t.node_rank) + " is outside 0.." +
                     std::to_string(t.nnodes - 1));
  if (t.master_port < 0 || t.master_port > 65535)
    throw UsageError("launch: master port " + std::to_string(t.master_port) + " is outside 0..65535");
  if (t.master_port == 0 && t.nnodes > 1)
    throw UsageError("--master-port is required when running on " + std::to_string(t.nnodes) +
                     " nodes: a free port picked here means nothing to the other nodes");
  if (spec.log_dir.empty()) throw UsageError("launch: no log directory given");
}

// Blocks the signals the supervision loop reads through a signalfd, and gives the caller's mask back
// on the way out. Only the calling thread's mask changes, so there is no process-wide state to share.
class SignalRouting {
 public:
  SignalRouting() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE}) sigaddset(&set_, s);
    if (int rc = ::pthread_sigmask(SIG_BLOCK, &set_, &old_); rc != 0)
      throw RunError("launch: pthread_sigmask: " + errno_text(rc));
    fd_.reset(::signalfd(-1, &set_, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd_) {
      int err = errno;
      ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
      throw RunError("launch: signalfd: " + errno_text(err));
    }
  }
  ~SignalRouting() {
    // A SIGPIPE raised by our own echo write would kill the caller once unblocked; SIGCHLD is ours.
    // A SIGINT/SIGTERM/SIGHUP that arrives after the loop stays pending, so the caller still gets it.
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGPIPE);
    sigaddset(&mine, SIGCHLD);
    timespec zero{};
    while (::sigtimedwait(&mine, nullptr, &zero) > 0) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SignalRouting(const SignalRouting&) = delete;
  SignalRouting& operator=(const SignalRouting&) = delete;
  int fd() const { return fd_.get(); }

 private:
  sigset_t set_;
  sigset_t old_;
  Fd fd_;
};

// The processes whose parent is `parent` (zombies included), from /proc.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isdigit(c); })) continue;
    std::ifstream in("/proc/" + name + "/stat");
    const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 1));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid && ppid == parent) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

// Makes this process the subreaper of everything the ranks start (PR_SET_CHILD_SUBREAPER): a
// descendant that leaves its rank's process group (setsid, a daemon's double fork) is re-parented
// here when its parent dies, instead of to init, so it can be found and ended with the ranks. Our
// children from before run() are not touched; the callers start no other children while run()
// supervises (one thread), so any other child of ours is such an adopted descendant.
class Subreaper {
 public:
  Subreaper() {
    int was = 0;
    if (::prctl(PR_GET_CHILD_SUBREAPER, &was) == 0 && was == 0) set_here_ = ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
    for (pid_t p : children_of(::getpid())) before_.insert(p);
  }
  ~Subreaper() {
    end_adopted();
    if (set_here_) ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
  Subreaper(const Subreaper&) = delete;
  Subreaper& operator=(const Subreaper&) = delete;

  // SIGKILLs and reaps every adopted descendant; killing one re-parents its own children here, so
  // this repeats until none is left. Called once no rank runs: an adopted process cannot be told
  // apart from a live rank's helper, and the ranks themselves are reaped by the supervisor.
  void end_adopted() {
    for (int round = 0; round < 100; ++round) {
      std::vector<pid_t> adopted;
      for (pid_t p : children_of(::getpid()))
        if (!before_.count(p)) adopted.push_back(p);
      if (adopted.empty()) return;
      // Our unreaped children: their pids cannot be reused until we wait for them, so these
      // signals cannot reach an unrelated process.
      for (pid_t p : adopted) ::kill(p, SIGKILL);
      for (pid_t p : adopted)
        while (::waitpid(p, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
  }

 private:
  bool set_here_ = false;
  std::set<pid_t> before_;
};

struct Rank {
  int local = 0;
  int global = 0;
  pid_t pid = -1;  // also the process group id: the child calls setsid()
  Fd out;          // read end of the rank's stdout+stderr pipe; reset at end of file
  Fd log;
  std::string log_path;
  std::string tail;
  Clock::time_point last_output;
  bool reaped = false;
  int exit_code = -1;
  int signal = 0;
  bool killed_by_launcher = false;
  std::string start_error;
  bool log_failed = false;
  std::string beat_path;  // its heartbeat file
  std::optional<std::filesystem::file_time_type> beat_mtime;
  Clock::time_point last_beat;
  std::string last_phase;  // what the heartbeat file last said

  bool running() const { return pid > 0 && !reaped; }
  std::string name(int node) const {
    return "rank " + std::to_string(global) + " (node " + std::to_string(node) + ", local " +
           std::to_string(local) + ")";
  }
};

// Everything the child needs, prepared before fork(): after fork only async-signal-safe calls are
// allowed, because another thread may have held the allocator's lock at the moment of the fork.
struct ChildPlan {
  char* const* argv;
  char* const* envp;
  int out_fd;
  int stdin_fd;
  int err_fd;
  pid_t parent;
  const cpu_set_t* affinity;  // null: the launcher's
};

[[noreturn]] void child_exec(const ChildPlan& p) {
  ::setsid();
  // If the launcher dies without tearing down (SIGKILL, OOM), the rank should not outlive it.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != p.parent) ::_exit(127);
  // Ignored dispositions survive exec (a launcher under nohup ignores SIGHUP and SIGINT), and the
  // mask holds SIGTERM blocked; a rank must be stoppable by the teardown, so start it clean.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s)
    if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::dup2(p.stdin_fd, 0) < 0 || ::dup2(p.out_fd, 1) < 0 || ::dup2(p.out_fd, 2) < 0) {
    int err = errno;
    (void)!::write(p.err_fd, &err, sizeof err);
    ::_exit(127);
  }
  if (p.affinity && ::sched_setaffinity(0, sizeof(cpu_set_t), p.affinity) != 0) {
    int err = errno;
    (void)!::write(p.err_fd, &err, sizeof err);
    ::_exit(127);
  }
  // PATH is searched in the launcher's environment (glibc's execvpe), not in extra_env.
  ::execvpe(p.argv[0], p.argv, p.envp);
  int err = errno;
  (void)!::write(p.err_fd, &err, sizeof err);
  ::_exit(127);
}

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& over) {
  std::map<std::string, std::string> all;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    all.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  for (const auto& [k, v] : over) all[k] = v;
  std::vector<std::string> out;
  out.reserve(all.size());
  for (const auto& [k, v] : all) out.push_back(k + "=" + v);
  return out;
}

class Supervisor {
 public:
  Supervisor(const Spec& spec, int port) : spec_(spec), port_(port) {}

  // The safety net for an exception thrown mid-run: nothing we started may outlive run().
  ~Supervisor() {
    for (auto& r : ranks_) {
      if (!r.running()) continue;
      ::kill(-r.pid, SIGKILL);
      while (::waitpid(r.pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  Outcome run();

 private:
  void open_logs();
  void start(Rank& r);
  void record(Rank& r, const char* data, std::size_t n);
  void read_output(Rank& r);
  void read_signals();
  void reap();
  void check_deadlines(Clock::time_point now);
  void read_heartbeat(Rank& r, Clock::time_point now);
  void begin_teardown(Clock::time_point now);
  void fail(Rank& r, std::string reason);
  bool has_exited(const Rank& r) const;
  std::string running_list() const;
  Outcome outcome() const;

  const Spec& spec_;
  const int port_;
  SignalRouting signals_;
  Subreaper subreaper_;  // destroyed after ~Supervisor has reaped the ranks
  std::vector<Rank> ranks_;
  Clock::time_point start_;
  bool echo_ = false;
  bool teardown_ = false;
  bool timed_out_ = false;
  Clock::time_point kill_at_;
  bool sent_kill_ = false;
  std::optional<int> failed_;  // index into ranks_
  std::string reason_;
  int interrupted_by_ = 0;
};

void Supervisor::open_logs() {
  std::error_code ec;
  std::filesystem::create_directories(spec_.log_dir, ec);
  if (ec) throw RunError("cannot create log directory " + spec_.log_dir + ": " + ec.message());
  const Topology& t = spec_.topology;
  ranks_.resize(static_cast<std::size_t>(t.nproc_per_node));
  for (int i = 0; i < t.nproc_per_node; ++i) {
    Rank& r = ranks_[static_cast<std::size_t>(i)];
    r.local = i;
    r.global = t.global_rank(i);
    r.log_path = (std::filesystem::path(spec_.log_dir) / ("rank" + std::to_string(r.global) + ".log")).string();
    r.beat_path = (std::filesystem::path(spec_.log_dir) / ("rank" + std::to_string(r.global) + ".heartbeat")).string();
    std::filesystem::remove(r.beat_path, ec);  // a beat of an earlier run is not one of this rank
    r.log.reset(::open(r.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!r.log) throw RunError("cannot write " + r.log_path + ": " + errno_text(errno));
  }
}

void Supervisor::start(Rank& r) {
  const std::string what = "cannot start rank " + std::to_string(r.global);
  std::vector<std::string> args = spec_.argv;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto rank_env = rank_environment(spec_, r.local, port_);
  rank_env[kHeartbeatFileEnv] = r.beat_path;
  std::vector<std::string> env = merged_environment(rank_env);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  auto [out_r, out_w] = make_pipe(what);
  auto [err_r, err_w] = make_pipe(what);
  Fd devnull(above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  if (!devnull) throw RunError(what + ": /dev/null: " + errno_text(errno));
  cpu_set_t affinity;
  CPU_ZERO(&affinity);
  if (spec_.bind_cpus)
    for (int cpu : cpu_share(usable_cpus(), spec_.topology.nproc_per_node, r.local))
      if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &affinity);
  const bool bind = spec_.bind_cpus && CPU_COUNT(&affinity) > 0;
  ChildPlan plan{argv.data(), envp.data(), out_w.get(), devnull.get(), err_w.get(), ::getpid(), bind ? &affinity : nullptr};

  r.last_output = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) child_exec(plan);
  if (pid < 0) {
    r.start_error = "fork: " + errno_text(errno);
    r.reaped = true;
    std::string line = what + ": " + r.start_error + "\n";
    record(r, line.data(), line.size());
    fail(r, r.name(spec_.topology.node_rank) + " could not start: " + r.start_error);
    return;
  }
  r.pid = pid;
  r.out = std::move(out_r);
  out_w.reset();
  err_w.reset();
  // The error pipe closes on a successful exec, so this read also guarantees setsid() has run and
  // the process group exists before anyone may signal it.
  int child_errno = 0;
  ssize_t n;
  while ((n = ::read(err_r.get(), &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    r.start_error = (plan.affinity ? "sched_setaffinity or execvp(" : "execvp(") + spec_.argv[0] + "): " +
                    errno_text(child_errno);
    std::string line = what + ": " + r.start_error + "\n";
    record(r, line.data(), line.size());
  }
}

void Supervisor::record(Rank& r, const char* data, std::size_t n) {
  if (n == 0) return;
  r.last_output = Clock::now();
  if (!r.log_failed && !write_all(r.log.get(), data, n)) {
    r.log_failed = true;
    std::string msg = "ddpbench: cannot write " + r.log_path + ": " + errno_text(errno) + "\n";
    write_all(STDERR_FILENO, msg.data(), msg.size());
  }
  r.tail.append(data, n);
  if (r.tail.size() > 2 * kTailKeep) r.tail.erase(0, r.tail.size() - kTailKeep);
  if (echo_ && r.local == 0 && !write_all(STDOUT_FILENO, data, n)) echo_ = false;  // reader went away
}

void Supervisor::read_output(Rank& r) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(r.out.get(), buf, sizeof buf);
    if (n > 0) {
      record(r, buf, static_cast<std::size_t>(n));
      // One read per wakeup keeps a chatty rank from starving the others and the deadlines.
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    r.out.reset();  // end of file, or an error that will not go away
    return;
  }
}

void Supervisor::read_signals() {
  signalfd_siginfo info;
  while (::read(signals_.fd(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    int sig = static_cast<int>(info.ssi_signo);
    // A closed terminal or ssh session (SIGHUP) stops the run as Ctrl-C does: the ranks are ended
    // and the caller still writes its result. SIGCHLD only wakes us; SIGPIPE is handled by write.
    if (sig != SIGINT && sig != SIGTERM && sig != SIGHUP) continue;
    if (teardown_) {
      // A second interrupt while stopping means "now": skip the rest of the grace period.
      kill_at_ = Clock::now();
      continue;
    }
    reason_ = "interrupted by " + signal_text(sig) + "; ranks still running: " + running_list();
    interrupted_by_ = sig;
    begin_teardown(Clock::now());
  }
}

bool Supervisor::has_exited(const Rank& r) const {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  if (::waitid(P_PID, static_cast<id_t>(r.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;  // someone else reaped it (SIGCHLD set to SIG_IGN): it is gone
  return info.si_pid != 0;
}

void Supervisor::reap() {
  for (auto& r : ranks_) {
    if (!r.running() || !has_exited(r)) continue;
    // The leader is a zombie now, so its pid (and thus the group id) cannot be reused yet: this
    // is the one moment the group can be killed without risk of hitting an unrelated process.
    ::kill(-r.pid, SIGKILL);
    int status = 0;
    pid_t got;
    while ((got = ::waitpid(r.pid, &status, 0)) < 0 && errno == EINTR) {
    }
    r.reaped = true;
    if (got == r.pid && WIFEXITED(status)) {
      r.exit_code = WEXITSTATUS(status);
    } else if (got == r.pid && WIFSIGNALED(status)) {
      r.signal = WTERMSIG(status);
    } else {
      r.start_error = r.start_error.empty() ? "exit status lost (reaped elsewhere)" : r.start_error;
    }
    if (teardown_ || (r.exit_code == 0 && r.signal == 0)) continue;
    std::string why = r.name(spec_.topology.node_rank);
    if (r.signal != 0) {
      why += " was killed by " + signal_text(r.signal);
    } else if (!r.start_error.empty() && r.exit_code == 127) {
      why += " could not start: " + r.start_error + " (exit status 127)";
    } else if (r.exit_code >= 0) {
      why += " exited with status " + std::to_string(r.exit_code);
    } else {
      why += " ended: " + r.start_error;
    }
    fail(r, why);
  }
}

void Supervisor::fail(Rank& r, std::string reason) {
  if (teardown_) return;
  failed_ = static_cast<int>(&r - ranks_.data());
  reason_ = std::move(reason);
  begin_teardown(Clock::now());
}

void Supervisor::begin_teardown(Clock::time_point now) {
  teardown_ = true;
  kill_at_ = now + spec_.kill_grace;
  for (auto& r : ranks_) {
    // A rank that already ended on its own (and waits to be reaped) was not stopped by us.
    if (!r.running() || has_exited(r)) continue;
    r.killed_by_launcher = true;
    ::kill(-r.pid, SIGTERM);
    ::kill(-r.pid, SIGCONT);  // a stopped process would hold SIGTERM pending until continued
  }
}

void Supervisor::check_deadlines(Clock::time_point now) {
  if (teardown_) {
    if (!sent_kill_ && now >= kill_at_) {
      sent_kill_ = true;
      for (auto& r : ranks_)
        if (r.running()) ::kill(-r.pid, SIGKILL);
    }
    return;
  }
  if (now - start_ >= spec_.timeout) {
    timed_out_ = true;
    reason_ = "timed out after " +
              seconds_text(std::chrono::duration<double>(spec_.timeout).count()) +
              "; ranks still running: " + running_list();
    begin_teardown(now);
    return;
  }
  if (spec_.stall_timeout.count() > 0) {
    for (auto& r : ranks_) {
      if (!r.running()) continue;
      read_heartbeat(r, now);
      if (!r.beat_mtime || now - r.last_beat < spec_.stall_timeout) continue;
      fail(r, r.name(spec_.topology.node_rank) + " stalled in " + (r.last_phase.empty() ? "unknown" : r.last_phase) +
                  ": no heartbeat for " + seconds_text(std::chrono::duration<double>(now - r.last_beat).count()) +
                  " (the process is stopped or frozen; stall timeout " +
                  seconds_text(std::chrono::duration<double>(spec_.stall_timeout).count()) + ")");
      return;
    }
  }
  if (spec_.heartbeat_timeout.count() > 0) {
    for (auto& r : ranks_) {
      if (!r.running() || now - r.last_output < spec_.heartbeat_timeout) continue;
      timed_out_ = true;
      fail(r, r.name(spec_.topology.node_rank) + " printed nothing for " +
                  seconds_text(std::chrono::duration<double>(now - r.last_output).count()) +
                  " (heartbeat timeout " +
                  seconds_text(std::chrono::duration<double>(spec_.heartbeat_timeout).count()) +
                  "); presumed hung");
      return;
    }
  }
}

void Supervisor::read_heartbeat(Rank& r, Clock::time_point now) {
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(r.beat_path, ec);
  if (ec || (r.beat_mtime && *r.beat_mtime == mtime)) return;
  r.beat_mtime = mtime;
  r.last_beat = now;
  std::ifstream in(r.beat_path);
  std::string phase;
  // Read while the rank may be rewriting it: an empty read keeps the phase we had.
  if (std::getline(in, phase) && !phase.empty()) r.last_phase = phase;
}

std::string Supervisor::running_list() const {
  std::string out;
  for (const auto& r : ranks_) {
    if (!r.running()) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(r.global);
  }
  return out.empty() ? "none" : out;
}

Outcome Supervisor::run() {
  start_ = Clock::now();
  open_logs();
  echo_ = spec_.echo_rank0;
  // Our echo writes go straight to the descriptor; anything the caller left in stdio buffers
  // should come out before them, not after.
  std::fflush(stdout);
  std::fflush(stderr);
  for (auto& r : ranks_) {
    if (teardown_) break;  // an earlier rank could not be forked; do not start more
    start(r);
  }
  for (auto& r : ranks_)
    if (!r.running() && !r.reaped) r.reaped = true;  // never started

  std::optional<Clock::time_point> drain_until;
  std::vector<pollfd> fds;
  std::vector<Rank*> owners;
  for (;;) {
    reap();
    auto now = Clock::now();
    check_deadlines(now);
    bool all_reaped = std::all_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return !r.running(); });
    bool all_closed = std::all_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return !r.out; });
    if (all_reaped && !drain_until) {
      // Descendants that left their rank's process group may hold its output pipe open.
      subreaper_.end_adopted();
      drain_until = now + kDrainLimit;
    }
    if (all_reaped && (all_closed || now >= *drain_until)) break;

    fds.clear();
    owners.clear();
    fds.push_back({signals_.fd(), POLLIN, 0});
    owners.push_back(nullptr);
    for (auto& r : ranks_) {
      if (!r.out) continue;
      fds.push_back({r.out.get(), POLLIN, 0});
      owners.push_back(&r);
    }
    milliseconds wait = kTick;
    auto until = [&](Clock::time_point t) {
      auto left = std::chrono::duration_cast<milliseconds>(t - now) + milliseconds(1);
      wait = std::clamp(left, milliseconds(0), wait);
    };
    if (teardown_ && !sent_kill_) until(kill_at_);
    if (!teardown_) until(start_ + spec_.timeout);
    if (drain_until) until(*drain_until);
    int rc = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
    if (rc < 0 && errno != EINTR) throw RunError("launch: poll: " + errno_text(errno));
    if (rc <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (owners[i] == nullptr)
        read_signals();
      else
        read_output(*owners[i]);
    }
  }
  for (auto& r : ranks_) r.out.reset();
  subreaper_.end_adopted();
  return outcome();
}

Outcome Supervisor::outcome() const {
  Outcome o;
  o.timed_out = timed_out_;
  o.reason = reason_;
  o.interrupted_by = interrupted_by_;
  bool all_zero = true;
  for (const auto& r : ranks_) {
    RankExit e;
    e.global_rank = r.global;
    e.local_rank = r.local;
    e.exit_code = r.exit_code;
    e.signal = r.signal;
    e.killed_by_launcher = r.killed_by_launcher;
    e.log_path = r.log_path;
    o.ranks.push_back(e);
    if (r.pid <= 0 || r.exit_code != 0 || r.signal != 0) all_zero = false;
  }
  o.ok = all_zero && !teardown_;
  if (failed_) {
    const Rank& r = ranks_[static_cast<std::size_t>(*failed_)];
    o.failed_rank = r.global;
    o.failed_log_tail = last_lines(r.tail, kTailLines);
    o.failed_phase = r.last_phase;
  }
  if (!o.ok && o.reason.empty()) o.reason = "ranks did not all exit with status 0";
  o.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  return o;
}

}  // namespace

struct HeartbeatWriter::State {
  std::string path;
  std::chrono::milliseconds every;
  std::mutex mutex;
  std::condition_variable wake;
  std::string phase = "setup";
  bool stop = false;
  std::thread thread;

  void beat() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stop) {
      const std::string line = phase + "\n";
      lock.unlock();
      // Rewritten in place (no rename): every write moves the file's mtime, which is the beat.
      Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (fd) (void)write_all(fd.get(), line.data(), line.size());
      lock.lock();
      wake.wait_for(lock, every, [this] { return stop; });
    }
  }
};

HeartbeatWriter::HeartbeatWriter(std::string path, std::chrono::milliseconds every) : state_(std::make_unique<State>()) {
  state_->path = std::move(path);
  state_->every = every;
  state_->thread = std::thread([s = state_.get()] { s->beat(); });
}

HeartbeatWriter::~HeartbeatWriter() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
}

void HeartbeatWriter::phase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->phase = phase;
}

std::unique_ptr<HeartbeatWriter> HeartbeatWriter::from_environment() {
  const char* path = std::getenv(kHeartbeatFileEnv);
  if (!path || !*path) return nullptr;
  return std::make_unique<HeartbeatWriter>(path, std::chrono::milliseconds(500));
}

std::vector<int> usable_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

std::vector<int> cpu_share(const std::vector<int>& cpus, int nproc, int local_rank) {
  const int n = static_cast<int>(cpus.size());
  if (n == 0 || nproc < 1 || local_rank < 0 || local_rank >= nproc) return {};
  if (n < nproc) return {cpus[static_cast<std::size_t>(local_rank % n)]};
  const int base = n / nproc, extra = n % nproc;
  const int first = local_rank * base + std::min(local_rank, extra);
  const int count = base + (local_rank < extra ? 1 : 0);
  return {cpus.begin() + first, cpus.begin() + first + count};
}

const std::vector<std::string>& rendezvous_variables() {
  static const std::vector<std::string> names{"RANK",       "LOCAL_RANK", "WORLD_SIZE",  "LOCAL_WORLD_SIZE",
                                              "GROUP_RANK", "NODE_RANK",  "MASTER_ADDR", "MASTER_PORT"};
  return names;
}

std::map<std::string, std::string> rank_environment(const Spec& spec, int local_rank, int master_port) {
  const Topology& t = spec.topology;
  int threads = spec.threads_per_rank > 0 ? spec.threads_per_rank
                                          : std::max(1, usable_cores() / std::max(1, t.nproc_per_node));
  std::map<std::string, std::string> env{
      {"RANK", std::to_string(t.global_rank(local_rank))},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"WORLD_SIZE", std::to_string(t.world_size())},
      {"LOCAL_WORLD_SIZE", std::to_string(t.nproc_per_node)},
      {"GROUP_RANK", std::to_string(t.node_rank)},
      {"NODE_RANK", std::to_string(t.node_rank)},
      {"MASTER_ADDR", t.master_addr},
      {"MASTER_PORT", std::to_string(master_port)},
      {"OMP_NUM_THREADS", std::to_string(threads)},
  };
  for (const auto& [k, v] : spec.extra_env) env[k] = v;
  return env;
}

Outcome run(const Spec& spec) {
  validate(spec);
  // Picked once, so that every rank of this run meets at the same port.
  int port = spec.topology.master_port != 0 ? spec.topology.master_port : pick_free_port();
  Supervisor supervisor(spec, port);
  return supervisor.run();
}

}  // namespace ddpbench::launch
