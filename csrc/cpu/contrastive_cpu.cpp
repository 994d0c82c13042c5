// CPU entry points of the fused CSC loss: input checks, dtype preparation, and dispatch to
// the kernels compiled for the widest instruction set this CPU has (kernels_impl.h, built
// as baseline x86-64 in kernels_baseline.cpp and with AVX2 + FMA in kernels_avx2.cpp), as
// ATen dispatches its per-capability kernels. WSSS_BLOCKS_CPU_ISA=baseline forces the
// portable copy. O(N) memory beyond the inputs, nothing N x N stored.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "../contrastive.h"
#include "kernels.h"

namespace wsss_blocks {
namespace {

// True when the AVX2 copy was built and this CPU runs it (read once).
bool use_avx2_fma() {
#if CSC_HAVE_AVX2_COPY
  static const bool use = [] {
    const char* forced = std::getenv("WSSS_BLOCKS_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> csc_forward_cpu(
    const at::Tensor& x_in, const at::Tensor& labels_in, double tau) {
  check_csc_inputs(x_in, labels_in, tau);
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), "wsss_blocks csc_forward_cpu: features on ",
                    x_in.device());
  // Internal ATen calls (GEMM tiles) must not record autograd history.
  const at::AutoDispatchBelowADInplaceOrView guard;
  const auto acc = csc_acc_type(x_in.scalar_type());
  const int64_t n = x_in.size(0);
  const at::Tensor x = x_in.detach().to(acc).contiguous();
  const at::Tensor labels = labels_in.contiguous();
  at::Tensor nu = at::empty({n}, x.options());
  at::Tensor g = at::zeros({n}, x.options());
  at::Tensor count = at::zeros({n}, x.options());
  at::Tensor loss = at::zeros({}, x.options().dtype(at::kDouble));
  if (n == 0) return {loss.to(x_in.scalar_type()), nu, g, count};
  at::Tensor ell = at::empty({n}, x.options());
  const int64_t* lab = labels.data_ptr<int64_t>();
  if (use_avx2_fma()) {
    CSC_AVX2_CALL(forward_passes(x, lab, tau, nu, ell, g, count));
  } else {
    baseline::forward_passes(x, lab, tau, nu, ell, g, count);
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csc_forward_cpu", [&] {
    // L = mean of l_i over anchors with a positive; a serial sum keeps it deterministic.
    const scalar_t* e = ell.data_ptr<scalar_t>();
    const scalar_t* c = count.data_ptr<scalar_t>();
    double total = 0.0;
    int64_t anchors = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (c[i] > 0) {
        total += static_cast<double>(e[i]);
        ++anchors;
      }
    }
    loss.fill_(anchors > 0 ? total / static_cast<double>(anchors) : 0.0);
  });
  return {loss.to(x_in.scalar_type()), nu, g, count};
}

at::Tensor csc_backward_cpu(const at::Tensor& grad, const at::Tensor& x_in,
                            const at::Tensor& labels_in, const at::Tensor& nu_in,
                            const at::Tensor& g_in, const at::Tensor& count_in, double tau) {
  check_csc_inputs(x_in, labels_in, tau);
  check_csc_stats(grad, x_in, nu_in, g_in, count_in);
  const at::AutoDispatchBelowADInplaceOrView guard;
  const auto acc = csc_acc_type(x_in.scalar_type());
  const int64_t n = x_in.size(0);
  const at::Tensor x = x_in.detach().to(acc).contiguous();
  at::Tensor dx = at::zeros_like(x);
  const at::Tensor count = count_in.contiguous();
  const int64_t anchors = n ? (count > 0).sum().item<int64_t>() : 0;
  if (anchors == 0) return dx.to(x_in.scalar_type());
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor nu = nu_in.contiguous();
  // neg_coef_i = g_i / A, pos_coef_i = 1 / (A P_i) (0 without positives), A = #anchors.
  const at::Tensor neg_coef = g_in.contiguous() / static_cast<double>(anchors);
  const at::Tensor pos_coef =
      at::where(count > 0, 1.0 / (count.clamp_min(1) * static_cast<double>(anchors)),
                at::zeros_like(count));
  const int64_t* lab = labels.data_ptr<int64_t>();
  if (use_avx2_fma()) {
    CSC_AVX2_CALL(backward_pass(x, lab, tau, nu, neg_coef, pos_coef, dx));
  } else {
    baseline::backward_pass(x, lab, tau, nu, neg_coef, pos_coef, dx);
  }
  dx.mul_(grad.to(acc) / tau);
  return dx.to(x_in.scalar_type());
}

}  // namespace

const char* csc_cpu_isa() {
  return use_avx2_fma() ? "avx2+fma" : "baseline";
}

TORCH_LIBRARY_IMPL(wsss_blocks, CPU, m) {
  m.impl("csc_forward", &csc_forward_cpu);
  m.impl("_csc_backward", &csc_backward_cpu);
}

}  // namespace wsss_blocks
