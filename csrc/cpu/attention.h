// The attention over the dictionary on the CPU, shared by the step-1 kernels (inner_gradient_cpu.cpp) and the
// later-step kernels (later_step_cpu.cpp): entry tiles, query blocks, scores with the dropout mask, attention
// weights from a known log-normaliser, and the log-normaliser itself. Included by translation units compiled
// once per instruction set (MN_ISA_NS), so everything here is a template or internal.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../api.h"
#include "../dropout_hash.h"
#include "exp_row.h"
#include "gemm.h"

namespace mn::MN_ISA_NS {
namespace {

constexpr int64_t kTile = 64;          // entries per tile (a multiple of every gemm_nr)
constexpr int64_t kScratch = 1 << 15;  // elements of the largest per-block scratch array

int64_t query_block(int64_t B, int64_t per_query) {
  return std::max<int64_t>(1, std::min<int64_t>({16, B, kScratch / std::max<int64_t>(per_query, 1)}));
}

template <typename T>
struct Inputs {
  int64_t B, S, C, n;
  Dropout drop;
  const T *zs, *kh, *khT, *deltaT, *ce;

  // s (nq x kTile, row stride kTile) = zs[i0 : i0+nq] . kh[j0 : j0+nt]^T, -inf for dropped entries
  void scores(int64_t i0, int64_t nq, int64_t j0, int64_t nt, T* s) const {
    gemm_set<T>(nq, nt, n, zs + i0 * n, n, 1, khT + j0, S, s, kTile);
    if (drop.threshold == 0) return;
    const auto mix = static_cast<uint32_t>(*drop.seed_mix);
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t jj = 0; jj < nt; ++jj)
        if (!entry_kept(mix, drop.threshold, i0 + q, j0 + jj))
          s[q * kTile + jj] = -std::numeric_limits<T>::infinity();
  }

  // The scores of scores() turned into attention weights exp(s - lse), 0 for dropped entries.
  void weights(int64_t i0, int64_t nq, int64_t j0, int64_t nt, const T* lse, T* w) const {
    scores(i0, nq, j0, nt, w);
    for (int64_t q = 0; q < nq; ++q) {
      T* row = w + q * kTile;
      const T m = lse[i0 + q];
      if (m == -std::numeric_limits<T>::infinity()) {  // every entry dropped: no weights
        std::fill(row, row + nt, T(0));
        continue;
      }
      if (m != m) {  // NaN lse (a NaN score): every kept entry's weight is NaN; a dropped one's stays 0, as in
                     // the CUDA and Triton kernels, which never take a dropped entry's exp
        for (int64_t jj = 0; jj < nt; ++jj) row[jj] = row[jj] == -std::numeric_limits<T>::infinity() ? T(0) : m;
        continue;
      }
      for (int64_t jj = 0; jj < nt; ++jj) row[jj] -= m;
      exp_row(row, nt);
    }
  }
};

// max(m, x[0..nt)), NaN if any of them is NaN (std::max skips a NaN x, and then a query with only NaN scores
// would look like one with every entry dropped). In vectors, one select per lane: a scalar chain of NaN-aware
// compare-and-selects through every element slowed the forward measurably (bench/results/cpu-native-notes.md).
template <typename T>
T nan_max(T m, const T* x, int64_t nt) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::width;
  const auto take = [](T a, T b) { return b > a || b != b ? b : a; };
  int64_t k = 0;
  if (nt >= W) {
    V acc = load_vec(x);
    for (k = W; k + W <= nt; k += W) {
      const V v = load_vec(x + k);
      acc = ((v > acc) | (v != v)) ? v : acc;
    }
    for (int l = 0; l < W; ++l) m = take(m, acc[l]);
  }
  for (; k < nt; ++k) m = take(m, x[k]);
  return m;
}

// lse of queries [i0, i0+nq): running maximum and rescaled sum over the entry tiles (any gamma is safe).
// NaN propagates as in IEEE arithmetic: a NaN score makes the maximum, hence the lse, NaN.
template <typename T>
void block_lse(const Inputs<T>& in, int64_t i0, int64_t nq, T* s, T* lse) {
  const T ninf = -std::numeric_limits<T>::infinity();
  std::vector<T> m(nq, ninf), l(nq, T(0));
  for (int64_t j0 = 0; j0 < in.S; j0 += kTile) {
    const int64_t nt = std::min(kTile, in.S - j0);
    in.scores(i0, nq, j0, nt, s);
    for (int64_t q = 0; q < nq; ++q) {
      T* row = s + q * kTile;
      const T mx = nan_max(m[q], row, nt);
      if (mx == ninf) continue;  // nothing kept so far
      for (int64_t jj = 0; jj < nt; ++jj) row[jj] -= mx;
      exp_row(row, nt);
      T sum = 0;
      for (int64_t jj = 0; jj < nt; ++jj) sum += row[jj];
      l[q] = l[q] * std::exp(m[q] - mx) + sum;
      m[q] = mx;
    }
  }
  // l >= 1 once an entry is kept, 0 if none is (lse -inf); a NaN l gives a NaN lse.
  for (int64_t q = 0; q < nq; ++q) lse[i0 + q] = l[q] == T(0) ? ninf : m[q] + std::log(l[q]);
}

}  // namespace
}  // namespace mn::MN_ISA_NS
