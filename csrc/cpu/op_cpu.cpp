// The CPU op around the contractions (docs/design.md, "Forward" and "Backward"), one call per direction, so that
// the host work of a step is not dozens of small torch calls:
//   forward:  normalisations; per entry the logits tau kh_j . wh_c, log-softmax, cross-entropy and delta; the
//             contraction (inner_gradient_cpu.cpp); the projection P_c.
//   backward: the projection's backward; the contractions' backward; per entry the second-order terms (the
//             softmax Jacobian); the normalisations' backward.
// All of it is O(B C n + S C n). Determinism: per-row and per-entry work is split freely (each output
// element is computed by one thread in a fixed order); the sums over the dictionary (dW, dtau) use a fixed
// partition of the entries whose partials are added in order, and those over the batch (the projection's
// dW) run serially per output element, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../api.h"
#include "aligned.h"
#include "exp_row.h"
#include "gemm.h"
#include "workspace.h"

namespace mn::MN_ISA_NS {

void fwd(DType, Shape, Dropout, const FwdArgs&, int);  // the contractions (inner_gradient_cpu.cpp)
void bwd(DType, Shape, Dropout, const BwdArgs&, int);

namespace {

constexpr double kEps = 1e-12;   // x / max(||x||, eps), as in every backend
constexpr int64_t kChunk = 64;   // entries per chunk of per-entry work (a multiple of every vector width)
constexpr int64_t kGroups = 32;  // backward: at most this many entry groups, each with a dW and dtau partial

template <typename T>
constexpr DType dtype_of() {
  return sizeof(T) == 8 ? DType::f64 : DType::f32;
}

template <typename T>
T clamped_inverse(T norm) {
  return T(1) / std::max(norm, T(kEps));
}

// a . b over `len` elements in vectors, lanes summed in a fixed order. The compiler leaves a floating-point sum
// serial (one dependent add per element), which made these O(B C n) dot products a third of the op's own time.
template <typename T>
T dot(const T* a, const T* b, int64_t len) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::width;
  V acc{};
  int64_t k = 0;
  for (; k + W <= len; k += W) acc += load_vec(a + k) * load_vec(b + k);
  T sum = 0;
  for (int v = 0; v < W; ++v) sum += acc[v];
  for (; k < len; ++k) sum += a[k] * b[k];
  return sum;
}

// One row of length `cols`: xh = x / max(||x||, eps), *norm = ||x||.
template <typename T>
void normalize_row(const T* x, int64_t cols, T* xh, T* norm) {
  *norm = std::sqrt(dot(x, x, cols));
  const T d = std::max(*norm, T(kEps));
  for (int64_t k = 0; k < cols; ++k) xh[k] = x[k] / d;
}

// Backward of normalize_row, in place on d (dxh in, dx out): (dxh - xh (xh . dxh)) / ||x||, or dxh / eps
// where the clamp is active (then xh does not depend on the direction of x).
template <typename T>
void normalize_row_bwd(const T* xh, T norm, int64_t cols, T* d) {
  const T radial = norm >= T(kEps) ? dot(xh, d, cols) : T(0);
  const T r = clamped_inverse(norm);
  for (int64_t k = 0; k < cols; ++k) d[k] = (d[k] - xh[k] * radial) * r;
}

// ------------------------------------------------------------------------------------------------ forward

// Entries [j0, j0 + nt): kh, kh^T, and per (class, entry) cos, log p, p, delta^T, then ce, with
// p_j = softmax_c(tau cos_j), delta_jc = tau (sigma_j p_jc - v_jc), sigma_j = sum_c v_jc, ce_j = -sum_c v_jc
// log p_jc. Class-major scratch L, E (C x kChunk) so that the softmax runs along the entries in vectors.
template <typename T>
void prepare_entries(Shape s, T tau, const T* keys, const T* values, const Workspace<T>& w, int64_t j0,
                     int64_t nt, T* L, T* E) {
  const int64_t S = s.S, C = s.C, n = s.n;
  for (int64_t jj = 0; jj < nt; ++jj) {
    const int64_t j = j0 + jj;
    normalize_row(keys + j * n, n, w.kh + j * n, w.k_norm + j);
    for (int64_t k = 0; k < n; ++k) w.khT[k * S + j] = w.kh[j * n + k];
  }
  gemm_set<T>(C, nt, n, w.wh, n, 1, w.khT + j0, S, L, kChunk);  // L = cos^T
  T m[kChunk], sum[kChunk], sigma[kChunk], vlogp[kChunk];
  std::fill(m, m + nt, -std::numeric_limits<T>::infinity());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t jj = 0; jj < nt; ++jj) {
      T& l = L[c * kChunk + jj];
      w.cosT[c * S + j0 + jj] = l;
      l *= tau;
      m[jj] = l > m[jj] || l != l ? l : m[jj];  // a NaN logit makes the entry's softmax NaN (std::max skips it)
    }
  std::fill(sum, sum + nt, T(0));
  for (int64_t c = 0; c < C; ++c) {
    T *l = L + c * kChunk, *e = E + c * kChunk;
    for (int64_t jj = 0; jj < nt; ++jj) e[jj] = l[jj] -= m[jj];
    exp_row(e, nt);
    for (int64_t jj = 0; jj < nt; ++jj) sum[jj] += e[jj];
  }
  for (int64_t jj = 0; jj < nt; ++jj) {
    const T* v = values + (j0 + jj) * C;
    sigma[jj] = vlogp[jj] = 0;
    for (int64_t c = 0; c < C; ++c) sigma[jj] += v[c];
    m[jj] = std::log(sum[jj]);  // m is free now: log sum_c exp(l_jc - max)
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t jj = 0; jj < nt; ++jj) {
      const int64_t j = j0 + jj, at = c * S + j;
      const T logp = L[c * kChunk + jj] - m[jj], p = E[c * kChunk + jj] / sum[jj], v = values[j * C + c];
      w.logpT[at] = logp;
      w.pT[at] = p;
      w.deltaT[at] = tau * (sigma[jj] * p - v);
      vlogp[jj] += v * logp;
    }
  for (int64_t jj = 0; jj < nt; ++jj) w.ce[j0 + jj] = -vlogp[jj];
}

