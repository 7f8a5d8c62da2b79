# Tensor::add_ ignores alpha
# file: core/tensor.cpp
# tests: Tensor*:Autograd*
s/y\[i\] += T(alpha) \* x\[i\];/y[i] += x[i];/
