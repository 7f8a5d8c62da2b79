// Umbrella header: everything a researcher needs from tapegrad.
#pragma once

#include "core/autograd.h"
#include "core/cuda_context.h"
#include "core/gradcheck.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "nn/model.h"
#include "ops/bias_scale_sigmoid.h"
#include "ops/conv2d.h"
#include "ops/conv_block.h"
#include "ops/elementwise.h"
#include "ops/group_norm.h"
#include "ops/mse_loss.h"
#include "optim/sgd.h"
