// Tile configurations of the direct kernels (ops/conv_block/direct_kernels.cuh), computed from
// (Cin, Cout, k). Plain C++ without includes: the host (launches, conv_block_direct_check) and the
// kernels (compiled at run time by NVRTC, with Cin, Cout, k as template arguments) share it.
#pragma once

namespace tg::ops::detail {

struct ConvBlockShape {
  int N, H, W, Ho, Wo, G, tiles_y, tiles_x;
};

/// Every direct kernel's tile: TH x TW output pixels of one sample, all Cout channels.
constexpr int kDirectTileH = 8, kDirectTileW = 64;

/// The input tile (Cin x IH x PITCH floats). nbuf = 2 tiles in shared memory when they fit (the
/// next tile's copy overlaps the current one's work), else 1 (the copy overlaps less).
struct DirectTile {
  int cin, ks, ih, iw, pitch, xs;
};
constexpr DirectTile direct_tile(int cin, int ks) {
  const int ih = kDirectTileH + ks - 1, iw = kDirectTileW + ks - 1, pitch = (iw + 3) / 4 * 4;
  return DirectTile{cin, ks, ih, iw, pitch, cin * ih * pitch};
}

constexpr int direct_largest_divisor_at_most(int n, int cap) {
  int d = cap < n ? cap : n;
  while (d > 1 && n % d != 0) --d;
  return d < 1 ? 1 : d;
}

/// Forward on FP32 FMAs. A thread computes 4 adjacent pixels x cpt channels; 128 threads (16
/// columns x 8 rows) cover the tile for one slice of cpt channels; `slices` slices run side by side
/// (threads = 128 * slices <= 512) and `passes` of them one after the other cover Cout. The weights
/// stay in shared memory.
struct FmaConfig {
  int cpt, slices, passes, threads, min_blocks, ws, dyn_floats, static_floats;
};
constexpr FmaConfig fma_config(int cin, int cout, int ks, int nbuf) {
  const int cpt = cout % 16 == 0 ? 16 : 8;
  const int slices = direct_largest_divisor_at_most(cout / cpt, 4);
  const int threads = 128 * slices;
  const int ws = cout * cin * ks * ks;
  FmaConfig c{};
  c.cpt = cpt;
  c.slices = slices;
  c.passes = cout / (cpt * slices);
  c.threads = threads;
  c.min_blocks = threads <= 256 ? 2 : 1;
  c.ws = ws;
  c.dyn_floats = nbuf * direct_tile(cin, ks).xs + ws;
  c.static_floats = (threads / 32) * cpt + 5 * cout;
  return c;
}

/// Forward on TF32 tensor cores (mma m16n8k8): 8 warps, one tile row each (4 m-tiles of 16
/// pixels); n-tiles of 8 channels, ntp of them per pass (<= 4: 64 accumulators per thread). The
/// weights stay in shared memory as [k][co], TF32.
struct Tf32Config {
  int k, ksteps, kpad, nt, ntp, passes, bpitch, unroll, dyn_floats, static_floats;
};
constexpr Tf32Config tf32_config(int cin, int cout, int ks, int nbuf) {
  const int k = cin * ks * ks, ksteps = (k + 7) / 8, nt = cout / 8;
  const int ntp = direct_largest_divisor_at_most(nt, 4);
  // B's row pitch: 8 or 24 (mod 32) makes the fragment loads of 4 rows x 8 columns conflict-free.
  const int bpitch = cout + (cout % 16 == 0 ? 8 : 16);
  Tf32Config c{};
  c.k = k;
  c.ksteps = ksteps;
  c.kpad = ksteps * 8;
  c.nt = nt;
  c.ntp = ntp;
  c.passes = nt / ntp;
  c.bpitch = bpitch;
  c.unroll = ksteps <= 16 ? ksteps : 2;
  c.dyn_floats = nbuf * direct_tile(cin, ks).xs + c.kpad * bpitch;
  c.static_floats = 8 * ntp * 8 + 5 * cout + c.kpad;  // red, per-channel values, k offsets
  return c;
}

/// Backward. Cout in `passes` slices of cs channels (dz of one slice in shared memory at a time).
/// dz phase: warps -> the slice's channels (cpw each), lanes -> pixels. Weight gradient: a unit is
/// (4 output channels, 1 input channel, kr kernel rows) with 4 * kr * k accumulators; per pass a
/// thread owns upp units, or, when a pass has fewer units than threads, one unit over a set of the
/// tile's rows (psets sets, summed in shared memory at the end).
struct BackwardConfig {
  int threads, warps, passes, cs, cpw, kr, upp, units_per_pass, psets, ws, ppad, dyn_floats;
  int static_floats;  ///< d bias / d scale per channel with several passes
  int accumulators;   ///< weight-gradient registers per thread
};
constexpr int kDirectMaxWgAccumulators = 72;
/// dz's row pitch in shared memory (floats per channel): 513 for the FMA weight gradient's reads
/// (a thread's 4 channels, lanes along pixels); 516 for the TF32 one's mma fragments (channel g,
/// pixel q of a lane: banks 4g + q, all 32 distinct).
constexpr int direct_dz_pitch(bool tf32_wg) {
  return tf32_wg ? kDirectTileH * kDirectTileW + 4 : kDirectTileH * kDirectTileW + 1;
}
constexpr BackwardConfig backward_config(int cin, int cout, int ks, int nbuf, int passes,
                                         bool tf32_wg = false) {
  const int s16 = cout / 16;
  const int threads = 128 * (s16 < 1 ? 1 : s16 > 4 ? 4 : s16);
  const int warps = threads / 32;
  const int cs = cout / passes;
  const int kr = ks <= 3 ? ks : 1;
  const int units = (cs / 4) * cin * (ks / kr);
  const int upp = (units + threads - 1) / threads;
  const int ws = cout * cin * ks * ks;
  const int ppad = direct_dz_pitch(tf32_wg);
  const int dyn = nbuf * direct_tile(cin, ks).xs + cs * ppad;
  int psets = 1;
  if (upp == 1) {
    psets = direct_largest_divisor_at_most(kDirectTileH, threads / units);
    while (psets > 1 && psets * ws > dyn)
      psets = direct_largest_divisor_at_most(kDirectTileH, psets - 1);
  }
  BackwardConfig c{};
  c.threads = threads;
  c.warps = warps;
  c.passes = passes;
  c.cs = cs;
  c.cpw = (cs + warps - 1) / warps;
  c.kr = kr;
  c.upp = upp;
  c.units_per_pass = units;
  c.psets = psets;
  c.ws = ws;
  c.ppad = ppad;
  c.dyn_floats = dyn;
  c.static_floats = passes > 1 ? 2 * cout : 2;
  c.accumulators = passes * upp * 4 * kr * ks;
  return c;
}

/// The backward's weight gradient on TF32 tensor cores (mma m16n8k8; used when TF32 is allowed and
/// this fits): per pass the slice's cs x nw gradient (nw = Cin*k*k) in 16 x 8 tiles, M = output
/// channels (mt m-tiles, the last one zero-padded), N = weights (ci, kh, kw) (nt n-tiles), K = the
/// tile's pixels, 8 per k-step along a row. The warps split the tile's 8 rows into wk groups and the
/// n-tiles into wn = warps / wk sets (n-tile j goes to set j % wn, ntw per warp); a warp keeps
/// passes * mt * ntw * 4 accumulators over all its tiles. With wk > 1 the groups' sums are added in
/// shared memory at the end (wk * ws floats, reusing the tiles' space), in fixed order.
/// Fewer than the FMA path's: they stay live through the dz phase, and two CTAs of 256 threads per
/// SM leave 128 registers a thread.
constexpr int kDirectMaxWgTf32Accumulators = 48;
struct WgTf32Config {
  bool ok;
  int mt, nw, nt, wk, wn, ntw, accumulators;
};
constexpr WgTf32Config wg_tf32_config(int cin, int cout, int ks, int nbuf, int passes) {
  const BackwardConfig b = backward_config(cin, cout, ks, nbuf, passes, true);
  WgTf32Config best{false, 0, 0, 0, 0, 0, 0, 0};
  const int mt = (b.cs + 15) / 16, nw = cin * ks * ks, nt = (nw + 7) / 8;
  int best_cost = 0;
  for (int wk = 1; wk <= kDirectTileH; wk *= 2) {
    if (b.warps % wk != 0) continue;
    const int wn = b.warps / wk, ntw = (nt + wn - 1) / wn;
    const int acc = passes * mt * ntw * 4;
    if (acc > kDirectMaxWgTf32Accumulators || (wk > 1 && wk * b.ws > b.dyn_floats)) continue;
    const int cost = ntw * (kDirectTileH / wk);  // k-steps x n-tiles a warp does per row of mt
    if (!best.ok || cost < best_cost) {
      best = WgTf32Config{true, mt, nw, nt, wk, wn, ntw, acc};
      best_cost = cost;
    }
  }
  return best;
}

/// What the host picks for (Cin, Cout, k) under a shared-memory limit (floats per block): the
/// buffers of each kernel and the backward's passes; 0 where nothing fits. bwd_tf32: with TF32
/// allowed, the backward's weight gradient runs on tensor cores (wg_tf32_config) at those buffers
/// and passes, where that fits; else on FP32 FMAs.
struct DirectChoice {
  int fwd_nbuf, bwd_nbuf, bwd_passes;
  bool bwd_tf32;
};
constexpr DirectChoice direct_choice(int cin, int cout, int ks, bool tf32, int limit_floats) {
  DirectChoice c{0, 0, 0, false};
  for (int nbuf = 2; nbuf >= 1 && c.fwd_nbuf == 0; --nbuf) {
    const int need = tf32 ? tf32_config(cin, cout, ks, nbuf).dyn_floats +
                                tf32_config(cin, cout, ks, nbuf).static_floats
                          : fma_config(cin, cout, ks, nbuf).dyn_floats +
                                fma_config(cin, cout, ks, nbuf).static_floats;
    if (need <= limit_floats) c.fwd_nbuf = nbuf;
  }
  // The fewest passes (even slices of a multiple of 4 channels), double-buffered if that fits.
  for (int passes = 1; passes <= cout / 4 && c.bwd_nbuf == 0; ++passes) {
    if (cout % passes != 0 || (cout / passes) % 4 != 0) continue;
    for (int nbuf = 2; nbuf >= 1 && c.bwd_nbuf == 0; --nbuf) {
      const BackwardConfig b = backward_config(cin, cout, ks, nbuf, passes);
      if (b.dyn_floats + b.static_floats <= limit_floats &&
          b.accumulators <= kDirectMaxWgAccumulators) {
        c.bwd_nbuf = nbuf;
        c.bwd_passes = passes;
      }
    }
  }
  if (tf32 && c.bwd_nbuf > 0) {
    const BackwardConfig b = backward_config(cin, cout, ks, c.bwd_nbuf, c.bwd_passes, true);
    c.bwd_tf32 = b.dyn_floats + b.static_floats <= limit_floats &&
                 wg_tf32_config(cin, cout, ks, c.bwd_nbuf, c.bwd_passes).ok;
  }
  return c;
}

}  // namespace tg::ops::detail
