// Weight-gradient variants of the fused backward (ops/conv_block/direct.cu), in isolation: llm.c's
// dev/cuda style. dW[co][ci][kh][kw] = sum over n, output pixels p of dz[n][co][p] * x[n][ci][p + (kh, kw)].
// Each variant walks the same persistent tiles (TH x TW output pixels of one sample), stages the
// x tile and the dz tile in shared memory, accumulates per CTA, writes per-CTA partials, and a
// finalize kernel sums them in fixed order. Checked against a CPU reference in double; timed with
// CUDA events (median).
//
//   1  FP32 FMAs, today's mapping: a thread = 4 output channels x 1 input channel x all k x k taps,
//      sliding along a row (ops/conv_block/direct.cu's backward).
//   2  TF32 tensor cores (mma.sync.m16n8k8): GEMM M = Cout, N = Cin*k*k, K = the tile's pixels;
//      warp w takes the tile's row w (8 k-steps of 8 pixels) and holds every (m, n) accumulator;
//      A = dz from shared memory (pitch = 4 mod 32: conflict-free), B = im2col(x) read through a
//      table of offsets; operands rounded to TF32 (cvt.rna).
//   3  as 2, operands passed as raw float32 bits (the tensor core ignores the low 13 mantissa bits:
//      truncation instead of rounding, no cvt instructions).
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o weight_grad bench/conv_block/weight_grad.cu
//   ./weight_grad [variant=all] [N=128]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "../../ops/conv_block/device.cuh"  // to_tf32, mma_tf32: the library's own

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

constexpr int CIN = 8, COUT = 32, KS = 3;
constexpr int TH = 8, TW = 64, TP = TH * TW;
constexpr int IH = TH + KS - 1, IW = TW + KS - 1, PITCH = (IW + 3) / 4 * 4;
constexpr int XS = CIN * IH * PITCH;
constexpr int WS = COUT * CIN * KS * KS;
constexpr int THREADS = 256, WARPS = 8;

struct Shape {
  int N, H, W, Ho, Wo, tiles_y, tiles_x;
};

// Stages tile `tile`'s x (zero outside the image) and dz (zero outside the output) in shared memory.
template <int DPITCH>
__device__ void stage(const float* __restrict__ x, const float* __restrict__ dz, const Shape& sh,
                      int tile, float* xs, float* dzs) {
  const int per_image = sh.tiles_y * sh.tiles_x;
  const int n = tile / per_image, t = tile % per_image;
  const int oy0 = (t / sh.tiles_x) * TH, ox0 = (t % sh.tiles_x) * TW;
  for (int i = threadIdx.x; i < CIN * IH * IW; i += THREADS) {
    const int c = i % IW, r = (i / IW) % IH, ci = i / (IW * IH);
    const int gy = oy0 + r, gx = ox0 + c;
    xs[(ci * IH + r) * PITCH + c] =
        gy < sh.H && gx < sh.W ? x[((size_t(n) * CIN + ci) * sh.H + gy) * sh.W + gx] : 0.f;
  }
  for (int i = threadIdx.x; i < COUT * TP; i += THREADS) {
    const int p = i % TP, co = i / TP;
    const int oy = oy0 + p / TW, ox = ox0 + p % TW;
    dzs[co * DPITCH + p] =
        oy < sh.Ho && ox < sh.Wo ? dz[((size_t(n) * COUT + co) * sh.Ho + oy) * sh.Wo + ox] : 0.f;
  }
}

// ---- 1: FP32 FMAs ----------------------------------------------------------------------------------
constexpr int V1_PPAD = TP + 1;
constexpr int V1_UNITS = (COUT / 4) * CIN;  // 64 units, 4 row sets
constexpr int V1_PSETS = THREADS / V1_UNITS, V1_ROWS = TH / V1_PSETS;

