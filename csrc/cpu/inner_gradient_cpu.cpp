// CPU kernels of inner_gradient (docs/design.md, "Kernel plan"): the forward contraction with its log-sum-exp, and
// the fused backward contractions. Compiled once per instruction set (MN_ISA_NS names the namespace, see
// CMakeLists.txt); dispatch.cpp picks the variant at run time, so distributed builds need no -march=native.
//
// Tiling: entries in tiles of kTile; queries in blocks sized so that the per-block scratch (a few
// (block x C x kTile) arrays) stays in L2. Nothing of size B x S x C, S x C x n or B x S x n exists.
// Determinism: the work is split into a fixed partition that does not depend on the thread count, every
// output element is owned by one partition cell, and partial sums are reduced in a fixed order.
#include <algorithm>
#include <vector>

#include "../api.h"
#include "aligned.h"
#include "attention.h"
#include "gemm.h"

namespace mn::MN_ISA_NS {
namespace {

constexpr int64_t kEntryGroups = 32;   // backward: at most this many entry groups, each with a dzh partial

template <typename T>
void forward(const Inputs<T>& in, const FwdArgs& args, int num_threads) {
  const int64_t B = in.B, S = in.S, C = in.C, n = in.n;
  T* lse = static_cast<T*>(args.lse);
  T* U = static_cast<T*>(args.U);
  T* loss = static_cast<T*>(args.loss);
  const int64_t bq = query_block(B, std::max(C * n, C * kTile));
  const int64_t nblocks = (B + bq - 1) / bq;
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> w(bq * kTile), A(bq * C * kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t i0 = blk * bq, nq = std::min(bq, B - i0);
      block_lse(in, i0, nq, w.data(), lse);
      T* Ublk = U + i0 * C * n;
      std::fill(Ublk, Ublk + nq * C * n, T(0));
      std::fill(loss + i0, loss + i0 + nq, T(0));
      for (int64_t j0 = 0; j0 < S; j0 += kTile) {
        const int64_t nt = std::min(kTile, S - j0);
        in.weights(i0, nq, j0, nt, lse, w.data());
        // A[(q, c), jj] = w_qj delta_jc: the left operand of U += A . kh_tile
        for (int64_t q = 0; q < nq; ++q) {
          const T* wq = w.data() + q * kTile;
          T l = 0;
          for (int64_t jj = 0; jj < nt; ++jj) l += wq[jj] * in.ce[j0 + jj];
          loss[i0 + q] += l;
          for (int64_t c = 0; c < C; ++c) {
            const T* dc = in.deltaT + c * S + j0;
            T* a = A.data() + (q * C + c) * kTile;
            for (int64_t jj = 0; jj < nt; ++jj) a[jj] = wq[jj] * dc[jj];
          }
        }
        gemm_acc<T>(nq * C, n, nt, A.data(), kTile, 1, in.kh + j0 * n, n, Ublk, n);
      }
    }
  }
}

// Backward, one pass over (entry group, entry tile, query block). Per tile and query block:
//   X_qcj = dU_qc . kh_j                      (the recomputed contraction, never stored beyond the block)
//   ddelta_jc += sum_q w_qj X_qcj,  ds_qj = w_qj (sum_c delta_jc X_qcj + dL_q ce_j - D_q)
//   dkh_j += sum_{q,c} w_qj delta_jc dU_qc + sum_q ds_qj zs_q,   dce_j += sum_q w_qj dL_q
//   dzh_q += sum_j ds_qj kh_j  into the entry group's own partial, summed over groups in order at the end.
// An entry group owns its tiles' dkh, ddelta and dce rows outright; the group partition depends on S only.
template <typename T>
void backward(const Inputs<T>& in, const BwdArgs& args, int num_threads) {
  const int64_t B = in.B, S = in.S, C = in.C, n = in.n;
  const T* lse = static_cast<const T*>(args.lse);
  const T* dU = static_cast<const T*>(args.dU);
  const T* dL = static_cast<const T*>(args.dL);
  const T* D = static_cast<const T*>(args.D);
  T* dzh = static_cast<T*>(args.dzh);
  T* dkh = static_cast<T*>(args.dkh);
  T* ddelta = static_cast<T*>(args.ddelta);
  T* dce = static_cast<T*>(args.dce);
  const int64_t ntiles = (S + kTile - 1) / kTile;
  const int64_t ngroups = std::min(ntiles, kEntryGroups);
  const int64_t bq = query_block(B, C * kTile);
  Scratch<T> dzh_part(ngroups * B * n, T(0));
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> w(bq * kTile), ds(bq * kTile), X(bq * C * kTile), dd(C * kTile), dc(kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < ngroups; ++g) {
      T* dzh_g = dzh_part.data() + g * B * n;
      for (int64_t t = g * ntiles / ngroups; t < (g + 1) * ntiles / ngroups; ++t) {
        const int64_t j0 = t * kTile, nt = std::min(kTile, S - j0);
        T* dkh_t = dkh + j0 * n;
        std::fill(dkh_t, dkh_t + nt * n, T(0));
        std::fill(dd.begin(), dd.end(), T(0));
        std::fill(dc.begin(), dc.end(), T(0));
        for (int64_t i0 = 0; i0 < B; i0 += bq) {
          const int64_t nq = std::min(bq, B - i0);
          in.weights(i0, nq, j0, nt, lse, w.data());
          gemm_set<T>(nq * C, nt, n, dU + i0 * C * n, n, 1, in.khT + j0, S, X.data(), kTile);
          for (int64_t q = 0; q < nq; ++q) {
            const T* wq = w.data() + q * kTile;
            T* r = ds.data() + q * kTile;
            const T shift = dL[i0 + q], base = D[i0 + q];
            for (int64_t jj = 0; jj < nt; ++jj) {
              r[jj] = wq[jj] * (shift * in.ce[j0 + jj] - base);
              dc[jj] += wq[jj] * shift;
            }
            for (int64_t c = 0; c < C; ++c) {
              const T* delta = in.deltaT + c * S + j0;
              T* x = X.data() + (q * C + c) * kTile;  // X_qc. on entry, A_qc. = w_q. delta_.c on exit
              T* ddc = dd.data() + c * kTile;
              for (int64_t jj = 0; jj < nt; ++jj) {
                const T xv = x[jj], wd = wq[jj] * delta[jj];
                ddc[jj] += wq[jj] * xv;
                r[jj] += wd * xv;
                x[jj] = wd;
              }
            }
          }
          gemm_acc<T>(nt, n, nq * C, X.data(), 1, kTile, dU + i0 * C * n, n, dkh_t, n);  // A^T dU
          gemm_acc<T>(nt, n, nq, ds.data(), 1, kTile, in.zs + i0 * n, n, dkh_t, n);      // ds^T zs
          gemm_acc<T>(nq, n, nt, ds.data(), kTile, 1, in.kh + j0 * n, n, dzh_g + i0 * n, n);
        }
        for (int64_t jj = 0; jj < nt; ++jj) {
          for (int64_t c = 0; c < C; ++c) ddelta[(j0 + jj) * C + c] = dd[c * kTile + jj];
          dce[j0 + jj] = dc[jj];
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t e = 0; e < B * n; ++e) {
      T sum = 0;
      for (int64_t g = 0; g < ngroups; ++g) sum += dzh_part[g * B * n + e];
      dzh[e] = sum;
    }
  }
}

template <typename T>
Inputs<T> inputs(Shape sh, Dropout drop, const void* zs, const void* kh, const void* khT, const void* deltaT,
                 const void* ce) {
  return {sh.B, sh.S, sh.C, sh.n, drop, static_cast<const T*>(zs), static_cast<const T*>(kh),
          static_cast<const T*>(khT), static_cast<const T*>(deltaT), static_cast<const T*>(ce)};
}

}  // namespace

void fwd(DType dtype, Shape sh, Dropout drop, const FwdArgs& a, int num_threads) {
  if (dtype == DType::f64)
    forward(inputs<double>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce), a, num_threads);
  else
    forward(inputs<float>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce), a, num_threads);
}

void bwd(DType dtype, Shape sh, Dropout drop, const BwdArgs& a, int num_threads) {
  if (dtype == DType::f64)
    backward(inputs<double>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce), a, num_threads);
  else
    backward(inputs<float>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce), a, num_threads);
}

}  // namespace mn::MN_ISA_NS
