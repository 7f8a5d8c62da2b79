# DatasetReader shuffle: Sattolo's algorithm (never leaves a sample in place) instead of Fisher-Yates
# file: io/dataset.cpp
# tests: DataParallelShards*:*ReaderTest*
s/std::swap(order\[i - 1\], order\[size_t(gen\.below(i))\]);/std::swap(order[i - 1], order[size_t(gen.below(i - 1))]);/
