# SGD ignores dampening
# file: optim/sgd.cpp
# tests: *SGD*
s/h\.one_minus_dampening = 1\.0 - o\.dampening;/h.one_minus_dampening = 1.0;/
