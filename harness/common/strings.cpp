#include "common/strings.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"

namespace ddpbench {

void rethrow_with_context(const std::string& what) {
  try {
    throw;
  } catch (const UsageError& e) {
    throw UsageError(what + ": " + e.what());
  } catch (const std::exception& e) {
    throw RunError(what + ": " + e.what());
  }
}

std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    auto pos = text.find(sep, start);
    parts.emplace_back(text.substr(start, pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::optional<double> parse_double(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::string copy(text);
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(copy.c_str(), &end);
  if (errno != 0 || end != copy.c_str() + copy.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::string format_si(double value, int precision) {
  const char* suffix[] = {"", "k", "M", "G", "T", "P"};
  int i = 0;
  double v = value;
  // Choose the unit after rounding, so that 999999 reads 1.0M rather than 1000.0k.
  const double round_up = 1000.0 - 0.5 * std::pow(10.0, -precision);
  while (std::fabs(v) >= (i == 0 ? 1000.0 : round_up) && i < 5) {
    v /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f%s", i == 0 ? 0 : precision, v, suffix[i]);
  return buf;
}

std::string format_bytes(double bytes) {
  const char* suffix[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024.0 && i < 4) {
    bytes /= 1024.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f %s", i == 0 ? 0 : 2, bytes, suffix[i]);
  return buf;
}

std::string getenv_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}

std::string utc_timestamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunError("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RunError("cannot write " + tmp + ": " + std::strerror(errno));
  // Every failure from here on removes the temp file: a failed write leaves nothing beside path.
  auto fail = [&](const std::string& what, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw RunError(what + ": " + std::strerror(err));
  };
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write " + tmp, errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot flush " + tmp, errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) fail("cannot flush " + tmp, errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " to " + path, errno);
}

void check_output_file(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) throw UsageError(flag + ": empty path");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw UsageError(flag + ": " + path + " is a folder, not a file");
  const fs::path parent = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  if (!fs::is_directory(parent, ec)) throw UsageError(flag + ": folder " + parent.string() + " of " + path + " does not exist");
  // The temp file goes beside path, so the folder itself must take new files.
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    throw UsageError(flag + ": cannot write into " + parent.string() + ": " + std::strerror(errno));
}

void check_runs_dir(const std::string& flag, const std::string& dir) {
  if (dir.empty()) throw UsageError(flag + ": empty path (run folders would land in /)");
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec))
    throw UsageError(flag + ": " + dir + " exists and is not a folder");
}

ShellOutput run_shell_capture(const std::string& command) {
  ShellOutput r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[256];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status)) r.exit_status = WEXITSTATUS(status);
  return r;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string new_run_id() {
  std::random_device rd;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%04x", rd() & 0xffff);
  std::string ts = utc_timestamp();  // 2026-11-28T01:35:02Z
  std::string compact;
  for (char c : ts)
    if (std::isdigit(static_cast<unsigned char>(c))) compact += c;
  return compact.substr(0, 8) + "-" + compact.substr(8, 6) + "-" + suffix;
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw RunError("cannot create folder " + path + ": " + ec.message());
}

std::string self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw RunError("cannot find this executable through /proc/self/exe: " + ec.message());
  return p.string();
}

}  // namespace ddpbench
