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
constexpr BackwardConfig backward_config(int cin, int cout, int ks, int nbuf, int passes) {
  const int s16 = cout / 16;
  const int threads = 128 * (s16 < 1 ? 1 : s16 > 4 ? 4 : s16);
  const int warps = threads / 32;
  const int cs = cout / passes;
  const int kr = ks <= 3 ? ks : 1;
  const int units = (cs / 4) * cin * (ks / kr);
  const int upp = (units + threads - 1) / threads;
  const int ws = cout * cin * ks * ks;
  const int ppad = kDirectTileH * kDirectTileW + 1;
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

/// What the host picks for (Cin, Cout, k) under a shared-memory limit (floats per block): the
/// buffers of each kernel and the backward's passes; 0 where nothing fits.
struct DirectChoice {
  int fwd_nbuf, bwd_nbuf, bwd_passes;
};
constexpr DirectChoice direct_choice(int cin, int cout, int ks, bool tf32, int limit_floats) {
  DirectChoice c{0, 0, 0};
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
  return c;
}

}  // namespace tg::ops::detail
