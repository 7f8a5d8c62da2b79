# mse_loss CPU forward: sum instead of mean
# file: ops/mse_loss.cpp
# tests: MseLoss*
s/out\[0\] = T(acc \/ double(n));/out[0] = T(acc);/
