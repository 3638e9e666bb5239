// Scratch arrays aligned to a cache line. std::vector's memory is only 16-byte aligned, so every other 32-byte
// vector load or store of a row crossed a cache line; the gemm operands and accumulators here are rows of
// vectors.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace mn {

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};

  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}

  T* allocate(std::size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }

  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

template <typename T>
using Scratch = std::vector<T, CacheLineAllocator<T>>;

}  // namespace mn