// Everything the contraction reads, into the workspace: hats, norms, zs and the per-entry terms.
template <typename T>
void prepare(Shape s, T gamma, const OpFwdArgs& args, const Workspace<T>& w, int num_threads) {
  const int64_t B = s.B, S = s.S, C = s.C, n = s.n;
  const T* z = static_cast<const T*>(args.z);
  const T* keys = static_cast<const T*>(args.keys);
  const T* values = static_cast<const T*>(args.values);
  const T* weight = static_cast<const T*>(args.weight);
  const T tau = *static_cast<const T*>(args.tau);
  for (int64_t c = 0; c < C; ++c) normalize_row(weight + c * n, n, w.wh + c * n, w.w_norm + c);  // read by all
  const int64_t nchunks = (S + kChunk - 1) / kChunk;
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> L(C * kChunk), E(C * kChunk);
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < nchunks; ++t)
      prepare_entries(s, tau, keys, values, w, t * kChunk, std::min(kChunk, S - t * kChunk), L.data(), E.data());
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B; ++i) {
      normalize_row(z + i * n, n, w.zh + i * n, w.z_norm + i);
      for (int64_t k = 0; k < n; ++k) w.zs[i * n + k] = gamma * w.zh[i * n + k];
    }
  }
}

// grad_ic = P_c U_ic = (U_ic - a_ic wh_c) / max(||w_c||, eps) with a_ic = wh_c . U_ic, in U's storage.
template <typename T>
void project(Shape s, const Workspace<T>& w, T* U, T* a, int num_threads) {
  const int64_t B = s.B, C = s.C, n = s.n;
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t i = 0; i < B; ++i)
    for (int64_t c = 0; c < C; ++c) {
      T* u = U + (i * C + c) * n;
      const T* wc = w.wh + c * n;
      const T aic = a[i * C + c] = dot(wc, u, n);
      const T r = clamped_inverse(w.w_norm[c]);
      for (int64_t k = 0; k < n; ++k) u[k] = (u[k] - aic * wc[k]) * r;
    }
}

template <typename T>
void op_forward(Shape s, T gamma, Dropout drop, const OpFwdArgs& args, int num_threads) {
  const Workspace<T> w(static_cast<T*>(args.ws), s);
  prepare(s, gamma, args, w, num_threads);
  const FwdArgs contraction{w.zs, w.kh, w.khT, w.deltaT, w.ce, args.lse, args.grad, args.loss};
  fwd(dtype_of<T>(), s, drop, contraction, num_threads);
  project(s, w, static_cast<T*>(args.grad), static_cast<T*>(args.a), num_threads);
}

// ----------------------------------------------------------------------------------------------- backward

