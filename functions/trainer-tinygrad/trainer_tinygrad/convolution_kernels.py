"""The convolutions' kernels written by hand in C for the CPU: forward, input gradient and weight gradient.

Why by hand: tinygrad 0.14's CPU code generator scalarizes arithmetic and loads at most 4 floats at once, so clang
turns its convolution kernels into 4-lane FMAs at best, ~50 GFLOPS against a ceiling of ~227 for 16 lanes on one
core here; no kernel option, compiler flag or clang version widened them (BENCHMARKS.md, Profile: "the width of their
vectors"). No library that tinygrad can call does a convolution, so these kernels are written here, in plain C with
clang's vector extension (`ext_vector_type(16)`: one vector per 16 output channels, whatever the target CPU's
width), and handed to tinygrad as custom kernels (`Tensor.custom_kernel`, a kernel whose body is one C block): tinygrad
still schedules, compiles, caches and JIT-captures them like its own kernels.

The shape of each kernel (what stays in registers):

- forward `out[n][co][y][x] = sum over ci, ky, kx of x[n][ci][y+ky][x+kx] * w[co][ci][ky][kx]`: a tile is up to 32
  output channels (two vectors) by up to 12 output columns of one row, 24 accumulators; per weight vector pair, every
  input value of the row is broadcast once and multiplied into two accumulators. The weights are read as
  `[ci][ky][kx][co]` (output channels contiguous).
- input gradient: the forward kernel over the output gradient padded by `K-1-padding`, with the weights flipped and in
  and out channels swapped (the identity `convolution.py` documents).
- weight gradient `dw[co][ci][ky][kx] = sum over n, y, x of g[n][co][y][x] * x[n][ci][y+ky][x+kx]`: a tile is up to
  32 output channels by up to `24 / (K * 2)` kernel rows by all K kernel columns; the output gradient is read as
  `[n][y][x][co]`.

Every size is a constant of the generated C, so each shape compiles to its own kernel. They apply where tinygrad
renders C for the CPU (`supported`) and the channel counts they vectorize are multiples of 16; elsewhere
`convolution.py` uses tinygrad's own convolution. `TRAINER_CONV_KERNELS=0` turns them off (the benchmarks' baseline).
The outputs and gradients are tested against tinygrad's own autograd (tests/trainer/test_convolution.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from tinygrad import Device, Tensor, dtypes
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.uop.ops import KernelInfo, Ops, UOp

#: Set to 0 to use tinygrad's own convolution kernels everywhere.
ENV = "TRAINER_CONV_KERNELS"
LANES = 16
#: Accumulator vectors per tile: x86-64 with AVX-512 has 32 vector registers, and the weights and inputs need a few.
ACCUMULATORS = 24


def enabled() -> bool:
    """Whether the hand-written kernels are used where they apply (default yes; `TRAINER_CONV_KERNELS=0`: never)."""
    return os.environ.get(ENV, "1") != "0"


def supported(device: str | tuple[str, ...] | None) -> bool:
    """Whether tinygrad renders C for `device`'s kernels (the CPU's default renderer), so a C block can be one."""
    return enabled() and isinstance(device, str) and isinstance(Device[device].renderer, ClangRenderer)


@dataclass(frozen=True)
class Shape:
    """One convolution's sizes: `n` images of `c_in` x `h` x `w` (padding included), `c_out` kernels of `k` x `k`."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    k: int

    @property
    def oh(self) -> int:
        return self.h - self.k + 1

    @property
    def ow(self) -> int:
        return self.w - self.k + 1

    @property
    def vectors(self) -> int:
        """Vectors of output channels per tile: two where they come in pairs (32 channels), else one."""
        return 2 if self.c_out % (2 * LANES) == 0 else 1

    @property
    def name(self) -> str:
        return f"{self.n}_{self.c_in}_{self.c_out}_{self.h}_{self.w}_{self.k}"


def conv2d(x: Tensor, weight: Tensor, padding: int) -> Tensor:
    """`x.conv2d(weight, padding=padding)` (stride 1) through the hand-written kernels, differentiable in both.

    Needs float32, and output channels a multiple of 16; the input gradient falls back to tinygrad's convolution
    where the input channels are not.
    """
    x_padded = x.pad((padding,) * 4) if padding else x
    n, c_in, h, w = (int(d) for d in x_padded.shape)
    c_out, k = int(weight.shape[0]), int(weight.shape[2])
    assert c_out % LANES == 0, "output channels are a multiple of 16"
    shape = Shape(n, c_in, c_out, h, w, k)
    out = Tensor.empty(n, c_out, shape.oh, shape.ow, device=x.device)
    # The weights as [ci][ky][kx][co]: the output channels of one tap contiguous, loaded as vectors.
    taps = weight.permute(1, 2, 3, 0)
    return out.custom_kernel(x_padded, taps, fxn=_kernel(forward_source(shape)), grad_fxn=_backward)[0]


