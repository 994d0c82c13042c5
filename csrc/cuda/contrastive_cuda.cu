// CUDA kernels of the fused CSC loss: O(N) memory beyond the inputs, nothing N x N stored.
//
// One thread per anchor row i, kRows rows per block. Column tiles of kCols anchors stream
// through shared memory in chunks of kDimChunk channels (any D up to 1024); each thread
// keeps its kCols dot products in fp32 (fp64 for fp64 input) registers, then applies the
// per-element math of contrastive_math.h. Every thread owns its row's outputs (nu, l, g,
// and in backward the row of dL/dx), so there are no atomics and results are deterministic.
// Tiles are skipped by label range like the CPU kernel (uniform across the block).
//
// Three passes share one kernel template:
//   kNegatives: nu_i = online logsumexp over columns with another label.
//   kPositives: l_i, g_i, P_i from softplus / sigmoid of (nu_i - s_ip) over positives.
//   kBackward : w_ij = W_ij + W_ji (recomputed s_ij), then dx_i += sum_j w_ij x_j.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../contrastive.h"
#include "../contrastive_math.h"

namespace wsss_blocks {
namespace {

constexpr int kRows = 128;     // threads (= anchor rows) per block
constexpr int kCols = 32;      // columns per shared-memory tile
constexpr int kDimChunk = 32;  // channels per shared-memory chunk

enum Pass { kNegatives = 0, kPositives = 1, kBackward = 2 };

template <int PASS, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kRows)
    csc_pass_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ lab, int64_t n,
                    int64_t d, acc_t inv_tau, const acc_t* __restrict__ nu,
                    const acc_t* __restrict__ neg_coef, const acc_t* __restrict__ pos_coef,
                    acc_t* __restrict__ out0, acc_t* __restrict__ out1,
                    acc_t* __restrict__ out2) {
  __shared__ acc_t xi_s[kRows][kDimChunk + 1];
  __shared__ acc_t xj_s[kCols][kDimChunk + 1];
  __shared__ int64_t lab_i_s[kRows];
  __shared__ int64_t lab_j_s[kCols];
  __shared__ acc_t nu_j_s[kCols], nc_j_s[kCols], pc_j_s[kCols];

  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t i = row0 + tid;
  const bool valid = i < n;
  const int rows_here = static_cast<int>(n - row0 < kRows ? n - row0 : kRows);

  lab_i_s[tid] = valid ? lab[i] : 0;
  __syncthreads();
  int64_t rlo = lab_i_s[0], rhi = lab_i_s[0];
  for (int r = 1; r < rows_here; ++r) {
    rlo = lab_i_s[r] < rlo ? lab_i_s[r] : rlo;
    rhi = lab_i_s[r] > rhi ? lab_i_s[r] : rhi;
  }
  const int64_t li = lab_i_s[tid];
  const acc_t nui = (PASS != kNegatives && valid) ? nu[i] : acc_t(0);
  const acc_t nci = (PASS == kBackward && valid) ? neg_coef[i] : acc_t(0);
  const acc_t pci = (PASS == kBackward && valid) ? pos_coef[i] : acc_t(0);

  acc_t m = csc::neg_inf<acc_t>(), s = acc_t(0);  // kNegatives: online logsumexp
  acc_t sp = 0, sg = 0, cnt = 0;                  // kPositives: sums over positives

  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int cols_here = static_cast<int>(n - j0 < kCols ? n - j0 : kCols);
    __syncthreads();  // the previous tile's shared data is no longer read
    if (tid < kCols) {
      const int64_t j = j0 + tid;
      lab_j_s[tid] = tid < cols_here ? lab[j] : 0;
      if (PASS == kBackward) {
        nu_j_s[tid] = tid < cols_here ? nu[j] : acc_t(0);
        nc_j_s[tid] = tid < cols_here ? neg_coef[j] : acc_t(0);
        pc_j_s[tid] = tid < cols_here ? pos_coef[j] : acc_t(0);
      }
    }
    __syncthreads();
    int64_t clo = lab_j_s[0], chi = lab_j_s[0];
    for (int c = 1; c < cols_here; ++c) {
      clo = lab_j_s[c] < clo ? lab_j_s[c] : clo;
      chi = lab_j_s[c] > chi ? lab_j_s[c] : chi;
    }
    // Uniform skips: no negatives (one shared label) or no positives (disjoint labels).
    if (PASS == kNegatives && rlo == rhi && clo == chi && rlo == clo) continue;
    if (PASS == kPositives && (rhi < clo || chi < rlo)) continue;

    acc_t dot[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) dot[c] = acc_t(0);
    for (int64_t d0 = 0; d0 < d; d0 += kDimChunk) {
      for (int e = tid; e < kRows * kDimChunk; e += kRows) {
        const int r = e / kDimChunk, k = e % kDimChunk;
        const int64_t row = row0 + r, col = d0 + k;
        xi_s[r][k] = (row < n && col < d) ? static_cast<acc_t>(x[row * d + col]) : acc_t(0);
      }
      for (int e = tid; e < kCols * kDimChunk; e += kRows) {
        const int c = e / kDimChunk, k = e % kDimChunk;
        const int64_t row = j0 + c, col = d0 + k;
        xj_s[c][k] = (row < n && col < d) ? static_cast<acc_t>(x[row * d + col]) : acc_t(0);
      }
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kDimChunk; ++k) {
        const acc_t xik = xi_s[tid][k];
#pragma unroll
        for (int c = 0; c < kCols; ++c) dot[c] += xik * xj_s[c][k];
      }
      __syncthreads();
    }

    // Fully unrolled epilogues keep dot[] in registers (no dynamic indexing).
    if (PASS == kNegatives) {
      if (valid) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          if (c < cols_here && lab_j_s[c] != li) csc::lse_push(m, s, dot[c] * inv_tau);
        }
      }
    } else if (PASS == kPositives) {
      if (valid) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          if (c >= cols_here || lab_j_s[c] != li || j0 + c == i) continue;
          acc_t softplus, sigmoid;
          csc::softplus_sigmoid(nui - dot[c] * inv_tau, softplus, sigmoid);
          sp += softplus;
          sg += sigmoid;
          cnt += acc_t(1);
        }
      }
    } else {
      // w_ij = W_ij + W_ji, zero on the diagonal and outside the matrix.
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const acc_t sij = dot[c] * inv_tau;
        const bool same = lab_j_s[c] == li;
        const acc_t w = csc::pair_weight(same, sij, nui, nci, pci) +
                        csc::pair_weight(same, sij, nu_j_s[c], nc_j_s[c], pc_j_s[c]);
        dot[c] = (valid && c < cols_here && j0 + c != i) ? w : acc_t(0);
      }
      // dx_i += sum_c w_ic x_c, streaming the column tile's channels again.
      for (int64_t d0 = 0; d0 < d; d0 += kDimChunk) {
        for (int e = tid; e < kCols * kDimChunk; e += kRows) {
          const int c = e / kDimChunk, k = e % kDimChunk;
          const int64_t row = j0 + c, col = d0 + k;
          xj_s[c][k] = (row < n && col < d) ? static_cast<acc_t>(x[row * d + col]) : acc_t(0);
        }
        __syncthreads();
        if (valid) {
          const int kmax = static_cast<int>(d - d0 < kDimChunk ? d - d0 : kDimChunk);
          for (int k = 0; k < kmax; ++k) {
            acc_t acc = acc_t(0);
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc += dot[c] * xj_s[c][k];
            out0[i * d + d0 + k] += acc;
          }
        }
        __syncthreads();
      }
    }
  }

  if (!valid) return;
  if (PASS == kNegatives) {
    out0[i] = csc::lse_value(m, s);
  } else if (PASS == kPositives) {
    const acc_t inv = cnt > acc_t(0) ? acc_t(1) / cnt : acc_t(0);
    out0[i] = sp * inv;  // l_i
    out1[i] = sg * inv;  // g_i
    out2[i] = cnt;       // P_i
  }
}

