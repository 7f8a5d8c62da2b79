# mse_loss backward: (y - t) / n instead of 2 (y - t) / n
# file: ops/mse_loss.cpp
# tests: MseLoss*
s/const T s = T(2\.0 \* double(g\[0\]) \/ double(n));/const T s = T(double(g[0]) \/ double(n));/
