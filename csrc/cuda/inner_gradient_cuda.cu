// CUDA kernels of inner_gradient (docs/design.md, "Kernel plan"), float32 and float64, an implementation
// independent of the Triton one. Four kernels, each output element owned by exactly one thread that accumulates
// in a fixed order, so reruns are bitwise equal (no atomics). Nothing of size B x S x C, S x C x n or B x S x n exists.
//   lse_kernel        grid (B):              log-sum-exp of query i's scores; fixed-shape tree reduction
//   fwd_kernel        grid (B/kQB, C n/kEB): U[i, c, k] and loss for kQB queries x kEB (c, k) elements;
//                                            attention weights of each entry tile computed once into shared memory
//   bwd_query_kernel  grid (B):              dzh_i = sum_j ds_ij kh_j (one thread per entry of the tile for ds)
//   bwd_entry_kernel  grid (S/kET):          ddelta, dkh, dce of kET entries, looping over the queries
// khT (n x S) makes the per-entry dot products coalesced: consecutive threads read consecutive entries.
#ifdef MN_CUDA_EMULATION  // the CPU emulation of tests/cuda_emulation: these kernels tested without a GPU
#include "cuda_emulation.h"
#else
#include <cuda_runtime.h>
#define MN_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>
#endif

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../api.h"
#include "../dropout_hash.h"

namespace mn {
namespace {

constexpr int kThreads = 256;
constexpr int kQB = 8;                 // fwd: queries per block
constexpr int kEPT = 4;                // fwd: (c, k) elements per thread
constexpr int kEB = kThreads * kEPT;   // fwd: (c, k) elements per block
constexpr int kST = kThreads / kQB;    // fwd: entries per tile (one weight per thread)
constexpr int kCB = 16;                // bwd_query: classes per register chunk
constexpr int kET = 32;                // bwd_entry: entries per block (one warp wide)
constexpr int kQC = kThreads * 4 / kET;  // bwd_entry: queries whose weights are computed together
constexpr int kCC = 64;                // bwd_entry: classes per shared-memory chunk

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float lg(float x) { return logf(x); }
__device__ __forceinline__ double lg(double x) { return log(x); }

template <typename T>
struct Inputs {
  int64_t B, S, C, n;
  Dropout drop;
  const T *zs, *kh, *khT, *deltaT, *ce;

