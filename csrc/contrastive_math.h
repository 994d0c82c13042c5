// Per-element math of the fused contrastive separation (CSC) loss, CoSA Eqs. (9)-(10).
//
// Shared by the CPU kernel (cpu/contrastive_cpu.cpp) and the CUDA kernel
// (cuda/contrastive_cuda.cu) so the CPU tests exercise the formulas the GPU runs.
// T is the accumulation type: float (for fp16/bf16/fp32 input) or double.
//
//   s_ij = x_i . x_j / tau                      (rows of x are L2-normalised)
//   nu_i = logsumexp_{n: y_n != y_i} s_in       (online: running max m, scaled sum s)
//   l_i  = mean_{p != i: y_p = y_i} softplus(nu_i - s_ip)
//   g_i  = mean_{p != i: y_p = y_i} sigmoid(nu_i - s_ip)
//   W_ij = (1/A) [y_i != y_j] g_i exp(s_ij - nu_i) - (1/A) [y_i = y_j, i != j] sigmoid(nu_i - s_ij) / P_i
//   dL/dx = (W + W^T) x / tau
//
// Every exp below has an argument <= 0 (nu_i >= s_in over negatives; -|z| otherwise),
// so nothing overflows; an empty log-sum-exp is (m = -inf, s = 0) and yields nu = -inf,
// which the softplus / sigmoid forms map to 0 without NaN.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

// static: each file that includes this header (and each per-instruction-set copy of the
// CPU kernels) keeps its own compiled functions, so the linker never mixes copies.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define CSC_HD static __host__ __device__ __forceinline__
#else
#define CSC_HD static inline
#endif

namespace wsss_blocks {
namespace csc {

// Lanes of the independent accumulators in the CPU loops: lets the compiler vectorise
// max/sum reductions without -ffast-math (each lane keeps IEEE order).
constexpr int kLanes = 16;

template <typename T>
CSC_HD T neg_inf() {
  return static_cast<T>(-INFINITY);
}

// exp for float. Device: expf. Host: a branch-free Cephes-style polynomial (max relative
// error ~1e-7, exp(x < -87.3) = 0, including -inf) that GCC vectorises inside loops;
// std::exp would be a scalar libm call per element.
CSC_HD float exp_acc(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float lo = -87.33654f, hi = 88.37626f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  float fn = xc * 1.44269504088896341f;
  fn = (fn + 12582912.0f) - 12582912.0f;  // round to nearest integer (1.5 * 2^23 trick)
  float r = xc - fn * 0.693359375f;        // Cody-Waite: ln 2 split in two parts
  r = r + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;  // 2^fn
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? 0.0f : y * scale;
#endif
}

CSC_HD double exp_acc(double x) {
  return exp(x);
}

// log(1 + e) for e in [0, 1] (the softplus tail). Device: log1pf. Host: Cephes' logf
// polynomial, branch-free so loops vectorise; relative error <= 2e-7, exact for tiny e
// (no 1 + e rounding below sqrt(2) - 1).
CSC_HD float log1p_acc(float e) {
#if defined(__CUDA_ARCH__)
  return log1pf(e);
#else
  const bool hi = e >= 0.41421356f;
  const float f = hi ? 0.5f * (1.0f + e) - 1.0f : e;  // log(1+e) = log(1+f) + k ln 2
  const float k = hi ? 1.0f : 0.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = p * f * z;
  y = y - 2.12194440e-4f * k;
  y = y - 0.5f * z;
  return f + y + 0.693359375f * k;
#endif
}

CSC_HD double log1p_acc(double x) {
  return log1p(x);
}

CSC_HD float log_acc(float x) {
  return logf(x);
}

CSC_HD double log_acc(double x) {
  return log(x);
}

// Merge a partial log-sum-exp (m2, s2) = log(s2) + m2 into the running (m, s).
template <typename T>
CSC_HD void lse_merge(T& m, T& s, T m2, T s2) {
  if (!(s2 > T(0))) return;  // empty partial
  if (m2 > m) {
    s = s * exp_acc(m - m2) + s2;  // exp(-inf) = 0 when the running part was empty
    m = m2;
  } else {
    s = s + s2 * exp_acc(m2 - m);
  }
}

// Online update with one value v (the CUDA kernel streams element by element).
template <typename T>
CSC_HD void lse_push(T& m, T& s, T v) {
  if (v > m) {
    s = s * exp_acc(m - v) + T(1);
    m = v;
  } else if (v > neg_inf<T>()) {
    s = s + exp_acc(v - m);
  }
}

template <typename T>
CSC_HD T lse_value(T m, T s) {
  return s > T(0) ? m + log_acc(s) : neg_inf<T>();
}

// softplus(z) = log(1 + e^z) and sigmoid(z), sharing e = exp(-|z|) (z may be -inf).
template <typename T>
CSC_HD void softplus_sigmoid(T z, T& softplus, T& sigmoid) {
  const T az = z < T(0) ? -z : z;
  const T e = exp_acc(-az);
  const T r = T(1) / (T(1) + e);  // one division for both branches of the sigmoid
  softplus = (z > T(0) ? z : T(0)) + log1p_acc(e);
  sigmoid = z >= T(0) ? r : e * r;
}

// W_ab = dL/ds_ab through anchor a's loss, from anchor a's coefficients
// neg_coef_a = g_a / A and pos_coef_a = 1 / (A P_a) (0 when P_a = 0). `same` means
// y_a = y_b; the caller zeroes a = b. One exp per call:
//   negative pair: g_a/A * exp(s - nu_a);  positive pair: -sigmoid(nu_a - s) / (A P_a).
template <typename T>
CSC_HD T pair_weight(bool same, T s, T nu_a, T neg_coef_a, T pos_coef_a) {
  const T z = nu_a - s;
  const T az = z < T(0) ? -z : z;
  const T e = exp_acc(same ? -az : -z);
  const T r = T(1) / (T(1) + e);
  const T sig = z >= T(0) ? r : e * r;
  return same ? -pos_coef_a * sig : neg_coef_a * e;
}

}  // namespace csc
}  // namespace wsss_blocks
