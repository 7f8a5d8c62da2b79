// The direct kernels of the fused block: the convolution with its epilogue, forward and backward,
// as templates on (Cin, Cout, k). Compiled at run time by NVRTC for the problem's (Cin, Cout, k)
// (ops/conv_block/jit_cuda.cpp embeds this file and its headers); the tile configuration comes from
// direct_config.h. float32, stride 1, no padding, layout NCHW. A tile is 8 x 64 output pixels of one
// sample, all Cout channels; CTAs are persistent and loop over tiles.
//
//   forward_fma_kernel   direct convolution in FP32 FMAs (a thread: 4 adjacent pixels x 16 or 8
//                        channels), channel slices side by side and in passes for large Cout.
//   forward_tf32_kernel  the same tiles as an implicit GEMM on mma.sync m16n8k8 (TF32 in, FP32
//                        accumulate).
//     epilogue (both): z = conv + conv_bias (written), s = sigmoid((z + bias) * scale), and per
//     (n, group, tile) (count, mean, M2) of s: per channel two-pass within the tile, channels
//     combined with Chan's formula (equal counts).
//   backward_kernel      per tile, dz for all channels into shared memory (recomputing s, xhat, y, dy
//                        from z and t), per-channel d bias / d scale in registers, then the weight
//                        gradient dW += dz (x) im2col(x) in FP32 FMAs, or with TF32 allowed on
//                        mma.sync m16n8k8 where it fits. Per-CTA partials, summed in fixed order
//                        afterwards (backward_finalize): deterministic.
#pragma once

#include "../../core/cuda_reduce.cuh"
#include "device.cuh"
#include "direct_config.h"

namespace tg::ops::detail {

using cuda::warp_sum;

// The input tile's constants for a kernel of THREADS threads with NBUF tile buffers.
template <int CIN, int KS, int THREADS_, int NBUF_>
struct TileK {
  static constexpr int THREADS = THREADS_, WARPS = THREADS / 32, NBUF = NBUF_;
  static constexpr int TH = kDirectTileH, TW = kDirectTileW, TP = TH * TW;
  static constexpr int IH = direct_tile(CIN, KS).ih, IW = direct_tile(CIN, KS).iw;
  static constexpr int PITCH = direct_tile(CIN, KS).pitch, XS = direct_tile(CIN, KS).xs;
};

// Starts copying the input tile (Cin x IH x IW, zero outside the image) of sample n at (iy0, ix0)
// into shared memory with cp.async.
template <int CIN, class C>
__device__ void issue_x_tile(float* xs, const float* __restrict__ x_n, int H, int W, int iy0,
                             int ix0) {
  for (int i = threadIdx.x; i < CIN * C::IH * C::IW; i += C::THREADS) {
    const int c = i % C::IW;
    const int r = (i / C::IW) % C::IH;
    const int ci = i / (C::IW * C::IH);
    const int gy = iy0 + r, gx = ix0 + c;
    const bool valid = gy < H && gx < W;
    cp_async4(xs + (ci * C::IH + r) * C::PITCH + c,
              valid ? x_n + (size_t(ci) * H + gy) * W + gx : x_n, valid);
  }
  cp_async_commit();
}

struct TileCoord {
  int n, oy0, ox0, tile_in_image;
};

// Persistent CTAs walk the tiles blockIdx.x, blockIdx.x + gridDim.x, ...; with two buffers the input
// tile of the next one is copied (cp.async) into the other buffer while this one is computed; with
// one, prefetch_next() copies the current tile (the buffer is free once the previous tile is done).
//   pipe.start();  for (tile...; ++it) { xs = pipe.advance(tile, it); ... __syncthreads(); }
// (or prefetch_next() early and wait_current() later, to overlap more work with the copy).
template <int CIN, class C>
struct TilePipeline {
  const float* x;
  const ConvBlockShape& sh;
  float* xbuf;  // [2][XS]
  int total, tiles_per_image;

