// Fused kernels of the model's block: conv2d -> + bias -> * scale -> sigmoid -> GroupNorm (-> MSE).
//
// float32 only, stride 1, no padding, (Cin, Cout, k) fixed at compile time (see the instantiations
// at the bottom). Layout NCHW. A "tile" is TH x TW output pixels of one sample, all Cout channels.
//
//   forward_stats   one CTA loops over tiles (persistent): input tile and weights in shared memory,
//                   direct convolution in FP32 FMAs (each thread: 4 adjacent pixels x 16 channels),
//                   epilogue: z = conv + conv_bias (written), s = sigmoid((z + bias) * scale), and
//                   per-(n, group) (count, mean, M2) of s for the tile, two-pass within the tile.
//   stats_finalize  one thread per (n, group): Chan's combination of the tiles in fixed order (double).
//   normalize       y = (s - mean) * rstd * gamma + beta, recomputing s from z.
//   reduce          one CTA per (chunk, c, n) of a channel plane: sum (y-t)^2, sum dy, sum dy * xhat
//                   (dy from the MSE loss, or given), float4 loads; partials, no atomics.
//   reduce_finalize the loss and, per (n, g), A = sum dy*gamma, B = sum dy*gamma*xhat; per channel
//                   dgamma, dbeta (fixed order, double).
//   backward        persistent like forward_stats: per tile, dz for all channels into shared memory
//                   (recomputing s, xhat, y, dy from z and t), per-channel d bias / d scale in
//                   registers, then the weight gradient dW += dz (x) im2col(x) in FP32 FMAs (each
//                   thread: 4 output channels x 1 input channel x k x k taps, sliding along a row).
//                   Per-CTA partials; backward_finalize sums them in fixed order: deterministic.
#include "../../core/cuda_reduce.cuh"
#include "../../core/cuda_utils.h"
#include "device.cuh"
#include "kernels.h"

