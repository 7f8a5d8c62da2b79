# conv2d CPU backward: each work chunk handles only its first sample (wrong for N > 32)
# file: ops/conv2d.cpp
# tests: Conv2d.*:*ConvBlock*
s/n_end = p\.N \* (c + 1) \/ chunks;/n_end = n_begin + 1;/
