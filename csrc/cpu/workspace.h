// The workspace the CPU op's forward fills for its backward (api.h, OpFwdArgs): one array of the compute dtype
// holding, in this order,
//   per query:  zh, zs = gamma zh (B x n), ||z|| (B)
//   per entry:  kh (S x n), kh^T (n x S), ||k|| (S), cos^T, log p^T, p^T, delta^T (C x S each: the layout in
//               which the kernels read delta, entries along rows), ce (S)
//   per class:  wh (C x n), ||w|| (C)
// Norms are stored unclamped: the backward needs both 1 / max(||x||, eps) and whether the clamp is active.
#pragma once
#include <cstdint>

#include "../api.h"

namespace mn {

struct WorkspaceLayout {  // offsets in elements
  int64_t zh, zs, z_norm, kh, khT, k_norm, cosT, logpT, pT, deltaT, ce, wh, w_norm, size;

  explicit WorkspaceLayout(Shape s) {
    int64_t at = 0;
    auto take = [&at](int64_t count) {
      const int64_t offset = at;
      at += count;
      return offset;
    };
    zh = take(s.B * s.n), zs = take(s.B * s.n), z_norm = take(s.B);
    kh = take(s.S * s.n), khT = take(s.n * s.S), k_norm = take(s.S);
    cosT = take(s.C * s.S), logpT = take(s.C * s.S), pT = take(s.C * s.S), deltaT = take(s.C * s.S);
    ce = take(s.S);
    wh = take(s.C * s.n), w_norm = take(s.C);
    size = at;
  }
};

// The arrays of a workspace at `base`.
template <typename T>
struct Workspace {
  T *zh, *zs, *z_norm, *kh, *khT, *k_norm, *cosT, *logpT, *pT, *deltaT, *ce, *wh, *w_norm;

  Workspace(T* base, Shape s) {
    const WorkspaceLayout o(s);
    zh = base + o.zh, zs = base + o.zs, z_norm = base + o.z_norm;
    kh = base + o.kh, khT = base + o.khT, k_norm = base + o.k_norm;
    cosT = base + o.cosT, logpT = base + o.logpT, pT = base + o.pT, deltaT = base + o.deltaT, ce = base + o.ce;
    wh = base + o.wh, w_norm = base + o.w_norm;
  }
};

}  // namespace mn
