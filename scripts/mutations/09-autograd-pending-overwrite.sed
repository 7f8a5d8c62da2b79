# autograd: a second gradient for a non-leaf replaces the first instead of adding to it
# file: core/autograd.cpp
# tests: Autograd*
s/it->second\.add_(g);/it->second = g;/