__global__ void __launch_bounds__(THREADS, 2)
    dw_fma(const float* __restrict__ x, const float* __restrict__ dz, Shape sh, float* dw_part) {
  extern __shared__ __align__(16) float smem[];
  float* xs = smem;
  float* dzs = smem + XS;
  const int t = threadIdx.x;
  const int unit = t % V1_UNITS, pset = t / V1_UNITS;
  const int cog = unit % (COUT / 4), wci = unit / (COUT / 4);
  float wacc[4][KS][KS] = {};
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    __syncthreads();
    stage<V1_PPAD>(x, dz, sh, tile, xs, dzs);
    __syncthreads();
    for (int rr = 0; rr < V1_ROWS; ++rr) {
      const int r_ = pset * V1_ROWS + rr;
      float win[KS][KS];
#pragma unroll
      for (int kh = 0; kh < KS; ++kh)
#pragma unroll
        for (int kw = 0; kw < KS - 1; ++kw) win[kh][kw] = xs[(wci * IH + r_ + kh) * PITCH + kw];
      const float* dzp = dzs + (cog * 4) * V1_PPAD + r_ * TW;
#pragma unroll 4
      for (int c_ = 0; c_ < TW; ++c_) {
#pragma unroll
        for (int kh = 0; kh < KS; ++kh) win[kh][KS - 1] = xs[(wci * IH + r_ + kh) * PITCH + c_ + KS - 1];
        float d[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) d[j] = dzp[j * V1_PPAD + c_];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int kh = 0; kh < KS; ++kh)
#pragma unroll
            for (int kw = 0; kw < KS; ++kw) wacc[j][kh][kw] = fmaf(d[j], win[kh][kw], wacc[j][kh][kw]);
#pragma unroll
        for (int kh = 0; kh < KS; ++kh)
#pragma unroll
          for (int kw = 0; kw < KS - 1; ++kw) win[kh][kw] = win[kh][kw + 1];
      }
    }
  }
  __syncthreads();
  float* red = smem;  // [PSETS][WS]
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int kh = 0; kh < KS; ++kh)
#pragma unroll
      for (int kw = 0; kw < KS; ++kw)
        red[pset * WS + (((cog * 4 + j) * CIN + wci) * KS + kh) * KS + kw] = wacc[j][kh][kw];
  __syncthreads();
  for (int i = t; i < WS; i += THREADS) {
    float v = 0.f;
    for (int p = 0; p < V1_PSETS; ++p) v += red[p * WS + i];
    dw_part[size_t(blockIdx.x) * WS + i] = v;
  }
}

// ---- 2, 3: TF32 tensor cores -----------------------------------------------------------------------
constexpr int KDIM = CIN * KS * KS;             // GEMM N: 72
constexpr int NT = (KDIM + 7) / 8, MT = COUT / 16;
constexpr int V2_PPAD = TP + 4;                 // 4 mod 32: the A fragment loads hit 32 banks

using tg::ops::detail::mma_tf32;
using tg::ops::detail::to_tf32;

template <bool ROUND>
__device__ __forceinline__ uint32_t op(float v) {
  return ROUND ? to_tf32(v) : __float_as_uint(v);
}

template <bool ROUND>
__global__ void __launch_bounds__(THREADS, 2)
    dw_tf32(const float* __restrict__ x, const float* __restrict__ dz, Shape sh, float* dw_part) {
  extern __shared__ __align__(16) float smem[];
  float* xs = smem;
  float* dzs = smem + XS;
  __shared__ int joff[NT * 8];  // x-tile offset of GEMM column j = (ci, kh, kw); -1 past KDIM
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int g = lane >> 2, q = lane & 3;
  for (int j = t; j < NT * 8; j += THREADS)
    joff[j] = j < KDIM ? ((j / (KS * KS)) * IH + (j / KS) % KS) * PITCH + j % KS : -1;
  float acc[MT][NT][4] = {};
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    __syncthreads();
    stage<V2_PPAD>(x, dz, sh, tile, xs, dzs);
    __syncthreads();
    int jo[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) jo[n] = joff[n * 8 + g];
    const float* xrow = xs + warp * PITCH;       // output row `warp` of the tile
    const float* drow = dzs + warp * TW;
#pragma unroll 1
    for (int s = 0; s < TW / 8; ++s) {
      const int p0 = s * 8;
      uint32_t a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const float* d0 = drow + (m * 16 + g) * V2_PPAD + p0 + q;
        a[m][0] = op<ROUND>(d0[0]);
        a[m][1] = op<ROUND>(d0[8 * V2_PPAD]);
        a[m][2] = op<ROUND>(d0[4]);
        a[m][3] = op<ROUND>(d0[8 * V2_PPAD + 4]);
      }
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const bool ok = jo[n] >= 0;
        const float* b = xrow + (ok ? jo[n] : 0) + p0 + q;
        const uint32_t b0 = ok ? op<ROUND>(b[0]) : 0u, b1 = ok ? op<ROUND>(b[4]) : 0u;
#pragma unroll
        for (int m = 0; m < MT; ++m) mma_tf32(acc[m][n], a[m], b0, b1);
      }
    }
  }
  // Fragment element e of (m, n): row co = m*16 + g + 8*(e/2), column j = n*8 + 2q + e%2.
  __syncthreads();
  float* red = smem;  // [WARPS][WS]
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int co = m * 16 + g + 8 * (e >> 1), j = n * 8 + 2 * q + (e & 1);
        if (j < KDIM) red[warp * WS + co * KDIM + j] = acc[m][n][e];
      }
  __syncthreads();
  for (int i = t; i < WS; i += THREADS) {
    float v = 0.f;
    for (int w = 0; w < WARPS; ++w) v += red[w * WS + i];
    dw_part[size_t(blockIdx.x) * WS + i] = v;
  }
}

__global__ void finalize(const float* __restrict__ part, int blocks, float* dw) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= WS) return;
  double v = 0;
  for (int b = 0; b < blocks; ++b) v += part[size_t(b) * WS + i];
  dw[i] = float(v);
}

