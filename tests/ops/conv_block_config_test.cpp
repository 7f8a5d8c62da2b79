// The direct kernels' tile configurations (ops/conv_block/direct_config.h, plain C++): checked on
// the CPU for every (Cin, Cout, k) of the coverage, so that a configuration the GPU would run out of
// registers or shared memory on, or that leaves a weight out, fails here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ops/conv_block/direct_config.h"

namespace tg {
namespace {

using namespace ops::detail;

constexpr int kH200SharedFloats = 232448 / 4;

std::string shape_str(int cin, int cout, int k) {
  return std::to_string(cin) + " -> " + std::to_string(cout) + ", k " + std::to_string(k);
}

// The TF32 weight gradient's partition, where TF32 is allowed: the warps split into row groups and
// n-tile sets, every n-tile has a set, the registers and the cross-group reduction fit, and the
// kernel's shared memory with the TF32 dz pitch still fits.
TEST(ConvBlockConfig, Tf32WeightGradientPartitionFitsEveryShapeItIsChosenFor) {
  int chosen = 0, total = 0;
  for (int cin = 1; cin <= 64; ++cin)
    for (int cout = 8; cout <= 128; cout += 8)
      for (int k = 1; k <= 7; ++k) {
        const DirectChoice c = direct_choice(cin, cout, k, true, kH200SharedFloats);
        if (c.fwd_nbuf == 0 || c.bwd_nbuf == 0) continue;
        ++total;
        // Strict float32 never takes it.
        EXPECT_FALSE(direct_choice(cin, cout, k, false, kH200SharedFloats).bwd_tf32);
        if (!c.bwd_tf32) continue;
        ++chosen;
        SCOPED_TRACE(shape_str(cin, cout, k));
        const BackwardConfig b = backward_config(cin, cout, k, c.bwd_nbuf, c.bwd_passes, true);
        const WgTf32Config w = wg_tf32_config(cin, cout, k, c.bwd_nbuf, c.bwd_passes);
        ASSERT_TRUE(w.ok);
        EXPECT_EQ(w.wk * w.wn, b.warps);
        EXPECT_EQ(kDirectTileH % w.wk, 0);
        EXPECT_EQ(w.nw, cin * k * k);
        EXPECT_GE(w.ntw * w.wn, w.nt);
        EXPECT_GE(w.nt * 8, w.nw);
        EXPECT_GE(w.mt * 16, b.cs);
        EXPECT_LE(w.accumulators, kDirectMaxWgTf32Accumulators);
        EXPECT_EQ(w.accumulators, c.bwd_passes * w.mt * w.ntw * 4);
        if (w.wk > 1) EXPECT_LE(w.wk * b.ws, b.dyn_floats);
        EXPECT_LE(b.dyn_floats + b.static_floats, kH200SharedFloats);
        EXPECT_EQ(b.ppad % 32, 4);  // conflict-free A fragments
      }
  // Most of the coverage (3,609 shapes at 227 KB) runs its weight gradient on tensor cores; the
  // rest (many weights per thread) keeps FP32 FMAs.
  EXPECT_GT(chosen, total * 3 / 4) << chosen << " of " << total;
  EXPECT_TRUE(direct_choice(8, 32, 3, true, kH200SharedFloats).bwd_tf32);  // the reference
  EXPECT_TRUE(direct_choice(3, 16, 3, true, kH200SharedFloats).bwd_tf32);  // the small size
}

// The kernel's indexing of the TF32 weight gradient (ops/conv_block/direct_kernels.cuh,
// backward_kernel with TF32W), replayed on the CPU for one full tile: each lane's A fragment (dz in
// shared memory at the TF32 pitch) and B fragments (the input tile at its per-n-tile offsets), an
// exact m16n8k8 product in the PTX fragment layout, and the write-out of each accumulator to its
// weight. Every weight must be written exactly once per row group and their sum must equal
// sum_p dz[co][p] * x[ci][p + (kh, kw)].
TEST(ConvBlockConfig, Tf32WeightGradientIndexingReplayedOnTheCpu) {
  const int shapes[][3] = {{8, 32, 3}, {3, 16, 3}, {8, 64, 3},  {16, 32, 3}, {4, 32, 5},
                           {32, 64, 3}, {3, 32, 7}, {8, 16, 1}, {5, 24, 2},  {1, 8, 1},
                           {9, 40, 4},  {2, 96, 5}, {7, 56, 6}, {64, 8, 1}};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  for (const auto& sh : shapes) {
    const int CIN = sh[0], COUT = sh[1], KS = sh[2];
    SCOPED_TRACE(shape_str(CIN, COUT, KS));
    const DirectChoice ch = direct_choice(CIN, COUT, KS, true, kH200SharedFloats);
    ASSERT_TRUE(ch.bwd_tf32);
    const int PASSES = ch.bwd_passes;
    const BackwardConfig b = backward_config(CIN, COUT, KS, ch.bwd_nbuf, PASSES, true);
    const WgTf32Config wg = wg_tf32_config(CIN, COUT, KS, ch.bwd_nbuf, PASSES);
    const DirectTile dt = direct_tile(CIN, KS);
    const int CS = b.cs, PPAD = b.ppad, PITCH = dt.pitch, IH = dt.ih;
    const int TH = kDirectTileH, TW = kDirectTileW, NW = wg.nw, WK = wg.wk, WN = wg.wn;
    const int MT = wg.mt, NTW = wg.ntw;
    std::vector<float> xs(size_t(CIN) * IH * PITCH);
    for (float& v : xs) v = U(rng);
    std::vector<double> want(size_t(COUT) * NW), red(size_t(WK) * COUT * NW, 0.0);
    std::vector<int> writes(size_t(WK) * COUT * NW, 0);
    for (int ps = 0; ps < PASSES; ++ps) {
      std::vector<float> dzs(size_t(CS) * PPAD, 0.f);
      for (int cl = 0; cl < CS; ++cl)
        for (int p = 0; p < TH * TW; ++p) dzs[size_t(cl) * PPAD + p] = U(rng);
      for (int cl = 0; cl < CS; ++cl)
        for (int n = 0; n < NW; ++n) {
          const int ci = n / (KS * KS), kh = (n / KS) % KS, kw = n % KS;
          double v = 0;
          for (int r = 0; r < TH; ++r)
            for (int c = 0; c < TW; ++c)
              v += double(dzs[size_t(cl) * PPAD + r * TW + c]) *
                   xs[size_t(ci * IH + r + kh) * PITCH + c + kw];
          want[size_t(ps * CS + cl) * NW + n] = v;
        }
      for (int warp = 0; warp < b.warps; ++warp) {
        const int wrow = warp / WN, wset = warp % WN;
        std::vector<double> acc(size_t(32) * MT * NTW * 4, 0.0);  // [lane][m][j][e]
        auto at = [&](int lane, int m, int j, int e) -> double& {
          return acc[((size_t(lane) * MT + m) * NTW + j) * 4 + e];
        };
        for (int rr = 0; rr < TH / WK; ++rr) {
          const int r_ = wrow * (TH / WK) + rr;
          for (int st = 0; st < TW / 8; ++st) {
            // Fragments as each lane loads them.
            std::vector<float> a(size_t(32) * MT * 4), bf(size_t(32) * NTW * 2);
            for (int lane = 0; lane < 32; ++lane) {
              const int mg = lane >> 2, mq = lane & 3, p0 = st * 8 + mq, p1 = p0 + 4;
              const float* dzr = dzs.data() + r_ * TW;
              for (int m = 0; m < MT; ++m) {
                const int c0 = m * 16 + mg, c1 = c0 + 8;
                float* f = &a[(size_t(lane) * MT + m) * 4];
                f[0] = c0 < CS ? dzr[c0 * PPAD + p0] : 0.f;
                f[1] = c1 < CS ? dzr[c1 * PPAD + p0] : 0.f;
                f[2] = c0 < CS ? dzr[c0 * PPAD + p1] : 0.f;
                f[3] = c1 < CS ? dzr[c1 * PPAD + p1] : 0.f;
              }
              for (int j = 0; j < NTW; ++j) {
                const int n = (wset + j * WN) * 8 + mg;
                const int off =
                    n < NW ? ((n / (KS * KS)) * IH + (n / KS) % KS) * PITCH + n % KS : -1;
                const float* xr = xs.data() + r_ * PITCH;
                bf[(size_t(lane) * NTW + j) * 2] = off >= 0 ? xr[off + p0] : 0.f;
                bf[(size_t(lane) * NTW + j) * 2 + 1] = off >= 0 ? xr[off + p1] : 0.f;
              }
            }
            // D += A B per (m, j), in the PTX layout of mma.m16n8k8 (row.col, TF32).
            for (int m = 0; m < MT; ++m)
              for (int j = 0; j < NTW; ++j) {
                double A[16][8], B[8][8];
                for (int lane = 0; lane < 32; ++lane) {
                  const int g = lane >> 2, q = lane & 3;
                  const float* f = &a[(size_t(lane) * MT + m) * 4];
                  A[g][q] = f[0];
                  A[g + 8][q] = f[1];
                  A[g][q + 4] = f[2];
                  A[g + 8][q + 4] = f[3];
                  B[q][g] = bf[(size_t(lane) * NTW + j) * 2];
                  B[q + 4][g] = bf[(size_t(lane) * NTW + j) * 2 + 1];
                }
                for (int lane = 0; lane < 32; ++lane) {
                  const int g = lane >> 2, q = lane & 3;
                  for (int e = 0; e < 4; ++e) {
                    const int row = g + 8 * (e >> 1), col = 2 * q + (e & 1);
                    for (int kk = 0; kk < 8; ++kk) at(lane, m, j, e) += A[row][kk] * B[kk][col];
                  }
                }
              }
          }
        }
        // The write-out.
        for (int lane = 0; lane < 32; ++lane) {
          const int mg = lane >> 2, mq = lane & 3;
          for (int m = 0; m < MT; ++m)
            for (int j = 0; j < NTW; ++j)
              for (int e = 0; e < 4; ++e) {
                const int co = m * 16 + mg + 8 * (e >> 1);
                const int n = (wset + j * WN) * 8 + 2 * mq + (e & 1);
                if (co >= CS || n >= NW || wset + j * WN >= wg.nt) continue;
                const size_t i = size_t(wrow) * COUT * NW + size_t(ps * CS + co) * NW + n;
                red[i] = at(lane, m, j, e);
                ++writes[i];
              }
        }
      }
    }
    int bad_writes = 0;
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      double v = 0;
      for (int r = 0; r < WK; ++r) {
        v += red[size_t(r) * COUT * NW + i];
        bad_writes += writes[size_t(r) * COUT * NW + i] != 1;
      }
      worst = std::fmax(worst, std::fabs(v - want[i]) / (1 + std::fabs(want[i])));
    }
    EXPECT_EQ(bad_writes, 0);
    EXPECT_LT(worst, 1e-9);
  }
}

}  // namespace
}  // namespace tg
