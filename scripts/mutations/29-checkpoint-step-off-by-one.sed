# checkpoint: the saved step is one more than the optimizer's
# file: io/checkpoint.cpp
# tests: Checkpoint*
s/g\.set_attr_int("step", state->step);/g.set_attr_int("step", state->step + 1);/