// From the cotangent h = dgrad of grad = P_c U (g = grad, per query i and class c): dU_ic = P_c h_ic,
// D_i = sum_c g_ic . h_ic + dL_i loss_i (docs/design.md, "Backward", step 1), and the projection's own share of dW
// (same step),
// dW_c = -(sum_i (g_ic . h_ic) wh_c + b_ic g_ic + a_ic dU_ic) / max(||w_c||, eps) with b_ic = wh_c . h_ic.
template <typename T>
void project_bwd(Shape s, const Workspace<T>& w, const T* a, const T* g, const T* loss, const T* h, const T* dL,
                 T* dU, T* D, T* dW, int num_threads) {
  const int64_t B = s.B, C = s.C, n = s.n;
  std::vector<T> b(B * C), gh(B * C);
#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B; ++i) {
      T Di = 0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t ic = i * C + c;
        const T *wc = w.wh + c * n, *hic = h + ic * n, *gic = g + ic * n;
        const T bic = dot(wc, hic, n), ghic = dot(gic, hic, n);
        const T r = clamped_inverse(w.w_norm[c]);
        for (int64_t k = 0; k < n; ++k) dU[ic * n + k] = (hic[k] - bic * wc[k]) * r;
        b[ic] = bic, gh[ic] = ghic;
        Di += ghic;
      }
      D[i] = Di + dL[i] * loss[i];
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {  // a sum over the batch: serial per class
      T* out = dW + c * n;
      std::fill(out, out + n, T(0));
      T sum_gh = 0;
      for (int64_t i = 0; i < B; ++i) {
        const int64_t ic = i * C + c;
        sum_gh += gh[ic];
        for (int64_t k = 0; k < n; ++k) out[k] += b[ic] * g[ic * n + k] + a[ic] * dU[ic * n + k];
      }
      const T r = clamped_inverse(w.w_norm[c]);
      for (int64_t k = 0; k < n; ++k) out[k] = -r * (sum_gh * w.wh[c * n + k] + out[k]);
    }
  }
}

// Per-entry backward of entries [j0, j0 + nt) (docs/design.md, "Backward", step 3), given the contractions' ddelta
// (S x C, in dv's storage: overwritten here by dvalues), dce and dkh (S x n, in dk's storage: finished here into
// dkeys):
//   dp = tau sigma ddelta,  dl = p (dp - sum_c p dp) + dce (sigma p - v),  dv = tau (sum_c p ddelta - ddelta)
//   - dce log p,  dkh_j += tau sum_c dl_jc wh_c;  returns sum_j dtau_j, dtau_j = sum_c (sigma p - v) ddelta +
//   dl cos, and adds tau sum_j dl_jc kh_j to dW_part (C x n). Scratch dd, dlt (C x kChunk).
template <typename T>
T entries_bwd(Shape s, T tau, const T* values, const T* dce, const Workspace<T>& w, int64_t j0, int64_t nt,
              T* dv, T* dk, T* dW_part, T* dd, T* dlt) {
  const int64_t S = s.S, C = s.C, n = s.n;
  T sigma[kChunk], pdd[kChunk], pdp[kChunk], dtau_j[kChunk];
  for (int64_t jj = 0; jj < nt; ++jj) {
    const int64_t j = j0 + jj;
    sigma[jj] = pdd[jj] = dtau_j[jj] = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T ddelta = dv[j * C + c];
      dd[c * kChunk + jj] = ddelta;
      sigma[jj] += values[j * C + c];
      pdd[jj] += w.pT[c * S + j] * ddelta;
    }
    pdp[jj] = tau * sigma[jj] * pdd[jj];  // sum_c p dp
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t jj = 0; jj < nt; ++jj) {
      const int64_t j = j0 + jj, at = c * S + j;
      const T p = w.pT[at], v = values[j * C + c], ddelta = dd[c * kChunk + jj];
      const T resid = sigma[jj] * p - v, dp = tau * sigma[jj] * ddelta;
      const T dl = p * (dp - pdp[jj]) + dce[j] * resid;
      dv[j * C + c] = tau * (pdd[jj] - ddelta) - dce[j] * w.logpT[at];
      dtau_j[jj] += resid * ddelta + dl * w.cosT[at];
      dlt[c * kChunk + jj] = tau * dl;
    }
  gemm_acc<T>(nt, n, C, dlt, 1, kChunk, w.wh, n, dk + j0 * n, n);       // dkh_j += tau sum_c dl_jc wh_c
  gemm_acc<T>(C, n, nt, dlt, kChunk, 1, w.kh + j0 * n, n, dW_part, n);  // dW_c += tau sum_j dl_jc kh_j
  T dtau = 0;
  for (int64_t jj = 0; jj < nt; ++jj) {
    dtau += dtau_j[jj];
    normalize_row_bwd(w.kh + (j0 + jj) * n, w.k_norm[j0 + jj], n, dk + (j0 + jj) * n);
  }
  return dtau;
}

