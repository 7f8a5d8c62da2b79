# SGD ignores weight_decay
# file: optim/sgd.cpp
# tests: *SGD*
s/h\.weight_decay = o\.weight_decay;/h.weight_decay = 0.0;/
