// CPU kernels of the fused CSC loss: O(N) memory beyond the inputs, nothing N x N stored.
//
// Rows are split into blocks of kRowTile anchors, one block per at::parallel_for task.
// For each row block the columns stream in tiles of kColTile: a single-threaded GEMM
// (at::mm_out, MKL/OpenBLAS inside a parallel region) fills a kRowTile x kColTile scratch
// tile with x_i . x_j, then a vectorisable epilogue applies the per-element math of
// contrastive_math.h. Each task owns its rows' outputs, so results are deterministic.
//
// Tiles are skipped by label range: pass 1 (negatives) skips tiles whose rows and columns
// all share one label; pass 2 (positives) skips tiles whose label ranges do not meet.
// Sorting anchors by label (the Python face does) makes pass 2 visit only diagonal blocks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../contrastive.h"
#include "../contrastive_math.h"

namespace wsss_blocks {
namespace {

using csc::kLanes;

constexpr int64_t kRowTile = 128;
constexpr int64_t kColTile = 512;

struct LabelRange {
  int64_t lo, hi;
};

std::vector<LabelRange> label_ranges(const int64_t* lab, int64_t n, int64_t tile) {
  std::vector<LabelRange> out;
  for (int64_t b = 0; b < n; b += tile) {
    const int64_t e = std::min(n, b + tile);
    LabelRange r{lab[b], lab[b]};
    for (int64_t k = b + 1; k < e; ++k) {
      r.lo = std::min(r.lo, lab[k]);
      r.hi = std::max(r.hi, lab[k]);
    }
    out.push_back(r);
  }
  return out;
}

bool one_label(const LabelRange& a, const LabelRange& b) {
  return a.lo == a.hi && b.lo == b.hi && a.lo == b.lo;
}

bool disjoint(const LabelRange& a, const LabelRange& b) {
  return a.hi < b.lo || b.hi < a.lo;
}

// tile[r, c] = x_{i0+r} . x_{j0+c} for an (ni x nj) tile, row-major with stride kColTile.
template <typename T>
void tile_dot(const at::Tensor& x, int64_t i0, int64_t ni, int64_t j0, int64_t nj,
              at::Tensor& tile) {
  at::Tensor out = tile.narrow(0, 0, ni).narrow(1, 0, nj);
  at::mm_out(out, x.narrow(0, i0, ni), x.narrow(0, j0, nj).t());
}

// Pass 1: nu_i = logsumexp over columns with another label (online across tiles).
template <typename T>
void pass_negatives(const at::Tensor& x, const int64_t* lab, T inv_tau, T* nu) {
  const int64_t n = x.size(0);
  const auto rows = label_ranges(lab, n, kRowTile);
  const auto cols = label_ranges(lab, n, kColTile);
  const int64_t n_blocks = (n + kRowTile - 1) / kRowTile;
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    at::Tensor tile = at::empty({kRowTile, kColTile}, x.options());
    T* t = tile.data_ptr<T>();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kRowTile, ni = std::min(kRowTile, n - i0);
      T m[kRowTile], s[kRowTile];
      for (int64_t r = 0; r < ni; ++r) {
        m[r] = csc::neg_inf<T>();
        s[r] = T(0);
      }
      for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
        if (one_label(rows[b], cols[j0 / kColTile])) continue;
        const int64_t nj = std::min(kColTile, n - j0);
        tile_dot<T>(x, i0, ni, j0, nj, tile);
        for (int64_t r = 0; r < ni; ++r) {
          T* row = t + r * kColTile;
          const int64_t li = lab[i0 + r];
          const int64_t* lj = lab + j0;
          T mx[kLanes];
          for (int k = 0; k < kLanes; ++k) mx[k] = csc::neg_inf<T>();
          int64_t c = 0;
          for (; c + kLanes <= nj; c += kLanes) {
            for (int k = 0; k < kLanes; ++k) {
              const T v = lj[c + k] != li ? row[c + k] * inv_tau : csc::neg_inf<T>();
              row[c + k] = v;
              mx[k] = v > mx[k] ? v : mx[k];
            }
          }
          for (; c < nj; ++c) {
            const T v = lj[c] != li ? row[c] * inv_tau : csc::neg_inf<T>();
            row[c] = v;
            mx[0] = v > mx[0] ? v : mx[0];
          }
          T tm = mx[0];
          for (int k = 1; k < kLanes; ++k) tm = mx[k] > tm ? mx[k] : tm;
          if (!(tm > csc::neg_inf<T>())) continue;  // no negative in this tile row
          T acc[kLanes] = {};
          c = 0;
          for (; c + kLanes <= nj; c += kLanes) {
            for (int k = 0; k < kLanes; ++k) acc[k] += csc::exp_acc(row[c + k] - tm);
          }
          for (; c < nj; ++c) acc[0] += csc::exp_acc(row[c] - tm);
          T ts = T(0);
          for (int k = 0; k < kLanes; ++k) ts += acc[k];
          csc::lse_merge(m[r], s[r], tm, ts);
        }
      }
      for (int64_t r = 0; r < ni; ++r) nu[i0 + r] = csc::lse_value(m[r], s[r]);
    }
  });
}

