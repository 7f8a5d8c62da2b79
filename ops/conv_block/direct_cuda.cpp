// Launchers of the direct kernels (ops/conv_block/direct_kernels.cuh): the kernel for the problem's
// (Cin, Cout, k) is compiled at run time (jit.h) and its tile configuration (direct_config.h) sizes
// the launch. conv_block_direct_check says which (Cin, Cout, k) they handle.
#include <string>

#include "../../core/cuda_context.h"
#include "../../core/cuda_utils.h"
#include "jit.h"
#include "kernels.h"

namespace tg::ops::detail {
namespace {

size_t shared_limit() {
  // Without a device (the check asked on a CPU machine, e.g. in tests): an H100/H200's 227 KB.
  return cuda::is_available() ? cuda::device_properties().sharedMemPerBlockOptin : 232448;
}

std::string instance(const char* kernel, int cin, int cout, int k, const char* extra = nullptr) {
  std::string s = std::string("tg::ops::detail::") + kernel + "<" + std::to_string(cin) + ", " +
                  std::to_string(cout) + ", " + std::to_string(k);
  if (extra) s += std::string(", ") + extra;
  return s + ">";
}

int persistent_grid(const void* kernel, int threads, size_t smem, int total_tiles) {
  int per_sm = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1) per_sm = 1;
  const int grid = per_sm * cuda::device_properties().multiProcessorCount;
  return grid < total_tiles ? grid : total_tiles;
}

void launch(const void* kernel, int grid, int threads, size_t smem, void** args) {
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  TG_CUDA_CHECK(cudaLaunchKernel(kernel, dim3(unsigned(grid)), dim3(unsigned(threads)), args, smem,
                                 cuda::stream()));
}

std::string kb(size_t bytes) { return std::to_string((bytes + 1023) / 1024) + " KB"; }

}  // namespace

std::string conv_block_direct_check(int cin, int cout, int k, bool tf32) {
  if (cin < 1 || cin > 64) return "Cin " + std::to_string(cin) + " is outside 1..64";
  if (cout < 8 || cout > 128 || cout % 8 != 0)
    return "Cout " + std::to_string(cout) + " is not a multiple of 8 in 8..128";
  if (k < 1 || k > 7) return "k " + std::to_string(k) + " is outside 1..7";
  const size_t limit = shared_limit();
  const DirectTile tile = direct_tile(cin, k);
  const std::string tiles = "2 input tiles of Cin*(8+k-1)*" + std::to_string(tile.pitch) + " floats";
  if (tf32) {
    const Tf32Config c = tf32_config(cin, cout, k);
    const size_t bytes = (size_t(c.dyn_floats) + 8 * c.ntp * 8 + 5 * cout + c.kpad) * 4;
    if (bytes > limit)
      return "TF32 forward: " + tiles + " and the weights (" + std::to_string(c.kpad) + " x " +
             std::to_string(c.bpitch) + " floats) need " + kb(bytes) + " of shared memory, more than " +
             kb(limit);
  } else {
    const FmaConfig c = fma_config(cin, cout, k);
    const size_t bytes = (size_t(c.dyn_floats) + (c.threads / 32) * c.cpt + 5 * cout) * 4;
    if (bytes > limit)
      return "FMA forward: " + tiles + " and the weights (Cout*Cin*k*k floats) need " + kb(bytes) +
             " of shared memory, more than " + kb(limit);
  }
  const BackwardConfig b = backward_config(cin, cout, k);
  if (size_t(b.dyn_floats) * 4 > limit)
    return "backward: " + tiles + " and dz (Cout*513 floats) need " + kb(size_t(b.dyn_floats) * 4) +
           " of shared memory, more than " + kb(limit);
  if (b.upt * 4 * b.kr * k > kDirectMaxWgAccumulators)
    return "backward: " + std::to_string(b.units) + " weight-gradient units of " +
           std::to_string(4 * b.kr * k) + " accumulators over " + std::to_string(b.threads) +
           " threads exceed " + std::to_string(kDirectMaxWgAccumulators) + " registers per thread";
  return "";
}

