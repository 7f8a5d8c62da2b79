# conv_block fused CPU backward: dbias keeps only the last sample's plane sum
# file: ops/conv_block/cpu.cpp
# tests: *ConvBlock*
s/^      db += pdb\[n \* C + c\];$/      db = pdb[n * C + c];/