namespace tg::ops::detail {
namespace {

using cuda::warp_sum;

template <int CIN, int COUT, int KS>
struct Cfg {
  static constexpr int TH = 8, TW = 64, PX = 4, CPT = 16;
  static constexpr int IH = TH + KS - 1, IW = TW + KS - 1, PITCH = (IW + 3) / 4 * 4;
  static constexpr int THREADS = 128 * (COUT / CPT);
  static constexpr int WARPS = THREADS / 32;
  static constexpr int XS = CIN * IH * PITCH;      // floats of the input tile
  static constexpr int WS = COUT * CIN * KS * KS;  // floats of the weights
  static constexpr int TP = TH * TW;               // pixels of a tile
  static constexpr int PPAD = TP + 1;              // dz row pitch: conflict-free for 8 channel groups
  // weight-gradient work split: thread = (4 output channels, 1 input channel, a set of rows)
  static constexpr int WG_UNITS = (COUT / 4) * CIN;
  static constexpr int psets() {
    int p = THREADS / WG_UNITS;
    if (p > TH) p = TH;
    while (p > 1 && TH % p != 0) --p;
    return p < 1 ? 1 : p;
  }
  static constexpr int PSETS = psets();
  static constexpr int ROWS_PER_PSET = TH / PSETS;
  static_assert(COUT % CPT == 0, "Cout must be a multiple of 16");
  static_assert(WG_UNITS <= THREADS, "too many weight-gradient units for the block");
  static_assert(COUT % WARPS == 0, "Cout must be a multiple of the warp count");
};

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

__device__ __forceinline__ TileCoord tile_coord(int tile, int tiles_x, int tiles_per_image, int TH,
                                                int TW) {
  TileCoord t;
  t.n = tile / tiles_per_image;
  t.tile_in_image = tile % tiles_per_image;
  t.oy0 = (t.tile_in_image / tiles_x) * TH;
  t.ox0 = (t.tile_in_image % tiles_x) * TW;
  return t;
}

// Persistent CTAs walk the tiles blockIdx.x, blockIdx.x + gridDim.x, ...; the input tile of the next
// one is copied (cp.async) into the other of two shared-memory buffers while this one is computed.
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
    return tile_coord(tile, sh.tiles_x, tiles_per_image, C::TH, C::TW);
  }
  __device__ float* buffer(int it) const { return xbuf + (it & 1) * C::XS; }
  __device__ void issue(int tile, int it) const {
    const TileCoord tc = coord(tile);
    issue_x_tile<CIN, C>(buffer(it), x + size_t(tc.n) * CIN * sh.H * sh.W, sh.H, sh.W, tc.oy0,
                         tc.ox0);
  }
  __device__ void start() const {
    if (int(blockIdx.x) < total) issue(blockIdx.x, 0);
  }
  __device__ bool has_next(int tile) const { return tile + int(gridDim.x) < total; }
  // Call only when every thread is done with buffer(it + 1) (the previous tile's).
  __device__ void prefetch_next(int tile, int it) const {
    if (has_next(tile)) issue(tile + gridDim.x, it + 1);
  }
  // This thread's copies of the current tile have landed (a barrier makes them everyone's).
  __device__ void wait_current(int tile) const {
    if (has_next(tile)) {
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

// The end of a tile's GroupNorm statistics. After chan[co] holds the tile's per-channel sums of s:
// gmean[co] = the mean of co's group over the tile (count elements per group).
template <int COUT>
__device__ void tile_group_means(const float* chan, float* gmean, int D, float count) {
  const int t = threadIdx.x;
  if (t < COUT) {
    const int g0 = (t / D) * D;
    float v = 0.f;
    for (int c = 0; c < D; ++c) v += chan[g0 + c];
    gmean[t] = v / count;
  }
}

// After chan[co] holds per-channel sums of squared deviations from gmean: (count, mean, M2) of
// each group of the tile, into tile_stats[(n * G + g) * tiles_per_image + tile_in_image].
template <int COUT>
__device__ void write_tile_group_stats(const float* chan, const float* gmean, int D, float count,
                                       const TileCoord& tc, int G, int tiles_per_image,
                                       float4* tile_stats) {
  const int t = threadIdx.x;
  if (t < COUT / D) {
    float m2 = 0.f;
    for (int c = 0; c < D; ++c) m2 += chan[t * D + c];
    tile_stats[(size_t(tc.n) * G + t) * tiles_per_image + tc.tile_in_image] =
        make_float4(count, gmean[t * D], m2, 0.f);
  }
}

// ---- forward: conv + bias/scale/sigmoid epilogue + per-tile GroupNorm statistics ----------------
template <int CIN, int COUT, int KS>
__global__ void __launch_bounds__(Cfg<CIN, COUT, KS>::THREADS, 2)
    forward_stats_kernel(const float* __restrict__ x, const float* __restrict__ w,
                         const float* __restrict__ conv_bias, const float* __restrict__ bias,
                         const float* __restrict__ scale, ConvBlockShape sh, float* __restrict__ z,
                         float4* __restrict__ tile_stats) {
  using C = Cfg<CIN, COUT, KS>;
  extern __shared__ __align__(16) float fsmem[];
  float* xbuf = fsmem;                       // two input tiles, [2][CIN][IH][PITCH]
  __shared__ __align__(16) float ws[C::WS];  // [ci][kh][kw][co]
  __shared__ float red[C::WARPS][C::CPT];
  __shared__ float chan[COUT];
  __shared__ float gmean[COUT];
  __shared__ float pbias[COUT], pscale[COUT], pcb[COUT];

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int tx = t % 16, ty = (t / 16) % C::TH, half = t / 128;
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

  // After each warp's lane 0 wrote red[warp][c] for its 16 channels: chan[co] = the CTA's total
  // (the 4 warps of co's channel half).
  auto channel_totals = [&] {
    __syncthreads();
    if (t < COUT) {
      const int h = t / C::CPT;
      float v = 0.f;
      for (int w4 = 0; w4 < 4; ++w4) v += red[h * 4 + w4][t % C::CPT];
      chan[t] = v;
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
              reinterpret_cast<const float4*>(ws + ((ci * KS + kh) * KS + kw) * COUT + half * C::CPT);
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
    const int oy = tc.oy0 + ty;
    const int oxb = tc.ox0 + tx * C::PX;
    bool valid[C::PX];
#pragma unroll
    for (int p = 0; p < C::PX; ++p) valid[p] = oy < sh.Ho && oxb + p < sh.Wo;
#pragma unroll
    for (int c = 0; c < C::CPT; ++c) {
      const int co = half * C::CPT + c;
      float* zrow = z + ((size_t(tc.n) * COUT + co) * sh.Ho + oy) * sh.Wo + oxb;
#pragma unroll
      for (int p = 0; p < C::PX; ++p) {
        const float zz = acc[c][p] + pcb[co];
        if (valid[p]) zrow[p] = zz;
        acc[c][p] = valid[p] ? sigmoidf((zz + pbias[co]) * pscale[co]) : 0.f;
      }
    }
    const int rows = min(C::TH, sh.Ho - tc.oy0), cols = min(C::TW, sh.Wo - tc.ox0);
    const float count = float(rows * cols * D);

    // Pass 1: per-channel sums -> group means of this tile.
#pragma unroll
    for (int c = 0; c < C::CPT; ++c) {
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < C::PX; ++p) v += acc[c][p];
      v = warp_sum(v);
      if (lane == 0) red[warp][c] = v;
    }
    channel_totals();
    tile_group_means<COUT>(chan, gmean, D, count);
    __syncthreads();
    // Pass 2: per-channel sums of squared deviations from the tile's group mean.
#pragma unroll
    for (int c = 0; c < C::CPT; ++c) {
      const float m = gmean[half * C::CPT + c];
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < C::PX; ++p) {
        const float d = acc[c][p] - m;
        v += valid[p] ? d * d : 0.f;
      }
      v = warp_sum(v);
      if (lane == 0) red[warp][c] = v;
    }
    channel_totals();
    write_tile_group_stats<COUT>(chan, gmean, D, count, tc, sh.G, tiles_per_image, tile_stats);
    __syncthreads();  // done with xs, red and gmean of this tile
  }
}

// ---- forward on TF32 tensor cores (when ops::conv::allow_tf32(), the default, like cuDNN) ----------
// The same tiles and epilogue as forward_stats_kernel; the convolution is an implicit GEMM on
// mma.sync.m16n8k8 (TF32 in, FP32 accumulate): M = the 64 pixels of one tile row per warp (4 m-tiles
// of 16), N = Cout (n-tiles of 8), K = Cin*k*k (k-steps of 8, zero-padded). A comes from the input
// tile in shared memory (each lane reads its four elements at precomputed offsets), B from the
// weights staged once per CTA as [k][co] (row pitch Cout + 8: conflict-free fragment loads).
template <int CIN, int COUT, int KS>
struct TcCfg {
  static constexpr int TH = 8, TW = 64, THREADS = 256, WARPS = 8;
  static constexpr int IH = TH + KS - 1, IW = TW + KS - 1, PITCH = (IW + 3) / 4 * 4;
  static constexpr int XS = CIN * IH * PITCH;
  static constexpr int K = CIN * KS * KS, KSTEPS = (K + 7) / 8, KPAD = KSTEPS * 8;
  static constexpr int NT = COUT / 8, MT = TW / 16;
  static constexpr int BPITCH = COUT + 8;
  static_assert(COUT % 8 == 0, "Cout must be a multiple of 8");
};

template <int CIN, int COUT, int KS>
__global__ void __launch_bounds__(256, 2)
    forward_stats_tf32_kernel(const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ conv_bias, const float* __restrict__ bias,
                              const float* __restrict__ scale, ConvBlockShape sh,
                              float* __restrict__ z, float4* __restrict__ tile_stats) {
  using C = TcCfg<CIN, COUT, KS>;
  extern __shared__ __align__(16) float fsmem[];
  float* xbuf = fsmem;                           // two input tiles
  uint32_t* bs = reinterpret_cast<uint32_t*>(fsmem + 2 * C::XS);  // [KPAD][BPITCH], tf32 bits
  __shared__ float red[C::WARPS][COUT];
  __shared__ float chan[COUT];
  __shared__ float gmean[COUT];
  __shared__ float pbias[COUT], pscale[COUT], pcb[COUT];

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
  // Shared-memory offset in the input tile of each k = (ci, kh, kw); -1 for the zero padding.
  __shared__ int koffs[C::KPAD];
  for (int k = t; k < C::KPAD; k += C::THREADS)
    koffs[k] = k < C::K ? ((k / (KS * KS)) * C::IH + (k / KS) % KS) * C::PITCH + k % KS : -1;
  const int D = COUT / sh.G;
  const int tiles_per_image = sh.tiles_y * sh.tiles_x;
  const int total = sh.N * tiles_per_image;

  // chan[co] = the CTA's total of csum for channel co (lane (g, q) holds channels n*8 + 2q + h):
  // over the 8 lanes that share q, then over the warps.
  auto channel_totals = [&](const float (&csum)[C::NT][2]) {
#pragma unroll
    for (int n = 0; n < C::NT; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float v = csum[n][h];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        if (g == 0) red[warp][n * 8 + 2 * q + h] = v;
      }
    __syncthreads();
    if (t < COUT) {
      float v = 0.f;
      for (int w2 = 0; w2 < C::WARPS; ++w2) v += red[w2][t];
      chan[t] = v;
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

    float acc[C::MT][C::NT][4];
#pragma unroll
    for (int m = 0; m < C::MT; ++m)
#pragma unroll
      for (int n = 0; n < C::NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.f;
    const float* row = xs + warp * C::PITCH + g;  // this warp's output row; pixel g of each m-tile
#pragma unroll
    for (int s = 0; s < C::KSTEPS; ++s) {
      const int k0 = koffs[s * 8 + q], k1 = koffs[s * 8 + q + 4];
      uint32_t b[C::NT][2];
#pragma unroll
      for (int n = 0; n < C::NT; ++n) {
        b[n][0] = bs[(s * 8 + q) * C::BPITCH + n * 8 + g];
        b[n][1] = bs[(s * 8 + q + 4) * C::BPITCH + n * 8 + g];
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
        for (int n = 0; n < C::NT; ++n) mma_tf32(acc[m][n], a, b[n][0], b[n][1]);
      }
    }

    // Epilogue: fragment element e of (m, n) is pixel m*16 + g + 8*(e/2), channel n*8 + 2q + e%2.
    const int oy = tc.oy0 + warp;
    float csum[C::NT][2];
#pragma unroll
    for (int n = 0; n < C::NT; ++n) csum[n][0] = csum[n][1] = 0.f;
#pragma unroll
    for (int m = 0; m < C::MT; ++m)
#pragma unroll
      for (int n = 0; n < C::NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int co = n * 8 + 2 * q + (e & 1);
          const int ox = tc.ox0 + m * 16 + g + 8 * (e >> 1);
          const bool valid = oy < sh.Ho && ox < sh.Wo;
          const float zz = acc[m][n][e] + pcb[co];
          if (valid) z[((size_t(tc.n) * COUT + co) * sh.Ho + oy) * sh.Wo + ox] = zz;
          const float sv = valid ? sigmoidf((zz + pbias[co]) * pscale[co]) : 0.f;
          acc[m][n][e] = sv;
          csum[n][e & 1] += sv;
        }
    const int rows = min(C::TH, sh.Ho - tc.oy0), cols = min(C::TW, sh.Wo - tc.ox0);
    const float count = float(rows * cols * D);
    // Pass 1: per-channel sums -> the tile's group means.
    channel_totals(csum);
    tile_group_means<COUT>(chan, gmean, D, count);
    __syncthreads();
    // Pass 2: squared deviations from the tile's group mean.
#pragma unroll
    for (int n = 0; n < C::NT; ++n) csum[n][0] = csum[n][1] = 0.f;
#pragma unroll
    for (int m = 0; m < C::MT; ++m)
#pragma unroll
      for (int n = 0; n < C::NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int co = n * 8 + 2 * q + (e & 1);
          const int ox = tc.ox0 + m * 16 + g + 8 * (e >> 1);
          const float d = acc[m][n][e] - gmean[co];
          csum[n][e & 1] += (oy < sh.Ho && ox < sh.Wo) ? d * d : 0.f;
        }
    channel_totals(csum);
    write_tile_group_stats<COUT>(chan, gmean, D, count, tc, sh.G, tiles_per_image, tile_stats);
    __syncthreads();  // done with xs, red and gmean of this tile
  }
}

// ---- backward: dz per tile, per-channel d bias / d scale, weight gradient -------------------------
template <int CIN, int COUT, int KS, bool LOSS>
__global__ void __launch_bounds__(Cfg<CIN, COUT, KS>::THREADS, 2)
    backward_kernel(const float* __restrict__ x, const float* __restrict__ z,
                    const float* __restrict__ other, const float* __restrict__ mean,
                    const float* __restrict__ rstd, const float* __restrict__ A,
                    const float* __restrict__ B, const float* __restrict__ bias,
                    const float* __restrict__ scale, const float* __restrict__ gamma,
                    const float* __restrict__ beta, const float* __restrict__ gout_ptr,
                    float dy_scale, ConvBlockShape sh, float* __restrict__ dz_out,
                    float* __restrict__ dw_part, float* __restrict__ dbias_part,
                    float* __restrict__ dscale_part) {
  using C = Cfg<CIN, COUT, KS>;
  extern __shared__ __align__(16) float smem[];
  float* xbuf = smem;                // two input tiles, [2][CIN][IH][PITCH]
  float* dzs = smem + 2 * C::XS;     // [COUT][PPAD]
  constexpr int CH_PER_WARP = COUT / C::WARPS;

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const float gout = gout_ptr ? *gout_ptr : 1.0f;
  const float gs = gout * dy_scale;  // dy = gs * (y - t) for the loss; gs * dy otherwise
  const int D = COUT / sh.G;
  const float inv_m = 1.0f / float(D * sh.Ho * sh.Wo);
  const int tiles_per_image = sh.tiles_y * sh.tiles_x;
  const int total = sh.N * tiles_per_image;

  // weight-gradient unit of this thread
  const int unit = t % C::WG_UNITS, pset = t / C::WG_UNITS;
  const bool wg_active = pset < C::PSETS;
  const int cog = unit % (COUT / 4), wci = unit / (COUT / 4);
  float wacc[4][KS][KS];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int a = 0; a < KS; ++a)
#pragma unroll
      for (int b = 0; b < KS; ++b) wacc[j][a][b] = 0.f;
  float acc_db[CH_PER_WARP], acc_ds[CH_PER_WARP];
#pragma unroll
  for (int k = 0; k < CH_PER_WARP; ++k) acc_db[k] = acc_ds[k] = 0.f;

  TilePipeline<CIN, C> pipe(x, sh, xbuf);
  pipe.start();
  int it = 0;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x, ++it) {
    const TileCoord tc = pipe.coord(tile);
    const float* xs = pipe.buffer(it);
    __syncthreads();  // the previous tile's weight-gradient readers are done with dzs and the buffer
    pipe.prefetch_next(tile, it);  // its copy overlaps this tile's dz phase

    // dz for every channel of the tile: warp -> channels, lanes -> pixels (coalesced rows).
#pragma unroll
    for (int k = 0; k < CH_PER_WARP; ++k) {
      const int co = warp + k * C::WARPS;
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
          if (p < C::TP) dzs[co * C::PPAD + p] = dzv;
        }
      }
    }
    pipe.wait_current(tile);
    __syncthreads();

    // dW[co][ci][kh][kw] += sum over the tile's pixels of dz[co][p] * x[ci][p + (kh, kw)]
    if (wg_active) {
      for (int rr = 0; rr < C::ROWS_PER_PSET; ++rr) {
        const int r_ = pset * C::ROWS_PER_PSET + rr;
        float win[KS][KS];
#pragma unroll
        for (int kh = 0; kh < KS; ++kh)
#pragma unroll
          for (int kw = 0; kw < KS - 1; ++kw) win[kh][kw] = xs[(wci * C::IH + r_ + kh) * C::PITCH + kw];
        const float* dzp = dzs + (cog * 4) * C::PPAD + r_ * C::TW;
#pragma unroll 4
        for (int c_ = 0; c_ < C::TW; ++c_) {
#pragma unroll
          for (int kh = 0; kh < KS; ++kh)
            win[kh][KS - 1] = xs[(wci * C::IH + r_ + kh) * C::PITCH + c_ + KS - 1];
          float d[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) d[j] = dzp[j * C::PPAD + c_];
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
  }

  // Per-CTA partials, in fixed order.
#pragma unroll
  for (int k = 0; k < CH_PER_WARP; ++k) {
    const float db = warp_sum(acc_db[k]), ds = warp_sum(acc_ds[k]);
    if (lane == 0) {
      dbias_part[size_t(blockIdx.x) * COUT + warp + k * C::WARPS] = db;
      dscale_part[size_t(blockIdx.x) * COUT + warp + k * C::WARPS] = ds;
    }
  }
  __syncthreads();
  float* red = smem;  // [PSETS][WS], reuses the tiles' space
  if (wg_active) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int kh = 0; kh < KS; ++kh)
#pragma unroll
        for (int kw = 0; kw < KS; ++kw)
          red[pset * C::WS + (((cog * 4 + j) * CIN + wci) * KS + kh) * KS + kw] = wacc[j][kh][kw];
  }
  __syncthreads();
  for (int i = t; i < C::WS; i += C::THREADS) {
    float v = 0.f;
    for (int p = 0; p < C::PSETS; ++p) v += red[p * C::WS + i];
    dw_part[size_t(blockIdx.x) * C::WS + i] = v;
  }
}
template <int CIN, int COUT, int KS>
int persistent_grid(const void* kernel, int threads, size_t smem, int total_tiles) {
  int per_sm = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  if (per_sm < 1) per_sm = 1;
  const int grid = per_sm * cuda::device_properties().multiProcessorCount;
  return grid < total_tiles ? grid : total_tiles;
}

template <int CIN, int COUT, int KS>
void forward_impl(const ConvBlockForwardArgs& a) {
  ConvBlockShape sh = a.shape;
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  cudaStream_t s = cuda::stream();
  if (a.tf32) {
    using C = TcCfg<CIN, COUT, KS>;
    const auto kernel = forward_stats_tf32_kernel<CIN, COUT, KS>;
    const size_t smem = size_t(2 * C::XS + C::KPAD * C::BPITCH) * sizeof(float);
    TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const int grid = persistent_grid<CIN, COUT, KS>(reinterpret_cast<const void*>(kernel), C::THREADS, smem, total);
    kernel<<<grid, C::THREADS, smem, s>>>(a.x, a.weight, a.conv_bias, a.bias, a.scale, sh, a.z,
                                          reinterpret_cast<float4*>(a.tile_stats));
  } else {
    using C = Cfg<CIN, COUT, KS>;
    const auto kernel = forward_stats_kernel<CIN, COUT, KS>;
    const size_t smem = size_t(2 * C::XS) * sizeof(float);
    TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const int grid = persistent_grid<CIN, COUT, KS>(reinterpret_cast<const void*>(kernel), C::THREADS, smem, total);
    kernel<<<grid, C::THREADS, smem, s>>>(a.x, a.weight, a.conv_bias, a.bias, a.scale, sh, a.z,
                                          reinterpret_cast<float4*>(a.tile_stats));
  }
  TG_CUDA_CHECK_LAUNCH();
  const int NG = sh.N * sh.G;
  conv_block_stats_finalize_cuda(a.tile_stats, NG, sh.tiles_y * sh.tiles_x, a.eps, a.mean, a.rstd);
}

template <int CIN, int COUT, int KS, bool LOSS>
void backward_impl(const ConvBlockBackwardArgs& a) {
  using C = Cfg<CIN, COUT, KS>;
  const ConvBlockShape sh = a.shape;
  const auto kernel = backward_kernel<CIN, COUT, KS, LOSS>;
  const size_t smem = size_t(2 * C::XS + COUT * C::PPAD) * sizeof(float);
  static_assert(C::PSETS * C::WS <= 2 * C::XS + COUT * C::PPAD, "reduction scratch must fit");
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  const int grid = conv_block_backward_grid(a.shape, COUT);
  cudaStream_t s = cuda::stream();
  kernel<<<grid, C::THREADS, smem, s>>>(a.x, a.z, a.other, a.mean, a.rstd, a.A, a.B, a.bias, a.scale,
                                        a.gamma, a.beta, a.gout, a.dy_scale, sh, a.dz, a.dw_part,
                                        a.dbias_part, a.dscale_part);
  TG_CUDA_CHECK_LAUNCH();
  (void)total;
  conv_block_backward_finalize_cuda(a, grid, C::WS);
}

}  // namespace

