#include "train/safetensors.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <unistd.h>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/mapped_file.h"

namespace ddpbench::train::safetensors {

// The header length is stored little-endian and read and written as a plain copy.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using nlohmann::json;

// The limit of the reference implementation (Rust safetensors): a larger value means a corrupt file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

std::optional<std::size_t> size_of(std::string_view dtype) {
  static constexpr std::array<std::pair<std::string_view, std::size_t>, 10> kSizes{{
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1},
  }};
  for (const auto& [name, size] : kSizes)
    if (name == dtype) return size;
  return std::nullopt;
}

// Elements * element size, or nullopt when a dimension is negative or the product overflows.
std::optional<std::uint64_t> byte_count(const std::vector<std::int64_t>& shape, std::size_t element) {
  std::uint64_t n = element;
  for (auto d : shape) {
    if (d < 0) return std::nullopt;
    const auto u = static_cast<std::uint64_t>(d);
    if (u != 0 && n > std::numeric_limits<std::uint64_t>::max() / u) return std::nullopt;
    n *= u;
  }
  return n;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Closes the descriptor and removes the temporary file unless released, so that a failed write
// leaves neither a descriptor nor a stray path.tmp behind.
class TmpFile {
 public:
  explicit TmpFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw RunError("cannot write " + path_ + ": " + std::strerror(errno));
  }
  ~TmpFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!kept_) ::unlink(path_.c_str());
  }
  TmpFile(const TmpFile&) = delete;
  TmpFile& operator=(const TmpFile&) = delete;

  void write(const void* data, std::size_t bytes) {
    // Linux moves at most about 2 GiB per call; the loop also covers short writes.
    constexpr std::size_t kChunk = std::size_t{1} << 30;
    const auto* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::write(fd_, p, std::min(bytes, kChunk));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw RunError("cannot write " + path_ + ": " + std::strerror(errno));
      }
      p += n;
      bytes -= static_cast<std::size_t>(n);
    }
  }

  void commit(const std::string& target) {
    if (::fsync(fd_) != 0) throw RunError("cannot flush " + path_ + ": " + std::strerror(errno));
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw RunError("cannot close " + path_ + ": " + std::strerror(errno));
    if (std::rename(path_.c_str(), target.c_str()) != 0)
      throw RunError("cannot rename " + path_ + " to " + target + ": " + std::strerror(errno));
    kept_ = true;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool kept_ = false;
};

}  // namespace

std::size_t dtype_size(const std::string& dtype) {
  if (auto size = size_of(dtype)) return *size;
  throw UsageError("unknown safetensors dtype '" + dtype + "' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

void write(const std::string& path, const std::vector<TensorData>& tensors, const std::map<std::string, std::string>& metadata) {
  const std::string where = path + ": ";
  json header = json::object();
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string what = where + "tensor '" + t.name + "': ";
    if (t.name.empty() || t.name == kMetadataKey) throw UsageError(what + "the name is empty or reserved");
    if (!names.insert(t.name).second) throw UsageError(what + "the name is given twice");
    const auto element = size_of(t.dtype);
    if (!element) throw UsageError(what + "unknown dtype '" + t.dtype + "'");
    const auto expected = byte_count(t.shape, *element);
    if (!expected) throw UsageError(what + "invalid shape " + shape_text(t.shape));
    if (*expected != t.bytes)
      throw UsageError(what + "has " + std::to_string(t.bytes) + " bytes but shape " + shape_text(t.shape) + " of " + t.dtype +
                       " needs " + std::to_string(*expected));
    if (t.bytes > 0 && t.data == nullptr) throw UsageError(what + "no data");
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // a name or metadata value that is not valid UTF-8
    throw UsageError(where + "cannot encode the header: " + e.what());
  }
  // Readers may map the buffer and use tensors in place: start it on an 8-byte boundary.
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t length = text.size();

  TmpFile out(path + ".tmp." + std::to_string(::getpid()));
  out.write(&length, sizeof length);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) out.write(t.data, t.bytes);
  out.commit(path);
}

