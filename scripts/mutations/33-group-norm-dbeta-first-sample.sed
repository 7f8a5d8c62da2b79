# group_norm CPU backward: dbeta sums only over n = 0
# file: ops/group_norm.cpp
# tests: GroupNorm*
s/^        a2 += sdy\[n \* C + c\];$/        a2 += n == 0 ? sdy[c] : 0.0;/
