# bias_scale_sigmoid backward: dscale sums du * z instead of du * (z + bias)
# file: ops/bias_scale_sigmoid.cpp
# tests: BiasScaleSigmoid*
s/a2 += double(du) \* double(zb);/a2 += double(du) * double(zp[i]);/
