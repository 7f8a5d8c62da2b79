// The model's whole block as one op: see ops/conv_block/conv_block.h.
#pragma once

#include "conv_block/conv_block.h"
