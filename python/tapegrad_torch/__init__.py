"""tapegrad's fused conv_block for PyTorch: ModelNew, a drop-in for the reference Model

    conv2d -> + bias -> * scale -> sigmoid -> GroupNorm      (KernelBench level 2, problem 21)

whose forward and backward run tapegrad's kernels (ops/conv_block.h) on PyTorch's tensors, in place
(non-owning views), on PyTorch's current CUDA stream and with PyTorch's caching allocator. Paths:
"fused CUDA" (float32 and the shapes conv_block_direct_check() accepts), "epilogue CUDA" (every other
float32 shape: cuDNN's convolution and fused kernels for the rest), "fused CPU" (float32 and float64,
every shape), otherwise tapegrad's composition of its unfused ops; ModelNew.path(x) says which, and
the composition warns once per shape.

Build: scripts/build-python.sh; then PYTHONPATH=python python3 -c 'import tapegrad_torch'.
"""
import math
import warnings

import torch
from torch import nn

from tapegrad_torch import _C

__all__ = ["ModelNew", "Model", "conv_block", "path", "built_with_cuda"]

built_with_cuda = _C.built_with_cuda
_BUILT_WITH_CUDA = _C.built_with_cuda()  # a constant, so that torch.compile traces _check whole
_NAMES = ("x", "conv.weight", "conv.bias", "bias", "scale", "group_norm.weight", "group_norm.bias")
_paths = {}  # (shapes, groups, dtype, device) -> the path, found once (the composition warns then)


class Model(nn.Module):
    """The reference (SPEC.md), in PyTorch's own ops."""

    def __init__(self, in_channels, out_channels, kernel_size, num_groups, bias_shape, scale_shape):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.scale = nn.Parameter(torch.randn(scale_shape))
        self.group_norm = nn.GroupNorm(num_groups, out_channels)

    def forward(self, x):
        x = self.conv(x)
        x = x + self.bias
        x = x * self.scale
        x = torch.sigmoid(x)
        x = self.group_norm(x)
        return x


def _check(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups):
    """Raises TypeError / ValueError naming what was expected and what was given."""
    tensors = (x, weight, conv_bias, bias, scale, gn_weight, gn_bias)
    for name, t in zip(_NAMES, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tapegrad_torch: expected {name} as a torch.Tensor, got {type(t).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"tapegrad_torch: expected x as float32 or float64, got {x.dtype}")
    cout = weight.shape[0] if weight.dim() == 4 else -1
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"tapegrad_torch: expected conv.weight of shape (Cout, Cin, k, k), got "
                         f"{tuple(weight.shape)}")
    if x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"tapegrad_torch: expected x of shape (N, {weight.shape[1]}, H, W), got "
                         f"{tuple(x.shape)}")
    k = weight.shape[2]
    if x.numel() == 0 or x.shape[2] < k or x.shape[3] < k:
        raise ValueError(f"tapegrad_torch: expected a non-empty x with H, W >= kernel size {k}, "
                         f"got {tuple(x.shape)}")
    expected = {"conv.bias": (cout,), "bias": (cout, 1, 1), "scale": (cout, 1, 1),
                "group_norm.weight": (cout,), "group_norm.bias": (cout,)}
    for name, t in zip(_NAMES[1:], tensors[1:]):
        if name in expected and tuple(t.shape) != expected[name]:
            raise ValueError(f"tapegrad_torch: expected {name} of shape {expected[name]}, got "
                             f"{tuple(t.shape)}")
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(f"tapegrad_torch: expected {name} as {x.dtype} on {x.device} like x, "
                            f"got {t.dtype} on {t.device}")
    if x.device.type == "cuda" and not _BUILT_WITH_CUDA:
        raise RuntimeError("tapegrad_torch was built without CUDA (PyTorch or tapegrad lacked it): "
                           f"cannot run on {x.device}; rebuild with scripts/build-python.sh")
    if x.device.type not in ("cpu", "cuda"):
        raise TypeError(f"tapegrad_torch: expected tensors on cpu or cuda, got {x.device}")
    if not isinstance(groups, int) or groups < 1 or cout % groups:
        raise ValueError(f"tapegrad_torch: expected num_groups dividing out_channels {cout}, got "
                         f"{groups}")


def _out_shape(x, weight):
    k = weight.shape[2]
    return (x.shape[0], weight.shape[0], x.shape[2] - k + 1, x.shape[3] - k + 1)


def _forward_impl(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups, eps, needs_grad):
    # TF32 for the convolution as PyTorch's own (cudnn.allow_tf32), read when the op runs.
    tf32 = bool(torch.backends.cudnn.allow_tf32) and x.is_cuda
    _check(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups)
    key = (tuple(x.shape), tuple(weight.shape), groups, x.dtype, x.device)
    if key not in _paths:
        _paths[key] = _C.path(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups)
        if _paths[key] == "composition":
            warnings.warn(f"tapegrad_torch: no fused kernel for x {tuple(x.shape)}, weight "
                          f"{tuple(weight.shape)}, {x.dtype} on {x.device}: running tapegrad's "
                          "composition of unfused ops", stacklevel=3)
    return _C.forward(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups, eps,
                      list(needs_grad), tf32)


def _grads(handle, dy, needs_grad):
    return [g if n else None for g, n in zip(_C.backward(handle, dy), needs_grad)]


