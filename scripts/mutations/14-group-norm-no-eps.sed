# group_norm CPU forward: rstd without eps
# file: ops/group_norm.cpp
# tests: GroupNorm*
s/std::sqrt(sq \/ double(M) + p\.eps)/std::sqrt(sq \/ double(M))/
