# conv_block fused CPU backward: dz = du, missing the scale factor
# file: ops/conv_block/cpu.cpp
# tests: *ConvBlock*
s/dzp\[i\] = du\[i\] \* sc;/dzp[i] = du[i];/
