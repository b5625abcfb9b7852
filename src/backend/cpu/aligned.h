// 64-byte aligned storage for activations, caches and packed panels (one cache line, and the
// width of an AVX-512 register), so that SIMD loads never straddle cache lines needlessly.
// Unlike std::vector<T>, resize() leaves new elements default-initialised (uninitialised for
// float): write before reading.
// Thread-safety: as std::vector.
#pragma once

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace fgnet::cpu {

inline constexpr std::size_t kAlignment = 64;

template <class T>
struct AlignedAllocator {
  using value_type = T;

  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>& /*other*/) noexcept {}  // NOLINT: rebinding

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kAlignment}));
  }
  void deallocate(T* p, std::size_t /*n*/) noexcept {
    ::operator delete (p, std::align_val_t{kAlignment});
  }

  // Default-initialises on resize: floats are left uninitialised, so a large buffer costs no
  // page writes until it is used.
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }

  template <class U>
  bool operator==(const AlignedAllocator<U>& /*other*/) const noexcept {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace fgnet::cpu
