# conv2d CPU bias gradient: = instead of += across the samples of a work chunk (wrong for N > 32)
# file: ops/conv2d.cpp
# tests: Conv2d.*:*ConvBlock*
s/(db_part\.data() + c \* p\.Cout, p\.Cout) +=$/(db_part.data() + c * p.Cout, p.Cout) =/
