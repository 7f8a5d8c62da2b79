# Model::block_params passes scale as bias and bias as scale
# file: nn/model.cpp
# tests: Model*
s/conv->bias,        bias, scale,/conv->bias,        scale, bias,/