// ---- harness -------------------------------------------------------------------------------------
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& dz, const Shape& sh) {
  std::vector<double> dw(WS, 0.0);
  for (int n = 0; n < sh.N; ++n)
    for (int co = 0; co < COUT; ++co)
      for (int ci = 0; ci < CIN; ++ci)
        for (int kh = 0; kh < KS; ++kh)
          for (int kw = 0; kw < KS; ++kw) {
            double s = 0;
            for (int oy = 0; oy < sh.Ho; ++oy) {
              const float* d = &dz[((size_t(n) * COUT + co) * sh.Ho + oy) * sh.Wo];
              const float* xr = &x[((size_t(n) * CIN + ci) * sh.H + oy + kh) * sh.W + kw];
              for (int ox = 0; ox < sh.Wo; ++ox) s += double(d[ox]) * xr[ox];
            }
            dw[((co * CIN + ci) * KS + kh) * KS + kw] += s;
          }
  return dw;
}

int main(int argc, char** argv) {
  const int only = argc > 1 ? std::atoi(argv[1]) : 0;
  const int Nbig = argc > 2 ? std::atoi(argv[2]) : 128;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %s; weight gradient, %d -> %d channels, k %d, 256x256\n", prop.name, CIN, COUT, KS);
  std::printf("| variant | N | rel L2 vs double | median ms | min ms | TFLOP/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (int N : {4, Nbig}) {
    Shape sh{N, 256, 256, 254, 254, 0, 0};
    sh.tiles_y = (sh.Ho + TH - 1) / TH;
    sh.tiles_x = (sh.Wo + TW - 1) / TW;
    const size_t nx = size_t(N) * CIN * 256 * 256, nz = size_t(N) * COUT * 254 * 254;
    std::vector<float> hx(nx), hz(nz);
    std::mt19937 rng(1234 + N);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto& v : hx) v = u(rng);
    for (auto& v : hz) v = u(rng) * 1e-3f;
    std::vector<double> ref;
    if (N <= 8) ref = reference(hx, hz, sh);
    float *x, *dz, *part, *dw;
    CK(cudaMalloc(&x, nx * 4));
    CK(cudaMalloc(&dz, nz * 4));
    CK(cudaMemcpy(x, hx.data(), nx * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dz, hz.data(), nz * 4, cudaMemcpyHostToDevice));
    const int total = N * sh.tiles_y * sh.tiles_x;
    const int grid = std::min(2 * prop.multiProcessorCount, total);
    CK(cudaMalloc(&part, size_t(grid) * WS * 4));
    CK(cudaMalloc(&dw, WS * 4));
    for (int v = 1; v <= 3; ++v) {
      if (only && v != only) continue;
      size_t smem = 0;
      void (*k)(const float*, const float*, Shape, float*) = nullptr;
      if (v == 1) { k = dw_fma; smem = size_t(XS + COUT * V1_PPAD) * 4; }
      if (v == 2) { k = dw_tf32<true>; smem = size_t(XS + COUT * V2_PPAD) * 4; }
      if (v == 3) { k = dw_tf32<false>; smem = size_t(XS + COUT * V2_PPAD) * 4; }
      smem = std::max(smem, size_t(WARPS * WS) * 4);
      CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      auto run = [&] {
        CK(cudaMemset(dw, 0xff, WS * 4));  // poison: NaN unless written
        k<<<grid, THREADS, smem>>>(x, dz, sh, part);
        CK(cudaGetLastError());
        finalize<<<(WS + 255) / 256, 256>>>(part, grid, dw);
        CK(cudaGetLastError());
      };
      run();
      CK(cudaDeviceSynchronize());
      double err = -1;
      if (!ref.empty()) {
        std::vector<float> got(WS);
        CK(cudaMemcpy(got.data(), dw, WS * 4, cudaMemcpyDeviceToHost));
        double num = 0, den = 0;
        for (int i = 0; i < WS; ++i) {
          num += (got[i] - ref[i]) * (got[i] - ref[i]);
          den += ref[i] * ref[i];
        }
        err = std::isfinite(num) ? std::sqrt(num / den) : INFINITY;
      }
      std::vector<float> ms;
      cudaEvent_t a, b;
      CK(cudaEventCreate(&a));
      CK(cudaEventCreate(&b));
      for (int r = 0; r < (N <= 8 ? 3 : 20); ++r) {
        CK(cudaEventRecord(a));
        run();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float t = 0;
        CK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const double flop = 2.0 * N * COUT * 254.0 * 254.0 * KDIM;
      std::printf("| %d | %d | %.2e | %.3f | %.3f | %.1f |\n", v, N, err, ms[ms.size() / 2], ms[0],
                  flop / (ms[ms.size() / 2] * 1e-3) / 1e12);
    }
    CK(cudaFree(x));
    CK(cudaFree(dz));
    CK(cudaFree(part));
    CK(cudaFree(dw));
  }
  return 0;
}
