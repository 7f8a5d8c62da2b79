# conv_block fused CPU forward: rstd without eps
# file: ops/conv_block/cpu.cpp
# tests: *ConvBlock*
s/std::sqrt(m2 \/ double(D \* HxW) + eps)/std::sqrt(m2 \/ double(D * HxW))/
