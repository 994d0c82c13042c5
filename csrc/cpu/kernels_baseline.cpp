// The CSC CPU kernels for any x86-64 (or other) CPU: the build's default instruction set.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels.h"

#define CSC_CPU_NS baseline
#include "kernels_impl.h"