  __device__ bool kept(int64_t i, int64_t j) const {
    return drop.threshold == 0 || entry_kept(static_cast<uint32_t>(*drop.seed_mix), drop.threshold, i, j);
  }
  __device__ T score(int64_t i, int64_t j) const {  // gamma zh_i . kh_j
    T s = 0;
    for (int64_t k = 0; k < n; ++k) s += zs[i * n + k] * khT[k * S + j];
    return s;
  }
  // Attention weight exp(s_ij - lse_i); 0 for a dropped entry or out of range.
  __device__ T weight(int64_t i, int64_t j, const T* lse) const {
    if (i >= B || j >= S || !kept(i, j)) return T(0);
    return ex(score(i, j) - lse[i]);
  }
};

// NaN propagates as in IEEE arithmetic: a NaN score makes the running maximum NaN (`s > m` alone would skip it),
// the tree reduction keeps a NaN maximum from either half, and a NaN sum gives a NaN lse, not the -inf that
// means "every entry dropped". Then every kept weight of that query is NaN.
template <typename T>
__global__ void lse_kernel(Inputs<T> in, T* lse) {
  __shared__ T m_sh[kThreads], l_sh[kThreads];
  const int64_t i = blockIdx.x;
  const int t = threadIdx.x;
  const T ninf = -INFINITY;
  T m = ninf, l = 0;
  for (int64_t j = t; j < in.S; j += kThreads) {
    if (!in.kept(i, j)) continue;
    const T s = in.score(i, j);
    if (s > m || s != s) {
      l = l * ex(m - s) + T(1);
      m = s;
    } else {
      l += ex(s - m);
    }
  }
  m_sh[t] = m;
  l_sh[t] = l;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (t < half) {
      const T ma = m_sh[t], mb = m_sh[t + half];
      const T mx = ma > mb || ma != ma ? ma : mb;  // NaN if either is
      if (mx != ninf) {
        l_sh[t] = l_sh[t] * ex(ma - mx) + l_sh[t + half] * ex(mb - mx);
        m_sh[t] = mx;
      }
    }
    __syncthreads();
  }
  if (t == 0) lse[i] = l_sh[0] == T(0) ? ninf : m_sh[0] + lg(l_sh[0]);
}

template <typename T>
__global__ void fwd_kernel(Inputs<T> in, const T* lse, T* U, T* loss) {
  __shared__ T w_sh[kQB][kST];
  const int t = threadIdx.x;
  const int64_t i0 = int64_t(blockIdx.x) * kQB, e0 = int64_t(blockIdx.y) * kEB;
  const int64_t Cn = in.C * in.n;
  T acc[kQB][kEPT] = {};
  T loss_acc = 0;  // thread q < kQB of the blocks with blockIdx.y == 0: loss of query i0 + q
  for (int64_t j0 = 0; j0 < in.S; j0 += kST) {
    w_sh[t / kST][t % kST] = in.weight(i0 + t / kST, j0 + t % kST, lse);
    __syncthreads();
    if (blockIdx.y == 0 && t < kQB)
      for (int jj = 0; jj < kST && j0 + jj < in.S; ++jj) loss_acc += w_sh[t][jj] * in.ce[j0 + jj];
    for (int u = 0; u < kEPT; ++u) {
      const int64_t e = e0 + t + u * kThreads;
      if (e >= Cn) break;
      const int64_t c = e / in.n, k = e % in.n;
      for (int jj = 0; jj < kST && j0 + jj < in.S; ++jj) {
        const int64_t j = j0 + jj;
        const T a = in.deltaT[c * in.S + j] * in.kh[j * in.n + k];
        for (int q = 0; q < kQB; ++q) acc[q][u] += w_sh[q][jj] * a;
      }
    }
    __syncthreads();  // w_sh is overwritten by the next tile
  }
  for (int q = 0; q < kQB && i0 + q < in.B; ++q)
    for (int u = 0; u < kEPT; ++u) {
      const int64_t e = e0 + t + u * kThreads;
      if (e < Cn) U[(i0 + q) * Cn + e] = acc[q][u];
    }
  if (blockIdx.y == 0 && t < kQB && i0 + t < in.B) loss[i0 + t] = loss_acc;
}

// dzh_i (B x n, zeroed by the caller) += sum_j ds_ij kh_j, ds_ij = w_ij (sum_c delta_jc X_icj + dL_i ce_j - D_i).
template <typename T>
__global__ void bwd_query_kernel(Inputs<T> in, const T* lse, const T* dU, const T* dL, const T* D, T* dzh) {
  __shared__ T ds_sh[kThreads];
  const int64_t i = blockIdx.x, n = in.n, C = in.C;
  const int t = threadIdx.x;
  const T* dUi = dU + i * C * n;
  for (int64_t j0 = 0; j0 < in.S; j0 += kThreads) {
    const int64_t j = j0 + t;
    const T w = in.weight(i, j, lse);
    T r = 0;
    if (w != T(0)) {
      for (int64_t c0 = 0; c0 < C; c0 += kCB) {
        T x[kCB] = {};
        for (int64_t k = 0; k < n; ++k) {
          const T kv = in.khT[k * in.S + j];
          for (int cc = 0; cc < kCB; ++cc)
            if (c0 + cc < C) x[cc] += dUi[(c0 + cc) * n + k] * kv;
        }
        for (int cc = 0; cc < kCB && c0 + cc < C; ++cc) r += in.deltaT[(c0 + cc) * in.S + j] * x[cc];
      }
      r = w * (r + dL[i] * in.ce[j] - D[i]);
    }
    ds_sh[t] = r;
    __syncthreads();
    for (int64_t k = t; k < n; k += kThreads) {
      T acc = dzh[i * n + k];
      for (int jj = 0; jj < kThreads && j0 + jj < in.S; ++jj) acc += ds_sh[jj] * in.kh[(j0 + jj) * n + k];
      dzh[i * n + k] = acc;
    }
    __syncthreads();
  }
}

// For entries [j0, j0 + kET) (outputs zeroed by the caller), looping over the queries in order:
//   ddelta_jc += w_ij X_icj,  dkh_j += sum_c w_ij delta_jc dU_ic + ds_ij zs_i,  dce_j += w_ij dL_i.
template <typename T>
__global__ void bwd_entry_kernel(Inputs<T> in, const T* lse, const T* dU, const T* dL, const T* D, T* dkh,
                                 T* ddelta, T* dce) {
  __shared__ T w_sh[kQC][kET];
  __shared__ T a_sh[kCC][kET];  // w_ij delta_jc of one class chunk
  __shared__ T p_sh[kCC][kET];  // w_ij delta_jc X_icj of one class chunk
  __shared__ T r_sh[kET];       // sum over the chunks of p_sh, then ds_ij
  const int64_t j0 = int64_t(blockIdx.x) * kET, n = in.n, C = in.C, S = in.S;
  const int t = threadIdx.x;
  T dce_acc = 0;  // thread t < kET: entry j0 + t
  for (int64_t q0 = 0; q0 < in.B; q0 += kQC) {
    for (int p = t; p < kQC * kET; p += kThreads) w_sh[p / kET][p % kET] = in.weight(q0 + p / kET, j0 + p % kET, lse);
    __syncthreads();
    for (int q = 0; q < kQC && q0 + q < in.B; ++q) {
      const int64_t i = q0 + q;
      const T* dUi = dU + i * C * n;
      if (t < kET) r_sh[t] = 0;
      for (int64_t c0 = 0; c0 < C; c0 += kCC) {
        for (int p = t; p < kCC * kET; p += kThreads) {
          const int cc = p / kET, jj = p % kET;
          const int64_t c = c0 + cc, j = j0 + jj;
          T a = 0, pr = 0;
          const T w = w_sh[q][jj];
          if (c < C && j < S && w != T(0)) {
            T x = 0;
            for (int64_t k = 0; k < n; ++k) x += dUi[c * n + k] * in.khT[k * S + j];
            a = w * in.deltaT[c * S + j];
            pr = a * x;
            ddelta[j * C + c] += w * x;
          }
          a_sh[cc][jj] = a;
          p_sh[cc][jj] = pr;
        }
        __syncthreads();
        if (t < kET)
          for (int cc = 0; cc < kCC; ++cc) r_sh[t] += p_sh[cc][t];
        for (int64_t e = t; e < kET * n; e += kThreads) {
          const int jj = int(e / n);
          const int64_t k = e % n, j = j0 + jj;
          if (j >= S) break;
          T acc = dkh[j * n + k];
          for (int cc = 0; cc < kCC && c0 + cc < C; ++cc) acc += a_sh[cc][jj] * dUi[(c0 + cc) * n + k];
          dkh[j * n + k] = acc;
        }
        __syncthreads();
      }
      if (t < kET && j0 + t < S) {
        const T w = w_sh[q][t];
        r_sh[t] += w * (dL[i] * in.ce[j0 + t] - D[i]);  // r_sh already holds w_ij sum_c delta_jc X_icj
        dce_acc += w * dL[i];
      }
      __syncthreads();
      for (int64_t e = t; e < kET * n; e += kThreads) {
        const int jj = int(e / n);
        const int64_t k = e % n, j = j0 + jj;
        if (j >= S) break;
        dkh[j * n + k] += r_sh[jj] * in.zs[i * n + k];
      }
      __syncthreads();
    }
  }
  if (t < kET && j0 + t < S) dce[j0 + t] = dce_acc;
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("mn._C CUDA ") + what + ": " + cudaGetErrorString(err));
}

