# sigmoid backward: dy * y instead of dy * y * (1 - y)
# file: ops/elementwise.cpp
# tests: Elementwise*
s/dx\[i\] = dy\[i\] \* y\[i\] \* (T(1) - y\[i\]);/dx[i] = dy[i] * y[i];/