// Pass 2: per anchor, sum of softplus(nu_i - s_ip) and sigmoid(nu_i - s_ip) over positives
// and their count P_i; then l_i and g_i are the means (0 when P_i = 0).
template <typename T>
void pass_positives(const at::Tensor& x, const int64_t* lab, T inv_tau, const T* nu, T* ell,
                    T* g, T* count) {
  const int64_t n = x.size(0);
  const auto rows = label_ranges(lab, n, kRowTile);
  const auto cols = label_ranges(lab, n, kColTile);
  const int64_t n_blocks = (n + kRowTile - 1) / kRowTile;
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    at::Tensor tile = at::empty({kRowTile, kColTile}, x.options());
    T* t = tile.data_ptr<T>();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kRowTile, ni = std::min(kRowTile, n - i0);
      T sp[kRowTile] = {}, sg[kRowTile] = {}, cnt[kRowTile] = {};
      for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
        if (disjoint(rows[b], cols[j0 / kColTile])) continue;
        const int64_t nj = std::min(kColTile, n - j0);
        tile_dot<T>(x, i0, ni, j0, nj, tile);
        for (int64_t r = 0; r < ni; ++r) {
          const T* row = t + r * kColTile;
          const int64_t i = i0 + r, li = lab[i];
          const int64_t* lj = lab + j0;
          const T nui = nu[i];
          // Branch-free over the whole tile row so the loop vectorises; non-positives
          // (other label, or the anchor itself) get weight 0 (softplus and sigmoid are
          // finite, so multiplying by 0 is safe).
          T asp[kLanes] = {}, asg[kLanes] = {}, acn[kLanes] = {};
          int64_t c = 0;
          for (; c + kLanes <= nj; c += kLanes) {
            for (int k = 0; k < kLanes; ++k) {
              const T w = (lj[c + k] == li ? T(1) : T(0)) * (j0 + c + k == i ? T(0) : T(1));
              T softplus, sigmoid;
              csc::softplus_sigmoid(nui - row[c + k] * inv_tau, softplus, sigmoid);
              asp[k] += w * softplus;
              asg[k] += w * sigmoid;
              acn[k] += w;
            }
          }
          for (; c < nj; ++c) {
            const T w = (lj[c] == li ? T(1) : T(0)) * (j0 + c == i ? T(0) : T(1));
            T softplus, sigmoid;
            csc::softplus_sigmoid(nui - row[c] * inv_tau, softplus, sigmoid);
            asp[0] += w * softplus;
            asg[0] += w * sigmoid;
            acn[0] += w;
          }
          for (int k = 0; k < kLanes; ++k) {
            sp[r] += asp[k];
            sg[r] += asg[k];
            cnt[r] += acn[k];
          }
        }
      }
      for (int64_t r = 0; r < ni; ++r) {
        const T inv = cnt[r] > T(0) ? T(1) / cnt[r] : T(0);
        ell[i0 + r] = sp[r] * inv;
        g[i0 + r] = sg[r] * inv;
        count[i0 + r] = cnt[r];
      }
    }
  });
}

// Backward: row block I accumulates sum_J (W + W^T)_IJ x_J with W from contrastive_math.h;
// the tile of s_IJ is recomputed, overwritten in place by (W + W^T)_IJ, then one GEMM.
template <typename T>
void backward_rows(const at::Tensor& x, const int64_t* lab, T inv_tau, const T* nu,
                   const T* neg_coef, const T* pos_coef, at::Tensor& dx) {
  const int64_t n = x.size(0);
  const int64_t n_blocks = (n + kRowTile - 1) / kRowTile;
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    at::Tensor tile = at::empty({kRowTile, kColTile}, x.options());
    T* t = tile.data_ptr<T>();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kRowTile, ni = std::min(kRowTile, n - i0);
      at::Tensor dx_rows = dx.narrow(0, i0, ni);
      for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
        const int64_t nj = std::min(kColTile, n - j0);
        tile_dot<T>(x, i0, ni, j0, nj, tile);
        const int64_t* lj = lab + j0;
        const T* nuj = nu + j0;
        const T* ncj = neg_coef + j0;
        const T* pcj = pos_coef + j0;
        for (int64_t r = 0; r < ni; ++r) {
          T* row = t + r * kColTile;
          const int64_t i = i0 + r, li = lab[i];
          const T nui = nu[i], nci = neg_coef[i], pci = pos_coef[i];
          for (int64_t c = 0; c < nj; ++c) {
            const T s = row[c] * inv_tau;
            const bool same = lj[c] == li;
            const T w = csc::pair_weight(same, s, nui, nci, pci) +
                        csc::pair_weight(same, s, nuj[c], ncj[c], pcj[c]);
            row[c] = (j0 + c == i) ? T(0) : w;
          }
        }
        dx_rows.addmm_(tile.narrow(0, 0, ni).narrow(1, 0, nj), x.narrow(0, j0, nj));
      }
    }
  });
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
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csc_forward_cpu", [&] {
    const int64_t* lab = labels.data_ptr<int64_t>();
    const auto inv_tau = static_cast<scalar_t>(1.0 / tau);
    at::Tensor ell = at::empty({n}, x.options());
    pass_negatives<scalar_t>(x, lab, inv_tau, nu.data_ptr<scalar_t>());
    pass_positives<scalar_t>(x, lab, inv_tau, nu.data_ptr<scalar_t>(),
                             ell.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                             count.data_ptr<scalar_t>());
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
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csc_backward_cpu", [&] {
    backward_rows<scalar_t>(x, labels.data_ptr<int64_t>(), static_cast<scalar_t>(1.0 / tau),
                            nu.data_ptr<scalar_t>(), neg_coef.data_ptr<scalar_t>(),
                            pos_coef.data_ptr<scalar_t>(), dx);
  });
  dx.mul_(grad.to(acc) / tau);
  return dx.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(wsss_blocks, CPU, m) {
  m.impl("csc_forward", &csc_forward_cpu);
  m.impl("_csc_backward", &csc_backward_cpu);
}

}  // namespace wsss_blocks