// Everything after the contractions: dz from dzh (in dz's storage), the per-entry backward in a fixed
// partition of entry groups, then dW and dtau summed over the groups in order; dweight holds the
// projection's share on entry and the whole dweight on exit.
template <typename T>
void finish_bwd(Shape s, T gamma, const OpBwdArgs& args, const Workspace<T>& w, const T* dce, int num_threads) {
  const int64_t B = s.B, S = s.S, C = s.C, n = s.n;
  const T* values = static_cast<const T*>(args.values);
  const T tau = *static_cast<const T*>(args.tau);
  T* dz = static_cast<T*>(args.dz);
  T* dv = static_cast<T*>(args.dvalues);
  T* dk = static_cast<T*>(args.dkeys);
  T* dweight = static_cast<T*>(args.dweight);
  const int64_t nchunks = (S + kChunk - 1) / kChunk;
  const int64_t ngroups = std::min(nchunks, kGroups);
  Scratch<T> dW_part(ngroups * C * n, T(0));
  std::vector<T> dtau_part(ngroups, T(0));
#pragma omp parallel num_threads(num_threads)
  {
    Scratch<T> dd(C * kChunk), dlt(C * kChunk), dW(n);
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < B; ++i) {
      T* row = dz + i * n;
      for (int64_t k = 0; k < n; ++k) row[k] *= gamma;
      normalize_row_bwd(w.zh + i * n, w.z_norm[i], n, row);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < ngroups; ++g)
      for (int64_t t = g * nchunks / ngroups; t < (g + 1) * nchunks / ngroups; ++t) {
        const int64_t j0 = t * kChunk;
        dtau_part[g] += entries_bwd(s, tau, values, dce, w, j0, std::min(kChunk, S - j0), dv, dk,
                                    dW_part.data() + g * C * n, dd.data(), dlt.data());
      }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      std::fill(dW.begin(), dW.end(), T(0));
      for (int64_t g = 0; g < ngroups; ++g)
        for (int64_t k = 0; k < n; ++k) dW[k] += dW_part[(g * C + c) * n + k];
      normalize_row_bwd(w.wh + c * n, w.w_norm[c], n, dW.data());
      for (int64_t k = 0; k < n; ++k) dweight[c * n + k] += dW[k];
    }
  }
  T dtau = 0;
  for (int64_t g = 0; g < ngroups; ++g) dtau += dtau_part[g];
  *static_cast<T*>(args.dtau) = dtau;
}

template <typename T>
void op_backward(Shape s, T gamma, Dropout drop, const OpBwdArgs& args, int num_threads) {
  const Workspace<T> w(static_cast<T*>(const_cast<void*>(args.ws)), s);  // read only here
  const T* lse = static_cast<const T*>(args.lse);
  const T* dL = static_cast<const T*>(args.dloss);
  Scratch<T> dU(s.B * s.C * s.n), D(s.B), dce(s.S);
  project_bwd(s, w, static_cast<const T*>(args.a), static_cast<const T*>(args.grad), static_cast<const T*>(args.loss),
              static_cast<const T*>(args.dgrad), dL, dU.data(), D.data(), static_cast<T*>(args.dweight),
              num_threads);
  // The contractions write dzh, dkh and ddelta into the outputs dz, dkeys and dvalues, finished in place.
  const BwdArgs contraction{w.zs, w.kh, w.khT, w.deltaT, w.ce, lse, dU.data(), dL, D.data(),
                            args.dz, args.dkeys, args.dvalues, dce.data()};
  bwd(dtype_of<T>(), s, drop, contraction, num_threads);
  finish_bwd(s, gamma, args, w, dce.data(), num_threads);
}

}  // namespace

void op_fwd(DType dtype, Shape s, double gamma, Dropout drop, const OpFwdArgs& args, int num_threads) {
  if (dtype == DType::f64)
    op_forward<double>(s, gamma, drop, args, num_threads);
  else
    op_forward<float>(s, static_cast<float>(gamma), drop, args, num_threads);
}

void op_bwd(DType dtype, Shape s, double gamma, Dropout drop, const OpBwdArgs& args, int num_threads) {
  if (dtype == DType::f64)
    op_backward<double>(s, gamma, drop, args, num_threads);
  else
    op_backward<float>(s, static_cast<float>(gamma), drop, args, num_threads);
}

}  // namespace mn::MN_ISA_NS
