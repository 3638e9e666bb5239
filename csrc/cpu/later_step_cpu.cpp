// CPU kernels of the later inner step (docs/design.md, "Later inner steps"): per-example weights phh (B x C x n,
// row-normalised). Compiled once per instruction set, like inner_gradient_cpu.cpp, and deterministic the same way.
//
// On the CPU a query block's logits for every class fit in cache, (block x C) x kTile per entry tile, so each
// direction is one pass over (query block, entry tile): the class statistics m and ce, rdot and vX are formed
// where they are used, and nothing of size B x S (let alone B x S x C) is stored. Forward: two contractions per
// tile (the logits, U). Backward: five (the logits, X = dU . kh, dphh, and the two into dkh). dkh, dv and dtau
// are sums over every query: each of a fixed set of query groups keeps its own partial, summed in order at the
// end (the partition depends on B and C only, not on the thread count).
#include <algorithm>
#include <cmath>
#include <limits>

#include "../api.h"
#include "aligned.h"
#include "attention.h"
#include "exp_row.h"
#include "gemm.h"

namespace mn::MN_ISA_NS {
namespace {

constexpr int64_t kQueryGroups = 8;  // backward: at most this many query groups, each with dkh, dv, dtau partials

template <typename T>
struct Later {
  Inputs<T> att;                   // queries (gamma zh), keys, dropout: the attention of step 1
  const T *ph, *p_rnorm, *vT, *sigma;
  T tau;
  int64_t bq;                      // queries per block

  // For queries [i0, i0+nq) and entries [j0, j0+nt): the logits' log-softmax over the classes in lg
  // ((nq C) x kTile, row (q, c)), their softmax in p, and per (q, j) the log-normaliser m and ce in m, ce
  // (nq x kTile). NaN propagates (a NaN logit makes its (q, j) column NaN).
  // cosv (optional, the backward's): the cosines kh . phh themselves, for dtau = sum dl cos, which stays finite
  // at tau = 0 where l / tau would not.
  void class_stats(int64_t i0, int64_t nq, int64_t j0, int64_t nt, T* lg, T* p, T* m, T* ce,
                   T* cosv = nullptr) const {
    const int64_t S = att.S, C = att.C, n = att.n;
    gemm_set<T>(nq * C, nt, n, ph + i0 * C * n, n, 1, att.khT + j0, S, lg, kTile);
    if (cosv != nullptr) std::copy(lg, lg + nq * C * kTile, cosv);
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t q = 0; q < nq; ++q) {
      T* mq = m + q * kTile;
      T* ceq = ce + q * kTile;
      std::fill(mq, mq + nt, ninf);
      std::fill(ceq, ceq + nt, T(0));
      for (int64_t c = 0; c < C; ++c) {
        T* row = lg + (q * C + c) * kTile;
        const T* v = vT + c * S + j0;
        for (int64_t jj = 0; jj < nt; ++jj) {
          row[jj] *= tau;
          mq[jj] = row[jj] > mq[jj] || row[jj] != row[jj] ? row[jj] : mq[jj];
          ceq[jj] -= v[jj] * row[jj];                           // - sum_c v_jc l_jc
        }
      }
      T total[kTile] = {};
      for (int64_t c = 0; c < C; ++c) {
        const T* row = lg + (q * C + c) * kTile;
        T* pr = p + (q * C + c) * kTile;
        for (int64_t jj = 0; jj < nt; ++jj) pr[jj] = row[jj] - mq[jj];
        exp_row(pr, nt);
        for (int64_t jj = 0; jj < nt; ++jj) total[jj] += pr[jj];
      }
      for (int64_t jj = 0; jj < nt; ++jj) {
        mq[jj] += std::log(total[jj]);
        ceq[jj] += sigma[j0 + jj] * mq[jj];
      }
      for (int64_t c = 0; c < C; ++c) {
        T* row = lg + (q * C + c) * kTile;
        T* pr = p + (q * C + c) * kTile;
        for (int64_t jj = 0; jj < nt; ++jj) {
          row[jj] -= mq[jj];                                    // log p
          pr[jj] /= total[jj];
        }
      }
    }
  }
};

template <typename T>
void forward(const Later<T>& L, const LaterFwdArgs& args, int num_threads) {
  const int64_t B = L.att.B, S = L.att.S, C = L.att.C, n = L.att.n, bq = L.bq;
  T* lse = static_cast<T*>(args.lse);
  T* grad = static_cast<T*>(args.grad);
  T* loss = static_cast<T*>(args.loss);
  T* a = static_cast<T*>(args.a);
  const int64_t nblocks = (B + bq - 1) / bq;
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> w(bq * kTile), m(bq * kTile), ce(bq * kTile), lg(bq * C * kTile), p(bq * C * kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t i0 = blk * bq, nq = std::min(bq, B - i0);
      block_lse(L.att, i0, nq, w.data(), lse);
      T* U = grad + i0 * C * n;                                 // U in grad's storage until the epilogue
      std::fill(U, U + nq * C * n, T(0));
      std::fill(loss + i0, loss + i0 + nq, T(0));
      for (int64_t j0 = 0; j0 < S; j0 += kTile) {
        const int64_t nt = std::min(kTile, S - j0);
        L.att.weights(i0, nq, j0, nt, lse, w.data());
        L.class_stats(i0, nq, j0, nt, lg.data(), p.data(), m.data(), ce.data());
        for (int64_t q = 0; q < nq; ++q) {
          const T* wq = w.data() + q * kTile;
          const T* ceq = ce.data() + q * kTile;
          T l = 0;
          for (int64_t jj = 0; jj < nt; ++jj) l += wq[jj] * ceq[jj];
          loss[i0 + q] += l;
          for (int64_t c = 0; c < C; ++c) {                     // A = w (x) delta, in p's storage
            T* pr = p.data() + (q * C + c) * kTile;
            const T* v = L.vT + c * S + j0;
            for (int64_t jj = 0; jj < nt; ++jj) pr[jj] = wq[jj] * L.tau * (L.sigma[j0 + jj] * pr[jj] - v[jj]);
          }
        }
        gemm_acc<T>(nq * C, n, nt, p.data(), kTile, 1, L.att.kh + j0 * n, n, U, n);
      }
      // Epilogue: grad = (U - phh (phh . U)) / ||phi|| per (query, class), a = phh . U.
      for (int64_t r = 0; r < nq * C; ++r) {
        const T* ph = L.ph + (i0 * C + r) * n;
        T* u = U + r * n;
        T dot = 0;
        for (int64_t k = 0; k < n; ++k) dot += ph[k] * u[k];
        const T rn = L.p_rnorm[i0 * C + r];
        for (int64_t k = 0; k < n; ++k) u[k] = (u[k] - dot * ph[k]) * rn;
        a[i0 * C + r] = dot;
      }
    }
  }
}

