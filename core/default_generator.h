// The process-wide default generator, for code that does not pass its own (tg::manual_seed(s)
// reseeds it, as torch.manual_seed). It is not synchronised: draw from it on one thread at a time,
// or give each thread its own tg::Generator.
#pragma once

#include <cstdint>

#include "rng.h"

namespace tg {

/// The default generator (seeded with 0 until manual_seed is called).
Generator& default_generator();
/// Reseeds the default generator.
void manual_seed(uint64_t seed);

}  // namespace tg
