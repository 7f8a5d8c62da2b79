"""The reference Model (SPEC.md; KernelBench level 2, problem 21) in PyTorch's own ops, the one
definition that the benchmarks and the parity tests compare tapegrad against:

    conv2d -> + bias -> * scale -> sigmoid -> GroupNorm

Import it with the bench folder on the path (it needs only torch):

    sys.path.insert(0, os.path.join(REPO, "bench"))
    from reference_model import Model
"""
import torch
from torch import nn


class Model(nn.Module):
    """Parameters in PyTorch's named_parameters() order: conv.weight, conv.bias, bias, scale,
    group_norm.weight, group_norm.bias; bias_shape and scale_shape are (out_channels, 1, 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, num_groups, bias_shape, scale_shape):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.scale = nn.Parameter(torch.randn(scale_shape))
        self.group_norm = nn.GroupNorm(num_groups, out_channels)

    def tail(self, z):
        """Everything after the convolution: group_norm(sigmoid((z + bias) * scale))."""
        return self.group_norm(torch.sigmoid((z + self.bias) * self.scale))

    def forward(self, x):
        return self.tail(self.conv(x))