if hasattr(torch, "library") and hasattr(torch.library, "custom_op"):
    # torch >= 2.4: custom ops, so that torch.compile keeps them in its graph.
    from typing import List, Tuple

    @torch.library.custom_op("tapegrad::conv_block", mutates_args=())
    def _op_forward(x: torch.Tensor, weight: torch.Tensor, conv_bias: torch.Tensor,
                    bias: torch.Tensor, scale: torch.Tensor, gn_weight: torch.Tensor,
                    gn_bias: torch.Tensor, groups: int, eps: float,
                    needs_grad: List[bool]) -> Tuple[torch.Tensor, torch.Tensor]:
        y, handle = _forward_impl(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups,
                                  eps, needs_grad)
        return y, handle

    @_op_forward.register_fake
    def _(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups, eps, needs_grad):
        _check(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups)
        return x.new_empty(_out_shape(x, weight)), torch.empty(0, dtype=torch.uint8)

    @torch.library.custom_op("tapegrad::conv_block_backward", mutates_args=())
    def _op_backward(handle: torch.Tensor, dy: torch.Tensor, x: torch.Tensor,
                     weight: torch.Tensor, conv_bias: torch.Tensor, bias: torch.Tensor,
                     scale: torch.Tensor, gn_weight: torch.Tensor, gn_bias: torch.Tensor,
                     needs_grad: List[bool]) -> List[torch.Tensor]:
        # Not-needed gradients come back as empty tensors (a custom op returns tensors only).
        return [g if g is not None else x.new_empty(0) for g in _grads(handle, dy, needs_grad)]

    @_op_backward.register_fake
    def _(handle, dy, x, weight, conv_bias, bias, scale, gn_weight, gn_bias, needs_grad):
        ins = (x, weight, conv_bias, bias, scale, gn_weight, gn_bias)
        return [torch.empty_like(t) if n else x.new_empty(0) for t, n in zip(ins, needs_grad)]

    def _setup_context(ctx, inputs, output):
        ctx.needs = inputs[9]
        ctx.save_for_backward(output[1], *inputs[:7])

    def _op_grad(ctx, dy, _dhandle):
        handle, *ins = ctx.saved_tensors
        grads = _op_backward(handle, dy, *ins, ctx.needs)
        return (*[g if n else None for g, n in zip(grads, ctx.needs)], None, None, None)

    _op_forward.register_autograd(_op_grad, setup_context=_setup_context)

    def _apply(*args):
        return _op_forward(*args)[0]
else:
    # Older torch (Debian's 1.13): a plain autograd.Function.
    class _ConvBlockFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups, eps,
                    needs_grad):
            y, handle = _forward_impl(x, weight, conv_bias, bias, scale, gn_weight, gn_bias,
                                      groups, eps, needs_grad)
            ctx.needs = needs_grad
            ctx.mark_non_differentiable(handle)
            ctx.save_for_backward(handle, x, weight, conv_bias, bias, scale, gn_weight, gn_bias)
            return y, handle

        @staticmethod
        def backward(ctx, dy, _dhandle):
            handle = ctx.saved_tensors[0]  # unpacking checks that no input changed in place
            return (*_grads(handle, dy, ctx.needs), None, None, None)

    def _apply(*args):
        if not any(args[9]):
            return _forward_impl(*args)[0]
        return _ConvBlockFunction.apply(*args)[0]


def conv_block(x, weight, conv_bias, bias, scale, gn_weight, gn_bias, groups, eps=1e-5):
    """group_norm(sigmoid((conv2d(x, weight, conv_bias) + bias) * scale)) on tapegrad's kernels;
    differentiable in every tensor argument. x is made contiguous (a copy) when it is not."""
    tensors = [x, weight, conv_bias, bias, scale, gn_weight, gn_bias]
    _check(*tensors, groups)
    tensors = [t.contiguous() for t in tensors]
    grad = torch.is_grad_enabled()
    needs_grad = [bool(grad and t.requires_grad) for t in tensors]
    return _apply(*tensors, groups, float(eps), needs_grad)


def path(x, model):
    """'fused CUDA', 'fused CPU' or 'composition': the path that model(x) takes."""
    p = model._block_tensors(x)
    _check(*p, model.group_norm.num_groups)
    return _C.path(*[t.contiguous() for t in p], model.group_norm.num_groups)


class ModelNew(nn.Module):
    """The reference Model's constructor, parameters (same order, initialisers and names) and
    function, with the whole block on tapegrad's fused kernels, forward and backward."""

    def __init__(self, in_channels, out_channels, kernel_size, num_groups, bias_shape, scale_shape):
        super().__init__()
        for name, shape in (("bias_shape", bias_shape), ("scale_shape", scale_shape)):
            if tuple(shape) != (out_channels, 1, 1):
                raise ValueError(f"ModelNew: expected {name} ({out_channels}, 1, 1), got "
                                 f"{tuple(shape)}")
        if not isinstance(kernel_size, int) and len(set(kernel_size)) != 1:
            raise ValueError(f"ModelNew: expected a square kernel, got {kernel_size}")
        if out_channels % num_groups:
            raise ValueError(f"ModelNew: expected num_groups dividing out_channels {out_channels},"
                             f" got {num_groups}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.scale = nn.Parameter(torch.randn(scale_shape))
        self.group_norm = nn.GroupNorm(num_groups, out_channels)

    def _block_tensors(self, x):
        return (x, self.conv.weight, self.conv.bias, self.bias, self.scale,
                self.group_norm.weight, self.group_norm.bias)

    def forward(self, x):
        return conv_block(*self._block_tensors(x), self.group_norm.num_groups,
                          self.group_norm.eps)

    def path(self, x):
        """'fused CUDA', 'fused CPU' or 'composition': which of tapegrad's paths forward(x) takes."""
        return path(x, self)