template <int PASS, typename scalar_t, typename acc_t>
void launch(const at::Tensor& x, const at::Tensor& labels, double tau, const acc_t* nu,
            const acc_t* neg_coef, const acc_t* pos_coef, acc_t* out0, acc_t* out1,
            acc_t* out2) {
  const int64_t n = x.size(0);
  const int64_t blocks = (n + kRows - 1) / kRows;
  auto stream = c10::cuda::getCurrentCUDAStream();
  csc_pass_kernel<PASS, scalar_t, acc_t><<<static_cast<unsigned>(blocks), kRows, 0, stream>>>(
      x.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), n, x.size(1),
      static_cast<acc_t>(1.0 / tau), nu, neg_coef, pos_coef, out0, out1, out2);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> csc_forward_cuda(
    const at::Tensor& x_in, const at::Tensor& labels_in, double tau) {
  check_csc_inputs(x_in, labels_in, tau);
  TORCH_CHECK_VALUE(x_in.is_cuda(), "wsss_blocks csc_forward_cuda: features on ",
                    x_in.device());
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::AutoDispatchBelowADInplaceOrView guard;
  const int64_t n = x_in.size(0);
  const at::Tensor x = x_in.detach().contiguous();
  const at::Tensor labels = labels_in.contiguous();
  const auto opts = x.options().dtype(csc_acc_type(x.scalar_type()));
  at::Tensor nu = at::empty({n}, opts);
  at::Tensor ell = at::zeros({n}, opts);
  at::Tensor g = at::zeros({n}, opts);
  at::Tensor count = at::zeros({n}, opts);
  if (n == 0) return {at::zeros({}, x.options()), nu, g, count};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "csc_forward_cuda",
                                  [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    launch<kNegatives, scalar_t, acc_t>(x, labels, tau, nullptr, nullptr, nullptr,
                                        nu.data_ptr<acc_t>(), nullptr, nullptr);
    launch<kPositives, scalar_t, acc_t>(x, labels, tau, nu.data_ptr<acc_t>(), nullptr,
                                        nullptr, ell.data_ptr<acc_t>(), g.data_ptr<acc_t>(),
                                        count.data_ptr<acc_t>());
  });
  // L = mean of l_i over anchors with a positive, on the device (no host sync).
  const at::Tensor has_pos = count > 0;
  const at::Tensor anchors = has_pos.sum().clamp_min(1).to(opts.dtype());
  const at::Tensor loss = at::where(has_pos, ell, at::zeros_like(ell)).sum() / anchors;
  return {loss.to(x.scalar_type()), nu, g, count};
}