File::File(const std::string& path)
    : path_(path), map_(path, path + ": ", 8, "too short for the 8-byte header length") {
  const std::string where = path + ": ";
  const unsigned char* const base = map_.data();
  const std::size_t size = map_.size();
  std::uint64_t length = 0;
  std::memcpy(&length, base, sizeof length);
  if (length < 2 || length > kMaxHeaderBytes)
    throw UsageError(where + "implausible header length " + std::to_string(length) + " (not a safetensors file?)");
  if (length > size - 8)
    throw UsageError(where + "truncated: the header is " + std::to_string(length) + " bytes but the file has only " +
                     std::to_string(size) + " bytes");
  json header;
  try {
    header = json::parse(base + 8, base + 8 + length);
  } catch (const json::exception& e) {
    throw UsageError(where + "the header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw UsageError(where + "the header is not a JSON object");

  const std::uint64_t buffer = size - 8 - length;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) throw UsageError(where + "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw UsageError(where + "__metadata__ value of '" + key + "' is not a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string what = where + "tensor '" + name + "': ";
    if (!entry.is_object()) throw UsageError(what + "the entry is not an object");
    const auto dtype = entry.find("dtype"), shape = entry.find("shape"), offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) throw UsageError(what + "missing or non-string 'dtype'");
    if (shape == entry.end() || !shape->is_array()) throw UsageError(what + "missing or non-array 'shape'");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      throw UsageError(what + "'data_offsets' is not a pair of non-negative integers");
    TensorData t;
    t.name = name;
    t.dtype = dtype->get<std::string>();
    const auto element = size_of(t.dtype);
    if (!element) throw UsageError(what + "unknown dtype '" + t.dtype + "'");
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) throw UsageError(what + "'shape' holds something other than a non-negative integer");
      const auto u = d.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) throw UsageError(what + "a dimension is too large");
      t.shape.push_back(static_cast<std::int64_t>(u));
    }
    const auto begin = (*offsets)[0].get<std::uint64_t>(), end = (*offsets)[1].get<std::uint64_t>();
    if (begin > end) throw UsageError(what + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] run backwards");
    if (end > buffer)
      throw UsageError(what + "truncated: data_offsets end at byte " + std::to_string(end) + " but the data buffer has " +
                       std::to_string(buffer) + " bytes");
    const auto expected = byte_count(t.shape, *element);
    if (!expected || *expected != end - begin)
      throw UsageError(what + "data_offsets span " + std::to_string(end - begin) + " bytes but shape " + shape_text(t.shape) +
                       " of " + t.dtype + " needs " + (expected ? std::to_string(*expected) : std::string("more than 2^64")));
    t.data = base + 8 + length + begin;
    t.bytes = static_cast<std::size_t>(end - begin);
    tensors_.push_back(std::move(t));
    spans.emplace_back(begin, end);
  }

  // File order is the order of the data; the JSON object's key order carries no meaning.
  std::vector<std::size_t> order(tensors_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return spans[a] < spans[b]; });
  // Contiguous from 0 to the end of the file, as the reference implementation requires.
  std::uint64_t cursor = 0;
  const std::string* previous = nullptr;
  for (std::size_t i : order) {
    const auto [begin, end] = spans[i];
    const std::string& name = tensors_[i].name;
    if (begin < cursor) throw UsageError(where + "tensor '" + name + "' overlaps tensor '" + *previous + "'");
    if (begin > cursor)
      throw UsageError(where + "gap of " + std::to_string(begin - cursor) + " bytes before tensor '" + name + "' in the data buffer");
    cursor = end;
    previous = &name;
  }
  if (cursor != buffer)
    throw UsageError(where + std::to_string(buffer - cursor) + " bytes after the last tensor's data (corrupt or not a safetensors file)");

  std::vector<TensorData> sorted;
  sorted.reserve(tensors_.size());
  for (std::size_t i : order) sorted.push_back(std::move(tensors_[i]));
  tensors_ = std::move(sorted);
  for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorData* File::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace ddpbench::train::safetensors
