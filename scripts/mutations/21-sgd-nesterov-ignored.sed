# SGD ignores nesterov
# file: optim/sgd.cpp
# tests: *SGD*
s/h\.nesterov = o\.nesterov;/h.nesterov = false;/
