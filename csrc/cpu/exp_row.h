// A vectorised exp for the CPU kernels (one instruction set per translation unit, like gemm.h).
#pragma once
#include <cstdint>
#include <type_traits>

#include "gemm.h"

namespace mn::MN_ISA_NS {

// exp(x[0..nt)) in place, vectorised; x has room for nt rounded up to a whole vector (the callers' row
// strides are multiples of every width). glibc's exp is scalar: at small C it was a visible share of the
// kernel time (bench/results/cpu-native-notes.md).
// Cephes' method: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by a polynomial (float) or a Pade form (double),
// times 2^k written into the exponent field. x below the log of the smallest normal number (-inf for a
// dropped entry included) gives 0; NaN gives NaN (the polynomial carries it; only x < lo is masked to 0).
// A pure function of each element: results do not depend on the blocking.
template <typename T>
void exp_row(T* x, int64_t nt) {
  using V = typename Vec<T>::type;
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef I IV __attribute__((vector_size(MN_VEC_BYTES)));
  constexpr bool f32 = sizeof(T) == 4;
  constexpr int W = Vec<T>::width;
  constexpr T lo = f32 ? -87.33654f : -708.3964185322641, hi = f32 ? 88.0f : 709.0;
  constexpr T magic = f32 ? 12582912.0f : 6755399441055744.0;  // 1.5 * 2^23 / 2^52: adding it rounds to an integer
  constexpr I bias = f32 ? 127 : 1023, mant = f32 ? 23 : 52;
  const V vlo = V{} + lo, vhi = V{} + hi, vmagic = V{} + magic;
  for (int64_t i = 0; i < nt; i += W) {
    const V v = load_vec(x + i);
    V c = v < vlo ? vlo : v;
    c = c > vhi ? vhi : c;
    const V t = c * T(1.4426950408889634) + vmagic;
    const V k = t - vmagic;  // round(c / ln2)
    V y;
    if constexpr (f32) {
      const V r = c - k * 0.693359375f - k * -2.12194440e-4f;
      y = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
            1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r + 1.0f;
    } else {
      const V r = c - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6, rr = r * r;
      const V p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
      const V q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
                  2.00000000000000000009e0;
      y = 1.0 + 2.0 * (p / (q - p));
    }
    const IV scale = (((IV)t - (IV)vmagic) + bias) << mant;  // the bits of 2^k
    // 0 below the range: the mask clears the lanes with v < lo, not those with !(v >= lo), so a NaN lane keeps
    // y * 2^k = NaN (one andnot instead of an and: no extra instruction).
    const V e = (V)((IV)(y * (V)scale) & ~(IV)(v < vlo));
    store_vec(x + i, e);
  }
}

}  // namespace mn::MN_ISA_NS