  __device__ TilePipeline(const float* x_, const ConvBlockShape& sh_, float* xbuf_)
      : x(x_), sh(sh_), xbuf(xbuf_) {
    tiles_per_image = sh.tiles_y * sh.tiles_x;
    total = sh.N * tiles_per_image;
  }
  __device__ TileCoord coord(int tile) const {
    TileCoord t;
    t.n = tile / tiles_per_image;
    t.tile_in_image = tile % tiles_per_image;
    t.oy0 = (t.tile_in_image / sh.tiles_x) * C::TH;
    t.ox0 = (t.tile_in_image % sh.tiles_x) * C::TW;
    return t;
  }
  __device__ float* buffer(int it) const { return C::NBUF == 2 ? xbuf + (it & 1) * C::XS : xbuf; }
  __device__ void issue(int tile, int it) const {
    const TileCoord tc = coord(tile);
    issue_x_tile<CIN, C>(buffer(it), x + size_t(tc.n) * CIN * sh.H * sh.W, sh.H, sh.W, tc.oy0,
                         tc.ox0);
  }
  __device__ void start() const {
    if (C::NBUF == 2 && int(blockIdx.x) < total) issue(blockIdx.x, 0);
  }
  __device__ bool has_next(int tile) const { return tile + int(gridDim.x) < total; }
  // Call only when every thread is done with the previous tile.
  __device__ void prefetch_next(int tile, int it) const {
    if (C::NBUF == 1) {
      issue(tile, it);
    } else if (has_next(tile)) {
      issue(tile + gridDim.x, it + 1);
    }
  }
  // This thread's copies of the current tile have landed (a barrier makes them everyone's).
  __device__ void wait_current(int tile) const {
    if (C::NBUF == 2 && has_next(tile)) {
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
  }
  __device__ const float* advance(int tile, int it) const {
    prefetch_next(tile, it);
    wait_current(tile);
    return buffer(it);
  }
};

// The end of a tile's statistics. cmean[co], cm2[co]: each channel's mean and sum of squared
// deviations over the tile's npx valid pixels. Chan's combination of a group's D channels (equal
// counts): its mean is the mean of the channel means, its M2 the channels' M2 plus npx times the
// squared deviations of the channel means. (count, mean, M2) of group g into
// tile_stats[(n * G + g) * tiles_per_image + tile_in_image]. Threads < G (<= Cout) take part.
__device__ __forceinline__ void write_tile_group_stats(const float* cmean, const float* cm2, int G,
                                                       int D, float npx, const TileCoord& tc,
                                                       int tiles_per_image, float4* tile_stats) {
  const int g = threadIdx.x;
  if (g < G) {
    float m = 0.f;
    for (int c = 0; c < D; ++c) m += cmean[g * D + c];
    m /= float(D);
    float m2 = 0.f;
    for (int c = 0; c < D; ++c) {
      const float d = cmean[g * D + c] - m;
      m2 += cm2[g * D + c] + npx * d * d;
    }
    tile_stats[(size_t(tc.n) * G + g) * tiles_per_image + tc.tile_in_image] =
        make_float4(npx * float(D), m, m2, 0.f);
  }
}

// ---- forward on FP32 FMAs ----------------------------------------------------------------------
template <int CIN, int COUT, int KS, int NBUF>
struct FmaK : TileK<CIN, KS, fma_config(CIN, COUT, KS, NBUF).threads, NBUF> {
  static constexpr int CPT = fma_config(CIN, COUT, KS, NBUF).cpt, PX = 4;
  static constexpr int SLICES = fma_config(CIN, COUT, KS, NBUF).slices;
  static constexpr int PASSES = fma_config(CIN, COUT, KS, NBUF).passes;
  static constexpr int MIN_BLOCKS = fma_config(CIN, COUT, KS, NBUF).min_blocks;
  static constexpr int WS = fma_config(CIN, COUT, KS, NBUF).ws;
};

template <int CIN, int COUT, int KS, int NBUF>
__global__ void __launch_bounds__(FmaK<CIN, COUT, KS, NBUF>::THREADS,
                                  FmaK<CIN, COUT, KS, NBUF>::MIN_BLOCKS)
    forward_fma_kernel(const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ conv_bias, const float* __restrict__ bias,
                       const float* __restrict__ scale, ConvBlockShape sh, float* __restrict__ z,
                       float4* __restrict__ tile_stats) {
  using C = FmaK<CIN, COUT, KS, NBUF>;
  extern __shared__ __align__(16) float fsmem[];
  float* xbuf = fsmem;                  // input tiles, [NBUF][CIN][IH][PITCH]
  float* ws = fsmem + NBUF * C::XS;     // weights [ci][kh][kw][co]
  __shared__ float red[C::WARPS][C::CPT];
  __shared__ float cmean[COUT], cm2[COUT];
  __shared__ float pbias[COUT], pscale[COUT], pcb[COUT];

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int tx = t % 16, ty = (t / 16) % C::TH, slice = t / 128;
  for (int i = t; i < C::WS; i += C::THREADS) {
    const int co = i / (CIN * KS * KS), rest = i % (CIN * KS * KS);  // rest = (ci*KS + kh)*KS + kw
    ws[rest * COUT + co] = w[i];
  }
  for (int i = t; i < COUT; i += C::THREADS) {
    pbias[i] = bias[i];
    pscale[i] = scale[i];
    pcb[i] = conv_bias[i];
  }
  const int D = COUT / sh.G;
  const int tiles_per_image = sh.tiles_y * sh.tiles_x;
  const int total = sh.N * tiles_per_image;

  // After each warp's lane 0 wrote red[warp][c] for its slice's channels: out[co] = the CTA's
  // total times mul (the 4 warps of co's slice), for the pass's channels from c0.
  auto channel_totals = [&](int c0, float mul, float* out) {
    __syncthreads();
    if (t < C::SLICES * C::CPT) {
      const int h = t / C::CPT;
      float v = 0.f;
      for (int w4 = 0; w4 < 4; ++w4) v += red[h * 4 + w4][t % C::CPT];
      out[c0 + t] = v * mul;
    }
    __syncthreads();
  };
  TilePipeline<CIN, C> pipe(x, sh, xbuf);
  pipe.start();
  int it = 0;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x, ++it) {
    const TileCoord tc = pipe.coord(tile);
    // The other buffer's readers finished at the end of the previous tile: fetch the next tile.
    const float* xs = pipe.advance(tile, it);
    __syncthreads();  // this tile's copies (and the weights) are visible to every thread
    const int oy = tc.oy0 + ty;
    const int oxb = tc.ox0 + tx * C::PX;
    bool valid[C::PX];
#pragma unroll
    for (int p = 0; p < C::PX; ++p) valid[p] = oy < sh.Ho && oxb + p < sh.Wo;
    const int rows = min(C::TH, sh.Ho - tc.oy0), cols = min(C::TW, sh.Wo - tc.ox0);
    const float npx = float(rows * cols);

    for (int pass = 0; pass < C::PASSES; ++pass) {
      const int c0 = pass * C::SLICES * C::CPT;  // the pass's first channel
      const int cs = c0 + slice * C::CPT;        // this thread's first channel
      float acc[C::CPT][C::PX];
#pragma unroll
      for (int c = 0; c < C::CPT; ++c)
#pragma unroll
        for (int p = 0; p < C::PX; ++p) acc[c][p] = 0.f;

#pragma unroll 2
      for (int ci = 0; ci < CIN; ++ci) {
#pragma unroll
        for (int kh = 0; kh < KS; ++kh) {
          const float* row = xs + (ci * C::IH + ty + kh) * C::PITCH + tx * C::PX;
          float in[C::PX + KS - 1];
          const float4 v = *reinterpret_cast<const float4*>(row);
          in[0] = v.x;
          in[1] = v.y;
          in[2] = v.z;
          in[3] = v.w;
#pragma unroll
          for (int j = 4; j < C::PX + KS - 1; ++j) in[j] = row[j];
#pragma unroll
          for (int kw = 0; kw < KS; ++kw) {
            const float4* wv =
                reinterpret_cast<const float4*>(ws + ((ci * KS + kh) * KS + kw) * COUT + cs);
#pragma unroll
            for (int q = 0; q < C::CPT / 4; ++q) {
              const float4 wq = wv[q];
#pragma unroll
              for (int p = 0; p < C::PX; ++p) {
                acc[4 * q + 0][p] = fmaf(wq.x, in[p + kw], acc[4 * q + 0][p]);
                acc[4 * q + 1][p] = fmaf(wq.y, in[p + kw], acc[4 * q + 1][p]);
                acc[4 * q + 2][p] = fmaf(wq.z, in[p + kw], acc[4 * q + 2][p]);
                acc[4 * q + 3][p] = fmaf(wq.w, in[p + kw], acc[4 * q + 3][p]);
              }
            }
          }
        }
      }

      // Epilogue: z out, s kept in acc; invalid pixels (past the image edge) count for nothing.
#pragma unroll
      for (int c = 0; c < C::CPT; ++c) {
        const int co = cs + c;
        float* zrow = z + ((size_t(tc.n) * COUT + co) * sh.Ho + oy) * sh.Wo + oxb;
#pragma unroll
        for (int p = 0; p < C::PX; ++p) {
          const float zz = acc[c][p] + pcb[co];
          if (valid[p]) zrow[p] = zz;
          acc[c][p] = valid[p] ? sigmoidf((zz + pbias[co]) * pscale[co]) : 0.f;
        }
      }
      // Pass 1: per-channel means of s over the tile.
#pragma unroll
      for (int c = 0; c < C::CPT; ++c) {
        float v = 0.f;
#pragma unroll
        for (int p = 0; p < C::PX; ++p) v += acc[c][p];
        v = warp_sum(v);
        if (lane == 0) red[warp][c] = v;
      }
      channel_totals(c0, 1.0f / npx, cmean);
      // Pass 2: per-channel sums of squared deviations from the channel mean.
#pragma unroll
      for (int c = 0; c < C::CPT; ++c) {
        const float m = cmean[cs + c];
        float v = 0.f;
#pragma unroll
        for (int p = 0; p < C::PX; ++p) {
          const float d = acc[c][p] - m;
          v += valid[p] ? d * d : 0.f;
        }
        v = warp_sum(v);
        if (lane == 0) red[warp][c] = v;
      }
      channel_totals(c0, 1.0f, cm2);
    }
    write_tile_group_stats(cmean, cm2, sh.G, D, npx, tc, tiles_per_image, tile_stats);
    __syncthreads();  // done with xs, cmean and cm2 of this tile
  }
}

// ---- forward on TF32 tensor cores (when ops::conv::allow_tf32(), the default, like cuDNN) ----------
// The same tiles and epilogue as forward_fma_kernel; the convolution is an implicit GEMM on
// mma.sync.m16n8k8: M = the 64 pixels of one tile row per warp (4 m-tiles of 16), N = Cout (n-tiles
// of 8, NTP per pass), K = Cin*k*k (k-steps of 8, zero-padded). A comes from the input tile in shared
// memory (each lane reads its four elements at precomputed offsets), B from the weights staged once
// per CTA as [k][co].
template <int CIN, int COUT, int KS, int NBUF>
struct Tf32K : TileK<CIN, KS, 256, NBUF> {
  static constexpr Tf32Config CFG = tf32_config(CIN, COUT, KS, NBUF);
  static constexpr int K = CFG.k, KSTEPS = CFG.ksteps, KPAD = CFG.kpad;
  static constexpr int NTP = CFG.ntp, PASSES = CFG.passes;
  static constexpr int MT = kDirectTileW / 16, BPITCH = CFG.bpitch, UNROLL = CFG.unroll;
  static_assert(kDirectTileH == 8, "one tile row per warp");
};

template <int CIN, int COUT, int KS, int NBUF>
__global__ void __launch_bounds__(256, 2)
    forward_tf32_kernel(const float* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ conv_bias, const float* __restrict__ bias,
                        const float* __restrict__ scale, ConvBlockShape sh, float* __restrict__ z,
                        float4* __restrict__ tile_stats) {
  using C = Tf32K<CIN, COUT, KS, NBUF>;
  extern __shared__ __align__(16) float fsmem[];
  float* xbuf = fsmem;                                               // input tiles
  uint32_t* bs = reinterpret_cast<uint32_t*>(fsmem + NBUF * C::XS);  // [KPAD][BPITCH], tf32 bits
  __shared__ float red[C::WARPS][C::NTP * 8];
  __shared__ float cmean[COUT], cm2[COUT];
  __shared__ float pbias[COUT], pscale[COUT], pcb[COUT];
  // Shared-memory offset in the input tile of each k = (ci, kh, kw); -1 for the zero padding.
  __shared__ int koffs[C::KPAD];

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int g = lane >> 2, q = lane & 3;  // mma groupID and thread-in-group
  for (int i = t; i < C::KPAD * COUT; i += C::THREADS) {
    const int k = i / COUT, co = i % COUT;
    bs[k * C::BPITCH + co] = to_tf32(k < C::K ? w[co * C::K + k] : 0.f);
  }
  for (int i = t; i < COUT; i += C::THREADS) {
    pbias[i] = bias[i];
    pscale[i] = scale[i];
    pcb[i] = conv_bias[i];
  }
  for (int k = t; k < C::KPAD; k += C::THREADS)
    koffs[k] = k < C::K ? ((k / (KS * KS)) * C::IH + (k / KS) % KS) * C::PITCH + k % KS : -1;
  const int D = COUT / sh.G;
  const int tiles_per_image = sh.tiles_y * sh.tiles_x;
  const int total = sh.N * tiles_per_image;

  // out[c0 + j] = mul * the CTA's total of csum for the pass's channel j (lane (g, q) holds
  // channels n*8 + 2q + h): over the 8 lanes that share q, then over the warps.
  auto channel_totals = [&](const float (&csum)[C::NTP][2], int c0, float mul, float* out) {
#pragma unroll
    for (int n = 0; n < C::NTP; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float v = csum[n][h];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        if (g == 0) red[warp][n * 8 + 2 * q + h] = v;
      }
    __syncthreads();
    if (t < C::NTP * 8) {
      float v = 0.f;
      for (int w2 = 0; w2 < C::WARPS; ++w2) v += red[w2][t];
      out[c0 + t] = v * mul;
    }
    __syncthreads();
  };
  TilePipeline<CIN, C> pipe(x, sh, xbuf);
  pipe.start();
  int it = 0;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x, ++it) {
    const TileCoord tc = pipe.coord(tile);
    const float* xs = pipe.advance(tile, it);
    __syncthreads();
    const int oy = tc.oy0 + warp;
    const int rows = min(C::TH, sh.Ho - tc.oy0), cols = min(C::TW, sh.Wo - tc.ox0);
    const float npx = float(rows * cols);
    const float* row = xs + warp * C::PITCH + g;  // this warp's output row; pixel g of each m-tile

    for (int pass = 0; pass < C::PASSES; ++pass) {
      const int c0 = pass * C::NTP * 8;
      float acc[C::MT][C::NTP][4];
#pragma unroll
      for (int m = 0; m < C::MT; ++m)
#pragma unroll
        for (int n = 0; n < C::NTP; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.f;
#pragma unroll C::UNROLL
      for (int s = 0; s < C::KSTEPS; ++s) {
        const int k0 = koffs[s * 8 + q], k1 = koffs[s * 8 + q + 4];
        uint32_t b[C::NTP][2];
#pragma unroll
        for (int n = 0; n < C::NTP; ++n) {
          b[n][0] = bs[(s * 8 + q) * C::BPITCH + c0 + n * 8 + g];
          b[n][1] = bs[(s * 8 + q + 4) * C::BPITCH + c0 + n * 8 + g];
        }
#pragma unroll
        for (int m = 0; m < C::MT; ++m) {
          uint32_t a[4];
          const float* r0 = row + m * 16;
          a[0] = k0 >= 0 ? to_tf32(r0[k0]) : 0u;
          a[1] = k0 >= 0 ? to_tf32(r0[k0 + 8]) : 0u;
          a[2] = k1 >= 0 ? to_tf32(r0[k1]) : 0u;
          a[3] = k1 >= 0 ? to_tf32(r0[k1 + 8]) : 0u;
#pragma unroll
          for (int n = 0; n < C::NTP; ++n) mma_tf32(acc[m][n], a, b[n][0], b[n][1]);
        }
      }

      // Epilogue: fragment element e of (m, n) is pixel m*16 + g + 8*(e/2), channel
      // c0 + n*8 + 2q + e%2.
      float csum[C::NTP][2];
#pragma unroll
      for (int n = 0; n < C::NTP; ++n) csum[n][0] = csum[n][1] = 0.f;
#pragma unroll
      for (int m = 0; m < C::MT; ++m)
#pragma unroll
        for (int n = 0; n < C::NTP; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int co = c0 + n * 8 + 2 * q + (e & 1);
            const int ox = tc.ox0 + m * 16 + g + 8 * (e >> 1);
            const bool valid = oy < sh.Ho && ox < sh.Wo;
            const float zz = acc[m][n][e] + pcb[co];
            if (valid) z[((size_t(tc.n) * COUT + co) * sh.Ho + oy) * sh.Wo + ox] = zz;
            const float sv = valid ? sigmoidf((zz + pbias[co]) * pscale[co]) : 0.f;
            acc[m][n][e] = sv;
            csum[n][e & 1] += sv;
          }
      // Pass 1: per-channel means of s over the tile.
      channel_totals(csum, c0, 1.0f / npx, cmean);
      // Pass 2: per-channel squared deviations from the channel mean.
#pragma unroll
      for (int n = 0; n < C::NTP; ++n) csum[n][0] = csum[n][1] = 0.f;
#pragma unroll
      for (int m = 0; m < C::MT; ++m)
#pragma unroll
        for (int n = 0; n < C::NTP; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int co = c0 + n * 8 + 2 * q + (e & 1);
            const int ox = tc.ox0 + m * 16 + g + 8 * (e >> 1);
            const float d = acc[m][n][e] - cmean[co];
            csum[n][e & 1] += (oy < sh.Ho && ox < sh.Wo) ? d * d : 0.f;
          }
      channel_totals(csum, c0, 1.0f, cm2);
    }
    write_tile_group_stats(cmean, cm2, sh.G, D, npx, tc, tiles_per_image, tile_stats);
    __syncthreads();  // done with xs, cmean and cm2 of this tile
  }
}

// ---- backward: dz per tile, per-channel d bias / d scale, weight gradient -------------------------
template <int CIN, int COUT, int KS, int NBUF, int PASSES, bool TF32W>
struct BwdK : TileK<CIN, KS, backward_config(CIN, COUT, KS, NBUF, PASSES).threads, NBUF> {
  static constexpr BackwardConfig CFG = backward_config(CIN, COUT, KS, NBUF, PASSES, TF32W);
  static constexpr WgTf32Config WG = wg_tf32_config(CIN, COUT, KS, NBUF, PASSES);
  // The TF32 weight gradient's partition (direct_config.h; 1s when it is not used).
  static constexpr int MT = TF32W ? WG.mt : 1, NW = WG.nw, WK = TF32W ? WG.wk : 1;
  static constexpr int WN = TF32W ? WG.wn : 1, NTW = TF32W ? WG.ntw : 1;
  static_assert(!TF32W || WG.ok, "no TF32 weight-gradient configuration for this shape");
  static constexpr int CS = CFG.cs, CPW = CFG.cpw, KR = CFG.kr;
  static constexpr int UPP = CFG.upp, UNITS = CFG.units_per_pass, PSETS = CFG.psets;
  static constexpr int ROWS_PER_PSET = kDirectTileH / PSETS;
  static constexpr int WS = CFG.ws, PPAD = CFG.ppad;  // PPAD: dz row pitch
  static constexpr int MIN_BLOCKS = CFG.threads <= 256 ? 2 : 1;
  static_assert(CS % 4 == 0, "a pass holds whole weight-gradient units");
};

// Pass p, Cout slice [p*CS, (p+1)*CS): dz of the slice's channels into shared memory, then
// dW[co][ci][kh][kw] += sum over the tile's pixels of dz[co][p] * x[ci][p + (kh, kw)] for them.
// FP32 FMAs (TF32W false): a unit (cog, wci, khg) of a pass covers channels p*CS + 4 cog.., input
// channel wci, kernel rows KR khg..; cog fastest (a warp's lanes read the same input row:
// broadcast). TF32W: an implicit GEMM on mma.sync m16n8k8 (WgTf32Config): A = dz [co][pixel] from
// shared memory, B = the input tile read as im2col [pixel][(ci, kh, kw)] at per-lane offsets.
template <int CIN, int COUT, int KS, int NBUF, int PASSES, bool LOSS, bool TF32W = false>
__global__ void __launch_bounds__(BwdK<CIN, COUT, KS, NBUF, PASSES, TF32W>::THREADS,
                                  BwdK<CIN, COUT, KS, NBUF, PASSES, TF32W>::MIN_BLOCKS)
    backward_kernel(const float* __restrict__ x, const float* __restrict__ z,
                    const float* __restrict__ other, const float* __restrict__ mean,
                    const float* __restrict__ rstd, const float* __restrict__ A,
                    const float* __restrict__ B, const float* __restrict__ bias,
                    const float* __restrict__ scale, const float* __restrict__ gamma,
                    const float* __restrict__ beta, const float* __restrict__ gout_ptr,
                    float dy_scale, ConvBlockShape sh, float* __restrict__ dz_out,
                    float* __restrict__ dw_part, float* __restrict__ dbias_part,
                    float* __restrict__ dscale_part) {
  using C = BwdK<CIN, COUT, KS, NBUF, PASSES, TF32W>;
  extern __shared__ __align__(16) float smem[];
  float* xbuf = smem;                // input tiles, [NBUF][CIN][IH][PITCH]
  float* dzs = smem + NBUF * C::XS;  // [CS][PPAD]
  __shared__ float sdb[PASSES > 1 ? COUT : 1], sds[PASSES > 1 ? COUT : 1];

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const float gout = gout_ptr ? *gout_ptr : 1.0f;
  const float gs = gout * dy_scale;  // dy = gs * (y - t) for the loss; gs * dy otherwise
  const int D = COUT / sh.G;
  const float inv_m = 1.0f / float(D * sh.Ho * sh.Wo);
  const int tiles_per_image = sh.tiles_y * sh.tiles_x;
  const int total = sh.N * tiles_per_image;

  // This thread's units in each pass: t + u * THREADS, or with row sets unit t % UNITS over the
  // rows of set t / UNITS.
  const int pset = C::UPP == 1 ? t / C::UNITS : 0;
  const bool wg_rows = pset < C::PSETS;
  auto unit_of = [&](int u) { return C::UPP == 1 ? t % C::UNITS : t + u * C::THREADS; };
  // FMA path: each unit's first input row and dz row in shared memory, and its accumulators.
  constexpr int FP = TF32W ? 1 : PASSES, FU = TF32W ? 1 : C::UPP;
  int xoff[FU], dzoff[FU];
  float wacc[FP][FU][4][C::KR][KS];
  // TF32 path: this warp's row group and n-tile set, the input-tile offset of each of its n-tiles'
  // weight (ci, kh, kw) for this lane's column g (-1 past Cin*k*k), and the accumulators.
  const int mg = lane >> 2, mq = lane & 3;  // mma groupID and thread-in-group
  const int wrow = warp / C::WN, wset = warp % C::WN;
  int boff[C::NTW];
  float tacc[TF32W ? PASSES : 1][C::MT][C::NTW][4] = {};
  if constexpr (TF32W) {
#pragma unroll
    for (int j = 0; j < C::NTW; ++j) {
      const int n = (wset + j * C::WN) * 8 + mg;
      boff[j] = n < C::NW ? ((n / (KS * KS)) * C::IH + (n / KS) % KS) * C::PITCH + n % KS : -1;
    }
  } else {
#pragma unroll
    for (int u = 0; u < C::UPP; ++u) {
      const int unit = unit_of(u), cog = unit % (C::CS / 4), rest = unit / (C::CS / 4);
      xoff[u] = ((rest % CIN) * C::IH + (rest / CIN) * C::KR) * C::PITCH;
      dzoff[u] = cog * 4 * C::PPAD;
    }
#pragma unroll
    for (int ps = 0; ps < PASSES; ++ps)
#pragma unroll
      for (int u = 0; u < C::UPP; ++u)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int a = 0; a < C::KR; ++a)
#pragma unroll
            for (int b = 0; b < KS; ++b) wacc[ps][u][j][a][b] = 0.f;
  }
  // d bias / d scale: per lane in registers over the tiles (one pass), or with several passes
  // flushed per pass into shared memory (each channel has one warp: a fixed order).
  float acc_db[C::CPW], acc_ds[C::CPW];
#pragma unroll
  for (int k = 0; k < C::CPW; ++k) acc_db[k] = acc_ds[k] = 0.f;
  if (PASSES > 1)
    for (int i = t; i < COUT; i += C::THREADS) sdb[i] = sds[i] = 0.f;

