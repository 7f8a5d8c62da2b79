# conv2d CPU input gradient: col2im overwrites instead of summing overlapping windows
# file: ops/conv2d.cpp
# tests: Conv2d.*:*ConvBlock*
s/out\[ow \* p\.stride + shift\] += in\[ow\];/out[ow * p.stride + shift] = in[ow];/
