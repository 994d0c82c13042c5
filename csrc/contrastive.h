// Shared declarations of the fused CSC operator (schemas in contrastive.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace wsss_blocks {

// Largest feature dimension D the kernels accept (the CUDA kernel's tiles assume it).
constexpr int64_t kCscMaxDim = 1024;

// TORCH_CHECKs shared by every backend: features (N, D) float16/bfloat16/float32/float64
// with 1 <= D <= 1024, labels (N,) int64 on the same device, tau finite and > 0.
void check_csc_inputs(const at::Tensor& x, const at::Tensor& labels, double tau);

// Checks of the statistics passed to the backward op: nu, g, count (N,) in the
// accumulation dtype, grad a 0-d tensor.
void check_csc_stats(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& nu,
                     const at::Tensor& g, const at::Tensor& count);

// float64 for float64 input, float32 otherwise.
at::ScalarType csc_acc_type(at::ScalarType t);

// The instruction set the CPU kernels run with on this machine: "avx2+fma" or "baseline".
const char* csc_cpu_isa();

}  // namespace wsss_blocks