  TilePipeline<CIN, C> pipe(x, sh, xbuf);
  pipe.start();
  int it = 0;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x, ++it) {
    const TileCoord tc = pipe.coord(tile);
    const float* xs = pipe.buffer(it);
#pragma unroll
    for (int ps = 0; ps < PASSES; ++ps) {
      __syncthreads();  // the previous weight-gradient readers are done with dzs (and the buffer)
      if (ps == 0) pipe.prefetch_next(tile, it);  // its copy overlaps this tile's dz phase

      // dz for the slice's channels: warp -> channels, lanes -> pixels (coalesced rows).
#pragma unroll
      for (int k = 0; k < C::CPW; ++k) {
        const int cl = warp + k * C::WARPS;  // channel in the slice
        if (C::CPW * C::WARPS != C::CS && cl >= C::CS) break;
        const int co = ps * C::CS + cl;
        const int ng = tc.n * sh.G + co / D;
        const float m = mean[ng], r = rstd[ng], a_ = A[ng] * gout * inv_m, b_ = B[ng] * gout * inv_m;
        const float bb = bias[co], sc = scale[co], gm = gamma[co], bt = beta[co];
        const size_t plane = (size_t(tc.n) * COUT + co) * sh.Ho;
        // 8 pixels per lane at a time: their z and target loads are all in flight together.
        for (int p0 = 0; p0 < C::TP; p0 += 8 * 32) {
          float zr[8], orr[8];
          bool ok[8];
          size_t idx[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int p = p0 + i * 32 + lane;
            const int oy = tc.oy0 + p / C::TW, ox = tc.ox0 + p % C::TW;
            ok[i] = p < C::TP && oy < sh.Ho && ox < sh.Wo;
            idx[i] = (plane + oy) * sh.Wo + ox;
            zr[i] = ok[i] ? __ldg(z + idx[i]) : 0.f;
            orr[i] = ok[i] ? __ldg(other + idx[i]) : 0.f;
          }
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int p = p0 + i * 32 + lane;
            float dzv = 0.f;
            if (ok[i]) {
              const float zb = zr[i] + bb;
              const float s = sigmoidf(zb * sc);
              const float xh = (s - m) * r;
              const float dy = LOSS ? gs * (xh * gm + bt - orr[i]) : gs * orr[i];
              const float ds = r * (dy * gm - a_ - xh * b_);
              const float du = ds * s * (1.f - s);
              dzv = du * sc;
              acc_db[k] += dzv;
              acc_ds[k] = fmaf(du, zb, acc_ds[k]);
              if (dz_out) dz_out[idx[i]] = dzv;
            }
            if (p < C::TP) dzs[cl * C::PPAD + p] = dzv;
          }
        }
        if (PASSES > 1) {
          const float db = warp_sum(acc_db[k]), ds = warp_sum(acc_ds[k]);
          if (lane == 0) {
            sdb[co] += db;
            sds[co] += ds;
          }
          acc_db[k] = acc_ds[k] = 0.f;
        }
      }
      if (ps == 0) pipe.wait_current(tile);
      __syncthreads();

      if constexpr (TF32W) {
        // This warp's rows of the tile; per row 8 k-steps of 8 pixels. Fragment rows past the
        // slice's CS channels are zero.
        for (int rr = 0; rr < kDirectTileH / C::WK; ++rr) {
          const int r_ = wrow * (kDirectTileH / C::WK) + rr;
          const float* xr = xs + r_ * C::PITCH;
          const float* dzr = dzs + r_ * C::TW;
#pragma unroll 2
          for (int st = 0; st < C::TW / 8; ++st) {
            const int p0 = st * 8 + mq, p1 = p0 + 4;
            uint32_t a[C::MT][4];
#pragma unroll
            for (int m = 0; m < C::MT; ++m) {
              const int c0 = m * 16 + mg, c1 = c0 + 8;
              a[m][0] = c0 < C::CS ? to_tf32(dzr[c0 * C::PPAD + p0]) : 0u;
              a[m][1] = c1 < C::CS ? to_tf32(dzr[c1 * C::PPAD + p0]) : 0u;
              a[m][2] = c0 < C::CS ? to_tf32(dzr[c0 * C::PPAD + p1]) : 0u;
              a[m][3] = c1 < C::CS ? to_tf32(dzr[c1 * C::PPAD + p1]) : 0u;
            }
#pragma unroll
            for (int j = 0; j < C::NTW; ++j) {
              const uint32_t b0 = boff[j] >= 0 ? to_tf32(xr[boff[j] + p0]) : 0u;
              const uint32_t b1 = boff[j] >= 0 ? to_tf32(xr[boff[j] + p1]) : 0u;
#pragma unroll
              for (int m = 0; m < C::MT; ++m) mma_tf32(tacc[ps][m][j], a[m], b0, b1);
            }
          }
        }
      } else {
#pragma unroll
        for (int u = 0; u < C::UPP; ++u) {
          if (unit_of(u) >= C::UNITS || !wg_rows) continue;
          for (int rr = 0; rr < C::ROWS_PER_PSET; ++rr) {
            const int r_ = pset * C::ROWS_PER_PSET + rr;
            const float* xr = xs + xoff[u] + r_ * C::PITCH;
            float win[C::KR][KS];
#pragma unroll
            for (int kh = 0; kh < C::KR; ++kh)
#pragma unroll
              for (int kw = 0; kw < KS - 1; ++kw) win[kh][kw] = xr[kh * C::PITCH + kw];
            const float* dzp = dzs + dzoff[u] + r_ * C::TW;
#pragma unroll 4
            for (int c_ = 0; c_ < C::TW; ++c_) {
#pragma unroll
              for (int kh = 0; kh < C::KR; ++kh) win[kh][KS - 1] = xr[kh * C::PITCH + c_ + KS - 1];
              float d[4];
#pragma unroll
              for (int j = 0; j < 4; ++j) d[j] = dzp[j * C::PPAD + c_];
#pragma unroll
              for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int kh = 0; kh < C::KR; ++kh)
#pragma unroll
                  for (int kw = 0; kw < KS; ++kw)
                    wacc[ps][u][j][kh][kw] = fmaf(d[j], win[kh][kw], wacc[ps][u][j][kh][kw]);
#pragma unroll
              for (int kh = 0; kh < C::KR; ++kh)
#pragma unroll
                for (int kw = 0; kw < KS - 1; ++kw) win[kh][kw] = win[kh][kw + 1];
            }
          }
        }
      }
    }
  }

  // Per-CTA partials, in fixed order.
  if (PASSES == 1) {
#pragma unroll
    for (int k = 0; k < C::CPW; ++k) {
      const int co = warp + k * C::WARPS;
      if (C::CPW * C::WARPS != COUT && co >= COUT) break;
      const float db = warp_sum(acc_db[k]), ds = warp_sum(acc_ds[k]);
      if (lane == 0) {
        dbias_part[size_t(blockIdx.x) * COUT + co] = db;
        dscale_part[size_t(blockIdx.x) * COUT + co] = ds;
      }
    }
  } else {
    __syncthreads();
    for (int i = t; i < COUT; i += C::THREADS) {
      dbias_part[size_t(blockIdx.x) * COUT + i] = sdb[i];
      dscale_part[size_t(blockIdx.x) * COUT + i] = sds[i];
    }
  }
  if constexpr (TF32W) {
    // Fragment element e of (m, j) is channel ps*CS + m*16 + g + 8*(e/2), weight
    // (wset + j*WN)*8 + 2q + e%2 of [ci][kh][kw]. One row group: straight out; several: summed in
    // shared memory, groups in order.
    float* red = smem;  // [WK][WS], reuses the tiles' space (wg_tf32_config makes it fit)
    if (C::WK > 1) __syncthreads();
#pragma unroll
    for (int ps = 0; ps < PASSES; ++ps)
#pragma unroll
      for (int m = 0; m < C::MT; ++m)
#pragma unroll
        for (int j = 0; j < C::NTW; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int co = m * 16 + mg + 8 * (e >> 1);
            const int n = (wset + j * C::WN) * 8 + 2 * mq + (e & 1);
            if (co >= C::CS || n >= C::NW || wset + j * C::WN >= C::WG.nt) continue;
            const int i = (ps * C::CS + co) * C::NW + n;
            if (C::WK == 1)
              dw_part[size_t(blockIdx.x) * C::WS + i] = tacc[ps][m][j][e];
            else
              red[wrow * C::WS + i] = tacc[ps][m][j][e];
          }
    if (C::WK > 1) {
      __syncthreads();
      for (int i = t; i < C::WS; i += C::THREADS) {
        float v = 0.f;
        for (int r = 0; r < C::WK; ++r) v += red[r * C::WS + i];
        dw_part[size_t(blockIdx.x) * C::WS + i] = v;
      }
    }
  } else {
    (void)boff;
    (void)tacc;
    (void)wrow;
    (void)wset;
    // Weight index of (pass, unit, j, kh, kw) in [co][ci][kh][kw].
    auto widx = [&](int ps, int unit, int j, int kh, int kw) {
      const int cog = unit % (C::CS / 4), rest = unit / (C::CS / 4);
      const int wci = rest % CIN, kh0 = (rest / CIN) * C::KR;
      return (((ps * C::CS + cog * 4 + j) * CIN + wci) * KS + kh0 + kh) * KS + kw;
    };
    if (C::PSETS == 1) {  // every weight has one owner: straight out
#pragma unroll
      for (int ps = 0; ps < PASSES; ++ps)
#pragma unroll
        for (int u = 0; u < C::UPP; ++u) {
          const int unit = unit_of(u);
          if (unit >= C::UNITS || !wg_rows) continue;
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int kh = 0; kh < C::KR; ++kh)
#pragma unroll
              for (int kw = 0; kw < KS; ++kw)
                dw_part[size_t(blockIdx.x) * C::WS + widx(ps, unit, j, kh, kw)] = wacc[ps][u][j][kh][kw];
        }
      return;
    }
    __syncthreads();
    float* red = smem;  // [PSETS][WS], reuses the tiles' space (backward_config makes it fit)
    if (wg_rows) {
      const int unit = unit_of(0);
#pragma unroll
      for (int ps = 0; ps < PASSES; ++ps)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int kh = 0; kh < C::KR; ++kh)
#pragma unroll
            for (int kw = 0; kw < KS; ++kw)
              red[pset * C::WS + widx(ps, unit, j, kh, kw)] = wacc[ps][0][j][kh][kw];
    }
    __syncthreads();
    for (int i = t; i < C::WS; i += C::THREADS) {
      float v = 0.f;
      for (int p = 0; p < C::PSETS; ++p) v += red[p * C::WS + i];
      dw_part[size_t(blockIdx.x) * C::WS + i] = v;
    }
  }
}

}  // namespace tg::ops::detail