def _backward(grad: UOp, call: UOp) -> tuple[None, UOp, UOp]:
    """The gradients of the forward kernel's arguments (its output buffer, the padded input, the taps)."""
    _, x_padded, taps = (Tensor(u) for u in call.src[1:])
    g = Tensor(grad)
    n, c_in, h, w = (int(d) for d in x_padded.shape)
    k, c_out = int(taps.shape[1]), int(taps.shape[3])
    shape = Shape(n, c_in, c_out, h, w, k)
    grad_taps = Tensor.empty(c_in, k, k, c_out, device=g.device).custom_kernel(
        x_padded, g.permute(0, 2, 3, 1), fxn=_kernel(weight_gradient_source(shape))
    )[0]
    # The input gradient is a full convolution of g with the flipped kernel, in and out channels swapped.
    flipped = taps.permute(3, 1, 2, 0).flip((1, 2))  # [co][ky][kx][ci]
    g_padded = g.pad((k - 1,) * 4)
    if c_in % LANES == 0:
        transposed = Shape(n, c_out, c_in, shape.oh + 2 * (k - 1), shape.ow + 2 * (k - 1), k)
        grad_x = Tensor.empty(n, c_in, h, w, device=g.device).custom_kernel(
            g_padded, flipped, fxn=_kernel(forward_source(transposed))
        )[0]
    else:
        grad_x = g_padded.contiguous().conv2d(flipped.permute(3, 0, 1, 2))
    return None, grad_x.uop, grad_taps.uop


@cache
def _kernel(source: str) -> Callable[..., UOp]:
    """The custom kernel whose whole body is `source`, a C block reading its buffers as `OUT`, `A` and `B`."""
    body = source.replace("{", "{{").replace("}", "}}")
    for i, name in enumerate(("OUT", "A", "B")):
        body = body.replace(f"@{name}@", f"{{{i}}}")
    name = "conv_" + source.split("\n", 1)[0].removeprefix("/* ").removesuffix(" */")

    def fxn(out: UOp, a: UOp, b: UOp) -> UOp:
        for buf in (out, a, b):
            assert buf.dtype == dtypes.float32, "float32 buffers"
        pointers = tuple(buf.flatten()[0] for buf in (out, a, b))
        return UOp(Ops.CUSTOM, dtypes.void, src=pointers, arg=body).sink(arg=KernelInfo(name=name, opts_to_apply=()))

    return fxn


_VECTORS = """typedef float v16 __attribute__((ext_vector_type(16)));
typedef float v16u __attribute__((ext_vector_type(16), aligned(4)));
"""


