// Entry points of the CPU CSC kernels, one copy per instruction set (kernels_impl.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

// The AVX2 + FMA copy exists where GCC can target it per function (x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CSC_HAVE_AVX2_COPY 1
#define CSC_AVX2_CALL(call) avx2_fma::call
#else
#define CSC_HAVE_AVX2_COPY 0
#define CSC_AVX2_CALL(call) baseline::call
#endif

namespace wsss_blocks {

#define CSC_DECLARE_CPU_KERNELS(ns)                                                         \
  namespace ns {                                                                            \
  /* nu (negatives' log-sum-exp), ell, g and count per anchor of x (N, D), acc dtype. */    \
  void forward_passes(const at::Tensor& x, const int64_t* lab, double tau, at::Tensor& nu,  \
                      at::Tensor& ell, at::Tensor& g, at::Tensor& count);                   \
  /* dx += (W + W^T) x, W from contrastive_math.h (the caller scales by grad / tau). */     \
  void backward_pass(const at::Tensor& x, const int64_t* lab, double tau,                   \
                     const at::Tensor& nu, const at::Tensor& neg_coef,                      \
                     const at::Tensor& pos_coef, at::Tensor& dx);                           \
  }

CSC_DECLARE_CPU_KERNELS(baseline)
#if CSC_HAVE_AVX2_COPY
CSC_DECLARE_CPU_KERNELS(avx2_fma)
#endif

#undef CSC_DECLARE_CPU_KERNELS

}  // namespace wsss_blocks
