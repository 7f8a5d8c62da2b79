// Umbrella header: everything a researcher needs from tapegrad.
#pragma once

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/tensor.h"