def _split(length: int, most: int) -> tuple[int, int]:
    """Tiles of `length`: the width of the full tiles (at most `most`, as even as possible) and the last one's."""
    tiles = -(-length // most)
    width = -(-length // tiles)
    return width, length - (length // width) * width


def forward_source(shape: Shape) -> str:
    """C for `out[n][c_out][oh][ow]` from `x[n][c_in][h][w]` and taps `[c_in][k][k][c_out]` (see the module doc)."""
    c_in, c_out, h, w, k, oh, ow = shape.c_in, shape.c_out, shape.h, shape.w, shape.k, shape.oh, shape.ow
    vectors = shape.vectors
    width, rest = _split(ow, ACCUMULATORS // vectors)

    def tile(cols: int) -> str:
        return f"""{{
  v16 acc[{vectors}][{cols}];
  #pragma unroll
  for (int c = 0; c < {vectors}; c++)
    #pragma unroll
    for (int t = 0; t < {cols}; t++) acc[c][t] = (v16)0.0f;
  for (int ci = 0; ci < {c_in}; ci++)
    for (int ky = 0; ky < {k}; ky++) {{
      const float* xr = x + ((n * {c_in} + ci) * {h} + oy + ky) * {w} + ox0;
      const float* wr = wt + (ci * {k} + ky) * {k * c_out} + cb * {vectors * LANES};
      #pragma unroll
      for (int kx = 0; kx < {k}; kx++) {{
        v16 wv[{vectors}];
        #pragma unroll
        for (int c = 0; c < {vectors}; c++) wv[c] = *(const v16u*)(wr + kx * {c_out} + c * {LANES});
        #pragma unroll
        for (int t = 0; t < {cols}; t++) {{
          float xv = xr[kx + t];
          #pragma unroll
          for (int c = 0; c < {vectors}; c++) acc[c][t] += wv[c] * xv;
        }}
      }}
    }}
  #pragma unroll
  for (int c = 0; c < {vectors}; c++)
    #pragma unroll
    for (int t = 0; t < {cols}; t++)
      #pragma unroll
      for (int l = 0; l < {LANES}; l++)
        out[((n * {c_out} + cb * {vectors * LANES} + c * {LANES} + l) * {oh} + oy) * {ow} + ox0 + t] = acc[c][t][l];
}}
"""

    last = f"{{ const int ox0 = {ow - rest};\n{tile(rest)}}}\n" if rest else ""
    return f"""/* forward_{shape.name} */
{{
{_VECTORS}float* restrict out = @OUT@;
const float* restrict x = @A@;
const float* restrict wt = @B@;
for (int n = 0; n < {shape.n}; n++)
  for (int cb = 0; cb < {c_out // (vectors * LANES)}; cb++)
    for (int oy = 0; oy < {oh}; oy++) {{
      for (int ox0 = 0; ox0 + {width} <= {ow}; ox0 += {width})
{tile(width)}{last}    }}
}}
"""


def weight_gradient_source(shape: Shape) -> str:
    """C for the taps' gradient `[c_in][k][k][c_out]` from `x[n][c_in][h][w]` and `g[n][oh][ow][c_out]`."""
    c_in, c_out, h, w, k, oh, ow = shape.c_in, shape.c_out, shape.h, shape.w, shape.k, shape.oh, shape.ow
    vectors = shape.vectors
    rows, rest = _split(k, max(1, ACCUMULATORS // (k * vectors)))

    def tile(count: int) -> str:
        # The first image starts the sums (a zeroing loop could become a memset call, which a freestanding
        # kernel cannot make).
        return f"""{{
  v16 acc[{count}][{k}][{vectors}];
  float* dr = dw + (ci * {k} + ky0) * {k * c_out} + cb * {vectors * LANES};
  #pragma unroll
  for (int r = 0; r < {count}; r++)
    #pragma unroll
    for (int kx = 0; kx < {k}; kx++)
      #pragma unroll
      for (int c = 0; c < {vectors}; c++)
        acc[r][kx][c] = n == 0 ? (v16)0.0f : *(v16u*)(dr + (r * {k} + kx) * {c_out} + c * {LANES});
  for (int oy = 0; oy < {oh}; oy++) {{
    const float* xr = x + ((n * {c_in} + ci) * {h} + oy + ky0) * {w};
    const float* gr = g + (n * {oh} + oy) * {ow * c_out} + cb * {vectors * LANES};
    for (int ox = 0; ox < {ow}; ox++) {{
      v16 gv[{vectors}];
      #pragma unroll
      for (int c = 0; c < {vectors}; c++) gv[c] = *(const v16u*)(gr + ox * {c_out} + c * {LANES});
      #pragma unroll
      for (int r = 0; r < {count}; r++)
        #pragma unroll
        for (int kx = 0; kx < {k}; kx++) {{
          float xv = xr[r * {w} + ox + kx];
          #pragma unroll
          for (int c = 0; c < {vectors}; c++) acc[r][kx][c] += gv[c] * xv;
        }}
    }}
  }}
  #pragma unroll
  for (int r = 0; r < {count}; r++)
    #pragma unroll
    for (int kx = 0; kx < {k}; kx++)
      #pragma unroll
      for (int c = 0; c < {vectors}; c++) *(v16u*)(dr + (r * {k} + kx) * {c_out} + c * {LANES}) = acc[r][kx][c];
}}
"""

    last = f"{{ const int ky0 = {k - rest};\n{tile(rest)}}}\n" if rest else ""
    return f"""/* weight_gradient_{shape.name} */
{{
{_VECTORS}float* restrict dw = @OUT@;
const float* restrict x = @A@;
const float* restrict g = @B@;
for (int n = 0; n < {shape.n}; n++)
  for (int ci = 0; ci < {c_in}; ci++)
    for (int cb = 0; cb < {c_out // (vectors * LANES)}; cb++) {{
      for (int ky0 = 0; ky0 + {rows} <= {k}; ky0 += {rows})
{tile(rows)}{last}    }}
}}
"""
