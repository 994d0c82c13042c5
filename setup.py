"""Build script: the package plus the compiled extension ``wsss_blocks._C`` from csrc/.

The C++ (CPU) op is always built; the CUDA op is added when CUDA is available at build time
or ``FORCE_CUDA=1`` (as torchvision does; then set ``TORCH_CUDA_ARCH_LIST`` when no GPU is
visible, and ``CUDA_HOME``). Always install with ``pip install --no-build-isolation``.

Environment knobs:
    FORCE_CUDA=1               build the CUDA kernels even without a visible GPU.
    WSSS_BLOCKS_CPU_ARCH=...   extra ISA flags for the whole extension, for a build that
                               only ever runs on this machine: "native" means
                               -march=native. Default none: the build is portable, and on
                               x86-64 the CPU kernels carry an AVX2 + FMA copy chosen at
                               run time when the CPU has both (csrc/cpu/kernels_avx2.cpp).
    MAX_JOBS, CFLAGS           honoured by torch's ninja build (CFLAGS=-g0 builds faster).
"""

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cpu_arch_flags() -> list[str]:
    choice = os.environ.get("WSSS_BLOCKS_CPU_ARCH", "none").strip()
    if choice in ("", "none"):
        return []
    if choice == "native":
        return ["-march=native"]
    return choice.split()


def get_extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension
    except ImportError:  # metadata-only builds: the package works without the extension
        return [], {}
    from torch.utils.cpp_extension import BuildExtension

    sources = [
        os.path.join("csrc", "contrastive.cpp"),
        *sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp"))),
    ]
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    use_cuda = CUDA_HOME is not None and (torch.cuda.is_available() or force_cuda)
    # -fno-trapping-math lets GCC if-convert and vectorise the epilogue loops; the math
    # itself keeps IEEE semantics (no -ffast-math: the kernels rely on -inf).
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", *_cpu_arch_flags()]
    extra = {"cxx": cxx}
    define_macros = []
    ext_cls = CppExtension
    if use_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        extra["nvcc"] = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        define_macros.append(("WITH_CUDA", None))
        ext_cls = CUDAExtension
    elif force_cuda:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME")
    ext = ext_cls(
        "wsss_blocks._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = get_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
