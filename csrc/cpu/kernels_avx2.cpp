// The CSC CPU kernels for CPUs with AVX2 and FMA, chosen at run time (contrastive_cpu.cpp).
// Headers come first so that only the kernels below are compiled for AVX2: nothing that
// other files share (inline functions of ATen or the standard library) gets AVX2 code.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

#if CSC_HAVE_AVX2_COPY
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CSC_CPU_NS avx2_fma
#include "kernels_impl.h"
#pragma GCC pop_options
#endif
