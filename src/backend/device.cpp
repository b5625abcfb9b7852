#include "backend/device.h"

#include <charconv>
#include <cstring>
#include <new>

namespace fgnet {
namespace {

constexpr std::size_t kHostAlignment = 64;

class HostMemory final : public Memory {
 public:
  explicit HostMemory(std::size_t bytes)
      : data_(::operator new (bytes == 0 ? 1 : bytes, std::align_val_t{kHostAlignment})),
        bytes_(bytes) {}
  ~HostMemory() override { ::operator delete (data_, std::align_val_t{kHostAlignment}); }
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;

  void* data() const override { return data_; }
  std::size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::Cpu(); }
  void Copy(std::size_t to, std::size_t from, std::size_t bytes) override {
    FGNET_CHECK_LE(to + bytes, bytes_);
    FGNET_CHECK_LE(from + bytes, bytes_);
    std::memcpy(static_cast<char*>(data_) + to, static_cast<const char*>(data_) + from, bytes);
  }

 private:
  void* data_;
  std::size_t bytes_;
};

}  // namespace

std::string Device::ToString() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Result<Device> ParseDevice(std::string_view text) {
  if (text == "cpu") return Device::Cpu();
  if (text == "cuda") return Device::Cuda(0);
  if (text.starts_with("cuda:")) {
    const std::string_view digits = text.substr(5);
    int index = -1;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (error == std::errc() && end == digits.data() + digits.size() && !digits.empty() &&
        index >= 0 && index < 1024) {
      return Device::Cuda(index);
    }
  }
  return MakeError("device '", text, "' is not one of cpu, cuda, cuda:N");
}

std::unique_ptr<Memory> AllocateHostMemory(std::size_t bytes) {
  return std::make_unique<HostMemory>(bytes);
}

}  // namespace fgnet
