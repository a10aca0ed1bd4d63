// Small text and file helpers shared by the CLI, the results, the suite code and orchestration.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ddpbench {

std::vector<std::string> split(std::string_view text, char sep);
std::optional<std::int64_t> parse_int(std::string_view text);
std::optional<double> parse_double(std::string_view text);
std::string format_si(double value, int precision = 1);  // 12345 -> "12.3k"
std::string format_bytes(double bytes);                  // 1.5 GiB
std::string getenv_or(const char* name, const std::string& fallback);
std::string utc_timestamp();                              // 2026-11-28T01:02:03Z
std::string read_file(const std::string& path);           // throws RunError naming the path
// A shell command's exit status (-1: it could not run, or a signal ended it) and standard output.
struct ShellOutput {
  int exit_status = -1;
  std::string out;
};
ShellOutput run_shell_capture(const std::string& command);
std::string shell_quote(const std::string& s);  // 'it'\''s' for /bin/sh
// Writes to path.tmp, fsyncs and renames, so a reader never sees half a file; on any failure the
// temp file is removed.
void write_file_atomic(const std::string& path, const std::string& content);
// Checks made before a run starts, so that a bad output path is one line and exit 2 (UsageError
// naming `flag`), not a finished run that cannot be saved. check_output_file: path is not a folder
// and its folder exists and is writable. check_runs_dir: not empty, and not an existing non-folder.
void check_output_file(const std::string& flag, const std::string& path);
void check_runs_dir(const std::string& flag, const std::string& dir);
// "20261128-013502-4f2a": sortable, unique enough for one machine.
std::string new_run_id();
// mkdir -p; RunError naming the path.
void make_dirs(const std::string& path);
// The path of this executable, for starting ranks of the same binary.
std::string self_executable();

}  // namespace ddpbench