bool conv_block_supported(int cin, int cout, int k) {
  return (cin == 8 && cout == 32 && k == 3) || (cin == 3 && cout == 16 && k == 3);
}

ConvBlockShape conv_block_shape(int N, int H, int W, int k, int G) {
  ConvBlockShape sh{};
  sh.N = N;
  sh.H = H;
  sh.W = W;
  sh.Ho = H - k + 1;
  sh.Wo = W - k + 1;
  sh.G = G;
  sh.tiles_y = (sh.Ho + 7) / 8;
  sh.tiles_x = (sh.Wo + 63) / 64;
  return sh;
}

int conv_block_backward_grid(const ConvBlockShape& sh, int cout) {
  const int total = sh.N * sh.tiles_y * sh.tiles_x;
  // two CTAs per SM fit in shared memory (87 KB each for 8 -> 32 channels)
  const int grid = 2 * cuda::device_properties().multiProcessorCount;
  (void)cout;
  return grid < total ? grid : total;
}

void conv_block_forward_cuda(const ConvBlockForwardArgs& a) {
  if (a.cin == 8 && a.cout == 32 && a.k == 3) return forward_impl<8, 32, 3>(a);
  if (a.cin == 3 && a.cout == 16 && a.k == 3) return forward_impl<3, 16, 3>(a);
  TG_THROW("conv_block: no fused kernel for Cin ", a.cin, ", Cout ", a.cout, ", k ", a.k);
}

void conv_block_backward_cuda(const ConvBlockBackwardArgs& a) {
  const bool loss = a.loss_target;
  if (a.cin == 8 && a.cout == 32 && a.k == 3)
    return loss ? backward_impl<8, 32, 3, true>(a) : backward_impl<8, 32, 3, false>(a);
  if (a.cin == 3 && a.cout == 16 && a.k == 3)
    return loss ? backward_impl<3, 16, 3, true>(a) : backward_impl<3, 16, 3, false>(a);
  TG_THROW("conv_block: no fused kernel for Cin ", a.cin, ", Cout ", a.cout, ", k ", a.k);
}

}  // namespace tg::ops::detail
