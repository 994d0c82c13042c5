// The Python module of the fused contrastive separation (CSC) loss, CoSA Eqs. (9)-(10), and
// the input checks every backend runs. The op schemas are defined in Python
// (wsss_blocks/ops/contrastive.py) so that fake kernels and autograd exist without this
// library; the kernels are cpu/contrastive_cpu.cpp and cuda/contrastive_cuda.cu.
#include <Python.h>

#include <cmath>

#include "contrastive.h"

extern "C" {
// Importing wsss_blocks._C loads this library, whose static initialisers register the
// kernels with the dispatcher. Its attributes: kernel_devices names the device types it has
// kernels for ("cpu" or "cpu,cuda"); cpu_isa the CPU kernels' instruction set.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
#ifdef WITH_CUDA
  const char* devices = "cpu,cuda";
#else
  const char* devices = "cpu";
#endif
  if (module != nullptr &&
      (PyModule_AddStringConstant(module, "kernel_devices", devices) < 0 ||
       PyModule_AddStringConstant(module, "cpu_isa", wsss_blocks::csc_cpu_isa()) < 0)) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

namespace wsss_blocks {

at::ScalarType csc_acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

void check_csc_inputs(const at::Tensor& x, const at::Tensor& labels, double tau) {
  TORCH_CHECK_VALUE(x.dim() == 2, "wsss_blocks csc: features must be 2-D (N, D), got shape ",
                    x.sizes());
  const auto t = x.scalar_type();
  TORCH_CHECK_VALUE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                    "wsss_blocks csc: features must be float16, bfloat16, float32 or float64, "
                    "got ", t, " with shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(1) >= 1 && x.size(1) <= kCscMaxDim,
                    "wsss_blocks csc: features must have 1 <= D <= ", kCscMaxDim,
                    ", got shape ", x.sizes());
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.size(0) == x.size(0),
                    "wsss_blocks csc: labels must be (N,) with N = features.size(0); got "
                    "features ", x.sizes(), " and labels ", labels.sizes());
  TORCH_CHECK_VALUE(labels.scalar_type() == at::kLong,
                    "wsss_blocks csc: labels must be int64, got ", labels.scalar_type(),
                    " with shape ", labels.sizes());
  TORCH_CHECK_VALUE(labels.device() == x.device(), "wsss_blocks csc: labels on ",
                    labels.device(), " but features on ", x.device());
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0.0,
                    "wsss_blocks csc: tau must be finite and > 0, got ", tau);
}

void check_csc_stats(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& nu,
                     const at::Tensor& g, const at::Tensor& count) {
  TORCH_CHECK_VALUE(grad.dim() == 0, "wsss_blocks _csc_backward: grad must be 0-d, got shape ",
                    grad.sizes());
  const auto acc = csc_acc_type(x.scalar_type());
  for (const at::Tensor* s : {&nu, &g, &count}) {
    TORCH_CHECK_VALUE(s->dim() == 1 && s->size(0) == x.size(0) && s->scalar_type() == acc &&
                          s->device() == x.device(),
                      "wsss_blocks _csc_backward: nu, g, count must be (N,) ", acc,
                      " tensors on the features' device; features ", x.sizes(), ", got ",
                      s->sizes(), " ", s->scalar_type());
  }
}

}  // namespace wsss_blocks
