from tapegrad_torch import _C
built_with_cuda = _C.built_with_cuda
