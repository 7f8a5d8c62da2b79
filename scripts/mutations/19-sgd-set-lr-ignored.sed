# SGD::set_lr checks the value but does not use it
# file: optim/sgd.cpp
# tests: *SGD*
s/^  options_\.lr = lr;$/  (void)lr;/