unsigned blocks(int64_t total, int64_t per_block) { return unsigned((total + per_block - 1) / per_block); }

template <typename T>
Inputs<T> inputs(Shape sh, Dropout drop, const void* zs, const void* kh, const void* khT, const void* deltaT,
                 const void* ce) {
  return {sh.B, sh.S, sh.C, sh.n, drop, static_cast<const T*>(zs), static_cast<const T*>(kh),
          static_cast<const T*>(khT), static_cast<const T*>(deltaT), static_cast<const T*>(ce)};
}

template <typename T>
void forward(Shape sh, Dropout drop, const FwdArgs& a, cudaStream_t stream) {
  const auto in = inputs<T>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce);
  T* lse = static_cast<T*>(a.lse);
  MN_LAUNCH(lse_kernel<T>, unsigned(sh.B), kThreads, stream)(in, lse);
  check(cudaGetLastError(), "lse_kernel launch");
  const dim3 grid(blocks(sh.B, kQB), blocks(sh.C * sh.n, kEB));
  MN_LAUNCH(fwd_kernel<T>, grid, kThreads, stream)(in, lse, static_cast<T*>(a.U), static_cast<T*>(a.loss));
  check(cudaGetLastError(), "fwd_kernel launch");
}

template <typename T>
void backward(Shape sh, Dropout drop, const BwdArgs& a, cudaStream_t stream) {
  const auto in = inputs<T>(sh, drop, a.zs, a.kh, a.khT, a.deltaT, a.ce);
  const T *lse = static_cast<const T*>(a.lse), *dU = static_cast<const T*>(a.dU);
  const T *dL = static_cast<const T*>(a.dL), *D = static_cast<const T*>(a.D);
  MN_LAUNCH(bwd_query_kernel<T>, unsigned(sh.B), kThreads, stream)(in, lse, dU, dL, D, static_cast<T*>(a.dzh));
  check(cudaGetLastError(), "bwd_query_kernel launch");
  MN_LAUNCH(bwd_entry_kernel<T>, blocks(sh.S, kET), kThreads, stream)(
      in, lse, dU, dL, D, static_cast<T*>(a.dkh), static_cast<T*>(a.ddelta), static_cast<T*>(a.dce));
  check(cudaGetLastError(), "bwd_entry_kernel launch");
}

}  // namespace

void inner_gradient_fwd_cuda(DType dtype, Shape shape, Dropout drop, const FwdArgs& args, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == DType::f64)
    forward<double>(shape, drop, args, s);
  else
    forward<float>(shape, drop, args, s);
}

void inner_gradient_bwd_cuda(DType dtype, Shape shape, Dropout drop, const BwdArgs& args, uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == DType::f64)
    backward<double>(shape, drop, args, s);
  else
    backward<float>(shape, drop, args, s);
}

}  // namespace mn
