"""Builds tapegrad_torch._C (python/csrc/tapegrad_torch.cpp, one translation unit) against the static
libtapegrad of a CMake build directory, with torch.utils.cpp_extension. scripts/build-python.sh runs
it; usage: python3 python/build_ext.py BUILD_DIR.

CUDA: when that libtapegrad was built with CUDA and this PyTorch has CUDA, the extension takes CUDA
tensors (PyTorch's current stream and caching allocator); otherwise CPU tensors only.
"""
import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cmake_cache(build_dir):
    path = os.path.join(build_dir, "CMakeCache.txt")
    entries = {}
    with open(path) as f:
        for line in f:
            if ":" in line and "=" in line and not line.startswith(("//", "#")):
                key, value = line.rstrip("\n").split("=", 1)
                entries[key.split(":", 1)[0]] = value
    return entries


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: build_ext.py BUILD_DIR (a CMake build of tapegrad with libtapegrad.a)")
    build_dir = os.path.abspath(sys.argv[1])
    lib = os.path.join(build_dir, "libtapegrad.a")
    if not os.path.exists(lib):
        sys.exit(f"build_ext.py: {lib} does not exist; build the tapegrad target first")
    cache = cmake_cache(build_dir)
    tg_cuda = cache.get("TG_WITH_CUDA", "OFF").upper() in ("ON", "1", "TRUE")
    torch_cuda = torch.version.cuda is not None
    defines, include_dirs, libraries, library_dirs = [], [ROOT], [], []
    if tg_cuda:
        defines.append(("TG_WITH_CUDA", "1"))
        cuda_root = os.path.dirname(os.path.dirname(cache["CMAKE_CUDA_COMPILER"]))
        include_dirs.append(os.path.join(cuda_root, "include"))
        cudnn_inc = cache.get("TG_CUDNN_INCLUDE_DIR")
        if cudnn_inc:
            include_dirs.append(cudnn_inc)
        for d in ("lib64", "targets/x86_64-linux/lib", "lib"):
            if os.path.isdir(os.path.join(cuda_root, d)):
                library_dirs.append(os.path.join(cuda_root, d))
        libraries += ["cudart", "nvrtc"]  # nvrtc: the fused block's kernels are compiled at run time
        cudnn = cache.get("TG_CUDNN_LIBRARY")
        if cudnn:
            library_dirs.append(os.path.dirname(cudnn))
        libraries.append("cudnn")
    if tg_cuda and torch_cuda:
        defines.append(("TGT_WITH_CUDA", "1"))
        libraries += ["c10_cuda", "torch_cuda"]
    print(f"build_ext.py: libtapegrad {'with' if tg_cuda else 'without'} CUDA, PyTorch "
          f"{torch.__version__} {'with CUDA ' + torch.version.cuda if torch_cuda else 'without CUDA'}"
          f": the extension takes {'CPU and CUDA' if tg_cuda and torch_cuda else 'CPU'} tensors")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    if abi != 1:
        sys.exit("build_ext.py: this PyTorch uses the old C++ ABI (_GLIBCXX_USE_CXX11_ABI=0); build "
                 "tapegrad with CMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=0 to link against it")
    ext = CppExtension(
        "tapegrad_torch._C",
        [os.path.join(HERE, "csrc", "tapegrad_torch.cpp")],
        include_dirs=include_dirs,
        define_macros=defines,
        library_dirs=library_dirs,
        libraries=libraries,
        extra_objects=[lib],
        extra_compile_args=["-O2", "-std=c++17", "-Wno-deprecated-declarations"],
        # --exclude-libs: the symbols of the static archives (libtapegrad.a, and libstdc++.a where
        # the compiler links libstdc++ statically, as the H200 image's /opt/gcc does) stay private to
        # the extension. Exported, a private libstdc++'s data (locale facet ids) is interposed by the
        # libstdc++.so that torch loaded, while its functions stay ours: `ostream << long` then calls
        # the wrong facet and segfaults.
        extra_link_args=["-fopenmp", "-Wl,--exclude-libs,ALL"] + [f"-Wl,-rpath,{d}" for d in library_dirs],
    )
    os.chdir(HERE)
    setup(name="tapegrad_torch", ext_modules=[ext], cmdclass={"build_ext": BuildExtension},
          script_args=["build_ext", "--inplace", "--build-temp",
                       os.path.join(build_dir, "python-ext")])
    check_private_archives(os.path.join(HERE, "tapegrad_torch"))


def check_private_archives(package_dir):
    """Fails the build when the extension exports symbols of a private C++ runtime,
    which the process's other copies would interpose (a crash at run time instead of here)."""
    import glob
    import subprocess
    for so in glob.glob(os.path.join(package_dir, "_C*.so")):
        try:
            syms = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True,
                                  check=True).stdout.split("\n")
        except (OSError, subprocess.CalledProcessError):
            print("build_ext.py: nm not available; the exported-symbol check is skipped")
            return
        leaked = [l.split()[-1] for l in syms if l.split() and
                  l.split()[-1].startswith(("_ZNSt6locale", "_ZNSo9_M_insert"))]
        if leaked:
            sys.exit(f"build_ext.py: {so} exports {len(leaked)} symbols of libstdc++ "
                     f"(e.g. {leaked[0]}); they would be interposed by the copies torch loads. The "
                     "linker must support -Wl,--exclude-libs,ALL (GNU ld, gold, lld)")
        print(f"build_ext.py: {os.path.basename(so)} exports no libstdc++ symbols")


if __name__ == "__main__":
    main()
