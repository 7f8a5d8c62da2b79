# autograd::backward: the same root given twice keeps only the last gradient
# file: core/autograd.cpp
# tests: Autograd*
s/^    accumulate(slot, g);$/    slot = g;/
