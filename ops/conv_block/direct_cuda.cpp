// Launchers of the direct kernels (ops/conv_block/direct_kernels.cuh): the kernel for the problem's
// (Cin, Cout, k) is compiled at run time (jit.h) and its tile configuration (direct_config.h) sizes
// the launch. conv_block_direct_check says which (Cin, Cout, k) they handle.
#include <cstdlib>
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

DirectChoice choice(int cin, int cout, int k, bool tf32) {
  return direct_choice(cin, cout, k, tf32, int(shared_limit() / sizeof(float)));
}

// "tg::ops::detail::<kernel><cin, cout, k, rest>"
std::string instance(const char* kernel, int cin, int cout, int k, const std::string& rest) {
  return std::string("tg::ops::detail::") + kernel + "<" + std::to_string(cin) + ", " +
         std::to_string(cout) + ", " + std::to_string(k) + ", " + rest + ">";
}
std::string forward_instance(int cin, int cout, int k, bool tf32) {
  return instance(tf32 ? "forward_tf32_kernel" : "forward_fma_kernel", cin, cout, k,
                  std::to_string(choice(cin, cout, k, tf32).fwd_nbuf));
}
// TG_TF32_WGRAD (read once): off keeps the backward's weight gradient on FP32 FMAs with TF32
// allowed (to compare, or to rule the tensor-core path out).
bool tf32_wgrad_enabled() {
  static const bool on = env_switch_enabled("TG_TF32_WGRAD", std::getenv("TG_TF32_WGRAD"));
  return on;
}

// The backward for TF32 allowed or not: its buffers and passes do not depend on it; its weight
// gradient runs on tensor cores where DirectChoice::bwd_tf32 says so.
DirectChoice backward_choice(int cin, int cout, int k, bool tf32) {
  return choice(cin, cout, k, tf32 && tf32_wgrad_enabled());
}
std::string backward_instance(int cin, int cout, int k, bool loss, bool tf32) {
  const DirectChoice c = backward_choice(cin, cout, k, tf32);
  return instance("backward_kernel", cin, cout, k,
                  std::to_string(c.bwd_nbuf) + ", " + std::to_string(c.bwd_passes) + ", " +
                      (loss ? "true" : "false") + ", " + (c.bwd_tf32 ? "true" : "false"));
}

int persistent_grid(const void* kernel, int threads, size_t smem, int total_tiles) {
  int per_sm = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1) per_sm = 1;
  const int grid = per_sm * cuda::device_properties().multiProcessorCount;
  return grid < total_tiles ? grid : total_tiles;
}

void allow_shared(const void* kernel, size_t smem) {
  TG_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

void launch(const void* kernel, int grid, int threads, size_t smem, void** args) {
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
  const DirectChoice c = direct_choice(cin, cout, k, tf32, int(limit / sizeof(float)));
  const std::string tile = "the input tile (Cin*" + std::to_string(direct_tile(cin, k).ih) + "*" +
                           std::to_string(direct_tile(cin, k).pitch) + " floats)";
  if (c.fwd_nbuf == 0) {
    const size_t bytes = size_t(tf32 ? tf32_config(cin, cout, k, 1).dyn_floats +
                                           tf32_config(cin, cout, k, 1).static_floats
                                     : fma_config(cin, cout, k, 1).dyn_floats +
                                           fma_config(cin, cout, k, 1).static_floats) *
                         sizeof(float);
    return std::string(tf32 ? "TF32" : "FP32") + " forward: " + tile + " and the weights (" +
           (tf32 ? std::to_string(tf32_config(cin, cout, k, 1).kpad) + "x" +
                       std::to_string(tf32_config(cin, cout, k, 1).bpitch)
                 : "Cout*Cin*k*k") +
           " floats) need " + kb(bytes) + " of shared memory, more than the " + kb(limit) +
           " per block";
  }
  if (c.bwd_nbuf == 0) {
    const BackwardConfig one = backward_config(cin, cout, k, 1, 1);
    if (one.accumulators > kDirectMaxWgAccumulators)
      return "backward: " + std::to_string(one.units_per_pass) + " weight-gradient units of " +
             std::to_string(4 * one.kr * k) + " accumulators over " + std::to_string(one.threads) +
             " threads exceed " + std::to_string(kDirectMaxWgAccumulators) +
             " registers per thread";
    return "backward: " + tile +
           " and dz (513 floats per channel, of Cout or a slice of it) exceed the " + kb(limit) +
           " of shared memory per block in every split that the registers allow";
  }
  return "";
}

void conv_block_direct_prepare(int cin, int cout, int k, bool tf32) {
  jit_kernel(forward_instance(cin, cout, k, tf32));
  jit_kernel(backward_instance(cin, cout, k, true, tf32));
  jit_kernel(backward_instance(cin, cout, k, false, tf32));
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
  const int nbuf = choice(a.cin, a.cout, a.k, a.tf32).fwd_nbuf;
  const void* kernel = jit_kernel(forward_instance(a.cin, a.cout, a.k, a.tf32));
  const int threads = a.tf32 ? 256 : fma_config(a.cin, a.cout, a.k, nbuf).threads;
  const size_t smem = size_t(a.tf32 ? tf32_config(a.cin, a.cout, a.k, nbuf).dyn_floats
                                    : fma_config(a.cin, a.cout, a.k, nbuf).dyn_floats) *
                      sizeof(float);
  allow_shared(kernel, smem);  // before the occupancy query, which counts it
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
  const DirectChoice ch = backward_choice(a.cin, a.cout, a.k, a.tf32);
  const BackwardConfig c =
      backward_config(a.cin, a.cout, a.k, ch.bwd_nbuf, ch.bwd_passes, ch.bwd_tf32);
  const void* kernel = jit_kernel(backward_instance(a.cin, a.cout, a.k, a.loss_target, a.tf32));
  const size_t smem = size_t(c.dyn_floats) * sizeof(float);
  ConvBlockShape sh = a.shape;
  const int grid = conv_block_backward_grid(sh, a.cout);
  const float *x = a.x, *z = a.z, *other = a.other, *mean = a.mean, *rstd = a.rstd, *A = a.A,
              *B = a.B, *bias = a.bias, *scale = a.scale, *gamma = a.gamma, *beta = a.beta,
              *gout = a.gout;
  float dy_scale = a.dy_scale;
  float *dz = a.dz, *dw = a.dw_part, *db = a.dbias_part, *ds = a.dscale_part;
  void* args[] = {&x,     &z,    &other, &mean,     &rstd, &A,  &B,  &bias, &scale,
                  &gamma, &beta, &gout,  &dy_scale, &sh,   &dz, &dw, &db,   &ds};
  allow_shared(kernel, smem);
  launch(kernel, grid, c.threads, smem, args);
  conv_block_backward_finalize_cuda(a, grid, c.ws);
}

}  // namespace tg::ops::detail
