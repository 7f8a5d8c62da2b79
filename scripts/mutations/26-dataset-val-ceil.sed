# DatasetReader: the validation set is ceil(N * f) samples, not floor
# file: io/dataset.cpp
# tests: *ReaderTest*:Dataset*
s/m\.n_val = int64_t(std::floor(double(m\.n) \* o\.val_fraction));/m.n_val = int64_t(std::ceil(double(m.n) * o.val_fraction));/
