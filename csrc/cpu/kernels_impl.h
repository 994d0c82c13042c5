// Bodies of the CPU CSC kernels, compiled once per instruction set: the including file
// defines CSC_CPU_NS (the namespace of this copy) and, for a wider instruction set, wraps
// the inclusion in a target pragma. Every function here has internal linkage or lives in
// CSC_CPU_NS, so two copies never mix at link time. Entry points: kernels.h.
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
#ifndef CSC_CPU_NS
#error "define CSC_CPU_NS before including kernels_impl.h"
#endif

#include "../contrastive_math.h"

namespace wsss_blocks {
namespace CSC_CPU_NS {
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

}  // namespace

void forward_passes(const at::Tensor& x, const int64_t* lab, double tau, at::Tensor& nu,
                    at::Tensor& ell, at::Tensor& g, at::Tensor& count) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csc_forward_cpu", [&] {
    const auto inv_tau = static_cast<scalar_t>(1.0 / tau);
    pass_negatives<scalar_t>(x, lab, inv_tau, nu.data_ptr<scalar_t>());
    pass_positives<scalar_t>(x, lab, inv_tau, nu.data_ptr<scalar_t>(),
                             ell.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                             count.data_ptr<scalar_t>());
  });
}

void backward_pass(const at::Tensor& x, const int64_t* lab, double tau, const at::Tensor& nu,
                   const at::Tensor& neg_coef, const at::Tensor& pos_coef, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "csc_backward_cpu", [&] {
    backward_rows<scalar_t>(x, lab, static_cast<scalar_t>(1.0 / tau), nu.data_ptr<scalar_t>(),
                            neg_coef.data_ptr<scalar_t>(), pos_coef.data_ptr<scalar_t>(), dx);
  });
}

}  // namespace CSC_CPU_NS
}  // namespace wsss_blocks