template <typename T>
void backward(const Later<T>& L, const LaterBwdArgs& args, int num_threads) {
  const int64_t B = L.att.B, S = L.att.S, C = L.att.C, n = L.att.n, bq = L.bq;
  const T* lse = static_cast<const T*>(args.lse);
  const T* dU = static_cast<const T*>(args.dU);
  const T* dL = static_cast<const T*>(args.dL);
  const T* D = static_cast<const T*>(args.D);
  T* dzh = static_cast<T*>(args.dzh);
  T* dph = static_cast<T*>(args.dph);
  T* dkh = static_cast<T*>(args.dkh);
  T* dv = static_cast<T*>(args.dv);
  T* dtau = static_cast<T*>(args.dtau);
  const int64_t nblocks = (B + bq - 1) / bq;
  const int64_t ngroups = std::min(nblocks, kQueryGroups);
  Scratch<T> dkh_part(ngroups * S * n, T(0)), dv_part(ngroups * S * C, T(0));
  // dtau sums about B S C / ngroups terms per group: in double, so float32 keeps its precision.
  Scratch<double> dtau_part(ngroups, 0.0);
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> w(bq * kTile), m(bq * kTile), ce(bq * kTile), ds(bq * kTile);
    Scratch<T> lg(bq * C * kTile), p(bq * C * kTile), X(bq * C * kTile), cs(bq * C * kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < ngroups; ++g) {
      T* dkh_g = dkh_part.data() + g * S * n;
      T* dv_g = dv_part.data() + g * S * C;
      double dtau_g = 0;
      for (int64_t blk = g * nblocks / ngroups; blk < (g + 1) * nblocks / ngroups; ++blk) {
        const int64_t i0 = blk * bq, nq = std::min(bq, B - i0);
        T* dph_b = dph + i0 * C * n;
        T* dzh_b = dzh + i0 * n;
        std::fill(dph_b, dph_b + nq * C * n, T(0));
        std::fill(dzh_b, dzh_b + nq * n, T(0));
        for (int64_t j0 = 0; j0 < S; j0 += kTile) {
          const int64_t nt = std::min(kTile, S - j0);
          L.att.weights(i0, nq, j0, nt, lse, w.data());
          L.class_stats(i0, nq, j0, nt, lg.data(), p.data(), m.data(), ce.data(), cs.data());
          gemm_set<T>(nq * C, nt, n, dU + i0 * C * n, n, 1, L.att.khT + j0, S, X.data(), kTile);   // X = dU . kh
          for (int64_t q = 0; q < nq; ++q) {
            const T* wq = w.data() + q * kTile;
            T* dsq = ds.data() + q * kTile;
            const T dLq = dL[i0 + q];
            for (int64_t jj = 0; jj < nt; ++jj) {
              T rdot = 0, vx = 0;                               // sum_c p X, sum_c v X
              for (int64_t c = 0; c < C; ++c) {
                const T x = X[(q * C + c) * kTile + jj];
                rdot += p[(q * C + c) * kTile + jj] * x;
                vx += L.vT[c * S + j0 + jj] * x;
              }
              const T wj = wq[jj], sig = L.sigma[j0 + jj];
              dsq[jj] = wj * (L.tau * (sig * rdot - vx) + dLq * ce[q * kTile + jj] - D[i0 + q]);
              dtau_g += wj * (sig * rdot - vx);
              for (int64_t c = 0; c < C; ++c) {
                const int64_t e = (q * C + c) * kTile + jj;
                const T pv = p[e], x = X[e], logp = lg[e], v = L.vT[c * S + j0 + jj];
                const T sp = sig * pv;
                const T dl = wj * (L.tau * sp * (x - rdot) + dLq * (sp - v));
                dv_g[(j0 + jj) * C + c] += wj * (L.tau * (rdot - x) - dLq * logp);
                dtau_g += dl * cs[e];                           // dl l / tau = dl cos
                lg[e] = L.tau * dl;                             // tau dl: the operand of dphh and dkh
                p[e] = wj * L.tau * (sp - v);                   // w delta: the operand of dkh
              }
            }
          }
          gemm_acc<T>(nq * C, n, nt, lg.data(), kTile, 1, L.att.kh + j0 * n, n, dph_b, n);   // tau dl . kh
          gemm_acc<T>(nq, n, nt, ds.data(), kTile, 1, L.att.kh + j0 * n, n, dzh_b, n);        // ds . kh
          T* dk = dkh_g + j0 * n;
          gemm_acc<T>(nt, n, nq * C, p.data(), 1, kTile, dU + i0 * C * n, n, dk, n);          // (w delta)^T dU
          gemm_acc<T>(nt, n, nq * C, lg.data(), 1, kTile, L.ph + i0 * C * n, n, dk, n);       // tau dl^T phh
          gemm_acc<T>(nt, n, nq, ds.data(), 1, kTile, L.att.zs + i0 * n, n, dk, n);           // ds^T (gamma zh)
        }
      }
      dtau_part[g] = dtau_g;
    }
#pragma omp for schedule(static)
    for (int64_t e = 0; e < S * n; ++e) {
      T sum = 0;
      for (int64_t g = 0; g < ngroups; ++g) sum += dkh_part[g * S * n + e];
      dkh[e] = sum;
    }
#pragma omp for schedule(static)
    for (int64_t e = 0; e < S * C; ++e) {
      T sum = 0;
      for (int64_t g = 0; g < ngroups; ++g) sum += dv_part[g * S * C + e];
      dv[e] = sum;
    }
  }
  double sum = 0;
  for (int64_t g = 0; g < ngroups; ++g) sum += dtau_part[g];
  *dtau = static_cast<T>(sum);
}

