# synthetic dataset: the noise is drawn but not added
# file: io/synthetic.cpp
# tests: SyntheticData*
s/^    y\.add_(noise);$/    (void)noise;/
