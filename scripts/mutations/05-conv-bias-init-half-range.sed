# conv.bias initialised U(0, b) instead of U(-b, b)
# file: nn/layers.cpp
# tests: Model.*:Module.*
s/Tensor::rand({out_channels}, gen, dtype, Device::CPU, -bound, bound)/Tensor::rand({out_channels}, gen, dtype, Device::CPU, 0.0, bound)/
