"""`Conv2d`: tinygrad's `nn.Conv2d` (same weights, same state-dict names, same values) with a backward pass written
as two more forward convolutions, which tinygrad's CPU code generator compiles far better than its own.

On the CPU, where the output channels are a multiple of 16 (every convolution of both convnets), all three run as
the hand-written C kernels of `convolution_kernels.py` instead (a convnet step 3.4-3.7x faster again: BENCHMARKS.md,
section 1d); what follows is the path for every other device and shape.

Why: in tinygrad 0.14 autograd differentiates a convolution through its sliding-window view, and the kernels that
come out are slow here. For the convnet's second convolution (32 -> 32 channels, 5x5, batch 128) the input gradient
ran over a 6x6 window at 16-22 GFLOPS and the weight gradient at 23, 72% of a training step (BENCHMARKS.md,
Profile). The same two gradients written as convolutions (the textbook identities for stride 1):

    d input  = conv(pad(d out, K-1-p), flip(W) with in/out channels swapped)
    d weight = conv(input padded by p, with batch and channels swapped, d out as the kernel), channels swapped back

compile to the kernel shape tinygrad already does well (the forward convolution). tinygrad's `function` with a
`grad_fxn` is the hook for a hand-written gradient; the forward is tinygrad's own `conv2d`, unchanged.

The layer's output is also realized once (`contiguous`): BatchNorm reduces it twice (mean, then variance), and
without a buffer tinygrad recomputed the whole convolution for each reduction.

Only what the models use: stride 1, no dilation, one group, square kernels, `padding` an int. The gradients are tested
against tinygrad's own autograd (tests/trainer/test_convolution.py). tinygrad is pinned (pyproject): `function` is an
API tinygrad marks alpha.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tinygrad import Tensor, dtypes, nn
from tinygrad.function import function
from tinygrad.uop.ops import UOp

from trainer_tinygrad import convolution_kernels


class Conv2d(nn.Conv2d):
    """A stride-1 `nn.Conv2d` whose backward pass is two forward convolutions (see the module's docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        if not 0 <= padding < kernel_size:
            raise ValueError(f"padding {padding} for a {kernel_size}x{kernel_size} kernel: 0 <= padding < kernel size")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.pad = padding

    def kernels(self, device: str) -> str:
        """What computes this layer for float32 inputs on `device`: "c" (`convolution_kernels.py`) or "tinygrad"."""
        return "c" if convolution_kernels.applies(device, dtypes.float32, self.weight) else "tinygrad"

    def __call__(self, x: Tensor) -> Tensor:
        if convolution_kernels.applies(x.device, x.dtype, self.weight):
            return convolution_kernels.conv2d(x, self.weight, self.bias, self.pad)
        out = _convolution(self.pad)(x, self.weight)
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1, 1, 1)
        return out.contiguous()


@cache
def _convolution(padding: int) -> Any:
    """tinygrad's conv2d over (x, weight) with `padding`, differentiated by `backward` (one function per padding)."""

    def backward(grad: UOp, call: UOp) -> tuple[UOp, UOp]:
        x, weight = Tensor(call.src[1]), Tensor(call.src[2])
        assert x.ndim == 4 and weight.ndim == 4 and x.shape[1] == weight.shape[1], "arguments in order (x, weight)"
        g = Tensor(grad).contiguous()  # read by both gradients: computed once
        k = int(weight.shape[2])
        edge = k - 1 - padding
        # The padded gradient is a buffer, so the convolution reads plain memory, not a window with bounds checks
        # (that was 2.5x slower here).
        grad_x = g.pad((edge, edge, edge, edge)).contiguous().conv2d(weight.flip((2, 3)).permute(1, 0, 2, 3))
        x_padded = x.pad((padding,) * 4) if padding else x
        grad_w = x_padded.permute(1, 0, 2, 3).conv2d(g.permute(1, 0, 2, 3)).permute(1, 0, 2, 3)
        return grad_x.uop, grad_w.uop

    @function(grad_fxn=backward)
    def forward(x: Tensor, weight: Tensor) -> Tensor:
        return x.conv2d(weight, padding=padding)

    return forward
