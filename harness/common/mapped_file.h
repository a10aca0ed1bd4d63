// A whole file mapped read-only, unmapped when the owner goes: the one piece of code behind the
// readers of the binary formats (token files, safetensors checkpoints).
#pragma once
#include <cstddef>
#include <string>

namespace ddpbench {

class MappedFile {
 public:
  // Opens, stats and maps path. Messages start with `where` (for example "<path>: "):
  // UsageError "<where>cannot open: ..." / "<where>cannot stat: ...", UsageError
  // "<where>truncated: N bytes, <too_short_what>" for a file shorter than min_bytes, and
  // RunError "<where>cannot mmap: ...".
  MappedFile(const std::string& path, const std::string& where, std::size_t min_bytes, const std::string& too_short_what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void unmap() noexcept;

  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ddpbench