at::Tensor csc_backward_cuda(const at::Tensor& grad, const at::Tensor& x_in,
                             const at::Tensor& labels_in, const at::Tensor& nu_in,
                             const at::Tensor& g_in, const at::Tensor& count_in, double tau) {
  check_csc_inputs(x_in, labels_in, tau);
  check_csc_stats(grad, x_in, nu_in, g_in, count_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::AutoDispatchBelowADInplaceOrView guard;
  const int64_t n = x_in.size(0);
  const at::Tensor x = x_in.detach().contiguous();
  const auto acc = csc_acc_type(x.scalar_type());
  at::Tensor dx = at::zeros({n, x.size(1)}, x.options().dtype(acc));
  if (n == 0) return dx.to(x.scalar_type());
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor nu = nu_in.contiguous();
  const at::Tensor count = count_in.contiguous();
  // neg_coef_i = g_i / A, pos_coef_i = 1 / (A P_i) (0 without positives); A = 0 gives 0.
  const at::Tensor has_pos = count > 0;
  const at::Tensor anchors = has_pos.sum().clamp_min(1).to(acc);
  const at::Tensor neg_coef = (g_in / anchors).contiguous();
  const at::Tensor pos_coef =
      at::where(has_pos, 1.0 / (count.clamp_min(1) * anchors), at::zeros_like(count))
          .contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "csc_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    launch<kBackward, scalar_t, acc_t>(x, labels, tau, nu.data_ptr<acc_t>(),
                                       neg_coef.data_ptr<acc_t>(), pos_coef.data_ptr<acc_t>(),
                                       dx.data_ptr<acc_t>(), nullptr, nullptr);
  });
  dx.mul_(grad.to(acc) / tau);
  return dx.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(wsss_blocks, CUDA, m) {
  m.impl("csc_forward", &csc_forward_cuda);
  m.impl("_csc_backward", &csc_backward_cuda);
}

}  // namespace wsss_blocks
