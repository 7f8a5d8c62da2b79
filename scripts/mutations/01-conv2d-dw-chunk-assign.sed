# conv2d CPU weight gradient: = instead of += across the samples of a work chunk (wrong for N > 32)
# file: ops/conv2d.cpp
# tests: Conv2d.*:*ConvBlock*
s/p\.Cout, K)\.noalias() +=$/p.Cout, K).noalias() =/