void conv_block_direct_prepare(int cin, int cout, int k, bool tf32) {
  jit_kernel(instance(tf32 ? "forward_tf32_kernel" : "forward_fma_kernel", cin, cout, k));
  jit_kernel(instance("backward_kernel", cin, cout, k, "true"));
  jit_kernel(instance("backward_kernel", cin, cout, k, "false"));
}

ConvBlockShape conv_block_shape(int N, int H, int W, int k, int G) {
  ConvBlockShape sh{};
  sh.N = N;
  sh.H = H;
  sh.W = W;
  sh.Ho = H - k + 1;
  sh.Wo = W - k + 1;
  sh.G = G;
  sh.tiles_y = (sh.Ho + kDirectTileH - 1) / kDirectTileH;
  sh.tiles_x = (sh.Wo + kDirectTileW - 1) / kDirectTileW;
  return sh;
}

int conv_block_backward_grid(const ConvBlockShape& sh, int cout) {
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  // Persistent CTAs, two per SM (87 KB of shared memory each for 8 -> 32 channels); where fewer
  // fit, the rest wait for a slot, which costs a little balance, not correctness.
  const int grid = 2 * cuda::device_properties().multiProcessorCount;
  (void)cout;
  return grid < total ? grid : total;
}

void conv_block_forward_cuda(const ConvBlockForwardArgs& a) {
  const std::string why = conv_block_direct_check(a.cin, a.cout, a.k, a.tf32);
  TG_CHECK(why.empty(), "conv_block: no direct kernel for Cin ", a.cin, ", Cout ", a.cout, ", k ",
           a.k, ": ", why);
  ConvBlockShape sh = a.shape;
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  const void* kernel;
  int threads;
  size_t smem;
  if (a.tf32) {
    kernel = jit_kernel(instance("forward_tf32_kernel", a.cin, a.cout, a.k));
    threads = 256;
    smem = size_t(tf32_config(a.cin, a.cout, a.k).dyn_floats) * sizeof(float);
  } else {
    const FmaConfig c = fma_config(a.cin, a.cout, a.k);
    kernel = jit_kernel(instance("forward_fma_kernel", a.cin, a.cout, a.k));
    threads = c.threads;
    smem = size_t(c.dyn_floats) * sizeof(float);
  }
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int grid = persistent_grid(kernel, threads, smem, total);
  const float *x = a.x, *w = a.weight, *cb = a.conv_bias, *b = a.bias, *s = a.scale;
  float* z = a.z;
  float* stats = a.tile_stats;
  void* args[] = {&x, &w, &cb, &b, &s, &sh, &z, &stats};
  launch(kernel, grid, threads, smem, args);
  conv_block_stats_finalize_cuda(a.tile_stats, sh.N * sh.G, sh.tiles_y * sh.tiles_x, a.eps, a.mean,
                                 a.rstd);
}

void conv_block_backward_cuda(const ConvBlockBackwardArgs& a) {
  const std::string why = conv_block_direct_check(a.cin, a.cout, a.k, false);
  TG_CHECK(why.empty(), "conv_block: no direct backward kernel for Cin ", a.cin, ", Cout ", a.cout,
           ", k ", a.k, ": ", why);
  const BackwardConfig c = backward_config(a.cin, a.cout, a.k);
  const void* kernel =
      jit_kernel(instance("backward_kernel", a.cin, a.cout, a.k, a.loss_target ? "true" : "false"));
  const size_t smem = size_t(c.dyn_floats) * sizeof(float);
  ConvBlockShape sh = a.shape;
  const int grid = conv_block_backward_grid(sh, a.cout);
  const float *x = a.x, *z = a.z, *other = a.other, *mean = a.mean, *rstd = a.rstd, *A = a.A,
              *B = a.B, *bias = a.bias, *scale = a.scale, *gamma = a.gamma, *beta = a.beta,
              *gout = a.gout;
  float dy_scale = a.dy_scale;
  float *dz = a.dz, *dw = a.dw_part, *db = a.dbias_part, *ds = a.dscale_part;
  void* args[] = {&x,     &z,    &other, &mean, &rstd,     &A,  &B,  &bias, &scale,
                  &gamma, &beta, &gout,  &dy_scale, &sh, &dz, &dw, &db,   &ds};
  launch(kernel, grid, c.threads, smem, args);
  conv_block_backward_finalize_cuda(a, grid, c.ws);
}

}  // namespace tg::ops::detail
