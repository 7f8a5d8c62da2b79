// A seeded, reproducible random generator (64-bit Mersenne twister). Normal draws use our own
// Box-Muller transform, so the same seed gives the same numbers with every standard library.
#pragma once

#include <cstdint>
#include <random>

namespace tg {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : engine_(seed) {}
  void seed(uint64_t s) { engine_.seed(s); has_spare_ = false; }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  double normal();
  uint64_t next_u64() { return engine_(); }
  /// Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n ? next_u64() % n : 0; }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace tg