template <typename T>
Later<T> later(Shape sh, Dropout drop, const LaterOperands& o) {
  const int64_t bq = query_block(sh.B, sh.C * kTile);
  return {{sh.B, sh.S, sh.C, sh.n, drop, static_cast<const T*>(o.zs), static_cast<const T*>(o.kh),
           static_cast<const T*>(o.khT), nullptr, nullptr},
          static_cast<const T*>(o.ph), static_cast<const T*>(o.p_rnorm), static_cast<const T*>(o.vT),
          static_cast<const T*>(o.sigma), *static_cast<const T*>(o.tau), bq};
}

}  // namespace

void later_fwd(DType dtype, Shape sh, Dropout drop, const LaterOperands& o, const LaterFwdArgs& a, int num_threads) {
  if (dtype == DType::f64)
    forward(later<double>(sh, drop, o), a, num_threads);
  else
    forward(later<float>(sh, drop, o), a, num_threads);
}

void later_bwd(DType dtype, Shape sh, Dropout drop, const LaterOperands& o, const LaterBwdArgs& a, int num_threads) {
  if (dtype == DType::f64)
    backward(later<double>(sh, drop, o), a, num_threads);
  else
    backward(later<float>(sh, drop, o), a, num_threads);
}

}  // namespace mn::MN_ISA_NS
