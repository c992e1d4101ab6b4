"""The convolutions' kernels written by hand in C for the CPU: forward, input gradient and weight gradient.

Why by hand: tinygrad 0.14's CPU code generator scalarizes arithmetic and loads at most 4 floats at once, so clang
turns its convolution kernels into 4-lane FMAs at best, ~50 GFLOPS against a ceiling of ~227 for 16 lanes on one
core here; no kernel option, compiler flag or clang version widened them (BENCHMARKS.md, Profile: "the width of their
vectors"). No library that tinygrad can call does a convolution, so these kernels are written here, in plain C with
clang's vector extension (`ext_vector_type`, a vector of output channels), and handed to tinygrad as custom kernels
(`Tensor.custom_kernel`, a kernel whose body is one C block): tinygrad still schedules, compiles, caches and
JIT-captures them like its own kernels. Each kernel holds one branch per vector width (`TARGETS`: 16 floats with
AVX-512, 8 with AVX, 4 otherwise), and the C preprocessor keeps the one for the CPU tinygrad compiles for.

The shape of each kernel (what stays in registers; figures for AVX-512):

- forward `out[n][co][y][x] = b[co] + sum over ci, ky, kx of x[n][ci][y+ky][x+kx] * w[co][ci][ky][kx]`: a tile is
  up to 32 output channels (two vectors) by up to 12 output columns of one row, 24 accumulators started at the bias;
  per weight vector pair, every input value of the row is broadcast once and multiplied into two accumulators. The
  weights are read as `[ci][ky][kx][co]` (output channels contiguous). The bias is added here rather than by a
  tinygrad kernel after it so that the output is one buffer: a second one for the biased output held 70 MiB more
  at the peak of a 1,000-image evaluation (eval arena 211 vs 141 MiB; tinygrad's own convolutions: 119).
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
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from tinygrad import Device, Tensor, dtypes
from tinygrad.dtype import DType
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.uop.ops import KernelInfo, Ops, UOp

#: Set to 0 to use tinygrad's own convolution kernels everywhere.
ENV = "TRAINER_CONV_KERNELS"
#: The channel counts the kernels vectorize are multiples of this (the widest vector, AVX-512's 16 floats).
LANES = 16


def enabled() -> bool:
    """Whether the hand-written kernels are used where they apply (default yes; `TRAINER_CONV_KERNELS=0`: never)."""
    return os.environ.get(ENV, "1") != "0"


def supported(device: str | tuple[str, ...] | None) -> bool:
    """Whether tinygrad renders C for `device`'s kernels (the CPU's default renderer), so a C block can be one."""
    return enabled() and isinstance(device, str) and isinstance(Device[device].renderer, ClangRenderer)


def applies(device: str | tuple[str, ...] | None, dtype: DType, weight: Tensor) -> bool:
    """Whether `conv2d` takes an input of `dtype` on `device` with `weight`: C rendered for the device, float32,
    output channels a multiple of 16."""
    float32 = dtype == dtypes.float32 and weight.dtype == dtypes.float32
    return float32 and int(weight.shape[0]) % LANES == 0 and supported(device)


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
    def flops(self) -> int:
        """The multiplies and adds of the forward kernel (the weight gradient does as many)."""
        return 2 * self.n * self.c_in * self.c_out * self.oh * self.ow * self.k * self.k

    @property
    def name(self) -> str:
        return f"{self.n}_{self.c_in}_{self.c_out}_{self.h}_{self.w}_{self.k}"


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """`x.conv2d(weight, bias, padding=padding)` (stride 1) through the hand-written kernels, differentiable in all.

    Needs float32, and output channels a multiple of 16; the input gradient falls back to tinygrad's convolution
    where the input channels are not. The bias starts the sums, so the output is one buffer, written once.
    """
    x_padded = x.pad((padding,) * 4) if padding else x
    n, c_in, h, w = (int(d) for d in x_padded.shape)
    c_out, k = int(weight.shape[0]), int(weight.shape[2])
    assert c_out % LANES == 0, "output channels are a multiple of 16"
    shape = Shape(n, c_in, c_out, h, w, k)
    out = Tensor.invalids(n, c_out, shape.oh, shape.ow, device=x.device, dtype=dtypes.float32)
    # The weights as [ci][ky][kx][co]: the output channels of one tap contiguous, loaded as vectors.
    taps = weight.permute(1, 2, 3, 0)
    inputs = (x_padded, taps) if bias is None else (x_padded, taps, bias)
    source = forward_source(shape, bias=bias is not None)
    return out.custom_kernel(*inputs, fxn=_kernel(source), grad_fxn=_backward)[0]


def _backward(grad: UOp, call: UOp) -> tuple[UOp | None, ...]:
    """The gradients of the forward kernel's arguments (its output buffer, the padded input, the taps, the bias)."""
    _, _, x_padded, taps, *bias = (Tensor(u) for u in call.src)  # the kernel, then its arguments
    g = Tensor(grad)
    n, c_in, h, w = (int(d) for d in x_padded.shape)
    k, c_out = int(taps.shape[1]), int(taps.shape[3])
    shape = Shape(n, c_in, c_out, h, w, k)
    grad_taps = Tensor.invalids(c_in, k, k, c_out, device=g.device, dtype=dtypes.float32).custom_kernel(
        x_padded, g.permute(0, 2, 3, 1), fxn=_kernel(weight_gradient_source(shape))
    )[0]
    # The input gradient is a full convolution of g with the flipped kernel, in and out channels swapped.
    flipped = taps.permute(3, 1, 2, 0).flip((1, 2))  # [co][ky][kx][ci]
    g_padded = g.pad((k - 1,) * 4)
    if c_in % LANES == 0:
        transposed = Shape(n, c_out, c_in, shape.oh + 2 * (k - 1), shape.ow + 2 * (k - 1), k)
        grad_x = Tensor.invalids(n, c_in, h, w, device=g.device, dtype=dtypes.float32).custom_kernel(
            g_padded, flipped, fxn=_kernel(forward_source(transposed, bias=False))
        )[0]
    else:
        grad_x = g_padded.contiguous().conv2d(flipped.permute(3, 0, 1, 2))
    grads: tuple[UOp | None, ...] = (None, grad_x.uop, grad_taps.uop)
    return grads + ((g.sum((0, 2, 3)).uop,) if bias else ())


def kernel_flops(name: str) -> int | None:
    """The multiplies and adds of one of these kernels, from its name; None for any other kernel.

    tinygrad counts no operations in a C block (its DEBUG=2 lines say 0 GFLOPS), so the profile asks here."""
    found = re.fullmatch(r"conv_(?:forward|forward_bias|weight_gradient)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)", name)
    return Shape(*(int(d) for d in found.groups())).flops if found else None


@cache
def _kernel(source: str) -> Callable[..., UOp]:
    """The custom kernel whose whole body is `source`, a C block reading its buffers as `OUT`, `A`, `B` (and `C`)."""
    body = source.replace("{", "{{").replace("}", "}}")
    for i, name in enumerate(("OUT", "A", "B", "C")):
        body = body.replace(f"@{name}@", f"{{{i}}}")
    name = "conv_" + source.split("\n", 1)[0].removeprefix("/* ").removesuffix(" */")

    def fxn(*buffers: UOp) -> UOp:
        assert all(buf.dtype == dtypes.float32 for buf in buffers), "float32 buffers"
        pointers = tuple(buf.flatten()[0] for buf in buffers)
        return UOp(Ops.CUSTOM, dtypes.void, src=pointers, arg=body).sink(arg=KernelInfo(name=name, opts_to_apply=()))

    return fxn


#: (the C macro that picks it, float lanes per vector, accumulator vectors per tile), first match wins: AVX-512 has 32
#: vector registers of 16 floats, AVX 16 of 8, ARM64's NEON 32 of 4, SSE 16 of 4; the weights and inputs need the
#: registers the accumulators leave. clang compiles a vector wider than the machine's as several, so a wrong guess
#: costs speed, never correctness (tested by compiling all four for x86-64, tests/trainer/test_convolution.py).
TARGETS = (("__AVX512F__", 16, 24), ("__AVX__", 8, 12), ("__aarch64__", 4, 24), ("", 4, 12))


def _for_each_target(kernel: Callable[[int, int], str]) -> str:
    """`kernel(lanes, accumulators)` for every target, chosen by the C preprocessor when tinygrad compiles it."""
    branches = []
    for i, (macro, lanes, accumulators) in enumerate(TARGETS):
        head = "#else" if not macro else f"#{'el' if i else ''}if defined({macro})"
        branches.append(f"""{head}
typedef float vec __attribute__((ext_vector_type({lanes})));
typedef float vecu __attribute__((ext_vector_type({lanes}), aligned(4)));
{kernel(lanes, accumulators)}""")
    return "\n".join(branches) + "#endif\n"


def _split(length: int, most: int) -> tuple[int, int]:
    """Tiles of `length`: the width of the full tiles (at most `most`, as even as possible) and the last one's."""
    tiles = -(-length // most)
    width = -(-length // tiles)
    return width, length - (length // width) * width


def forward_source(shape: Shape, *, bias: bool) -> str:
    """C for `out[n][c_out][oh][ow]` from `x[n][c_in][h][w]`, taps `[c_in][k][k][c_out]` and, with `bias`, a bias
    `[c_out]` that starts each sum (see the module doc)."""
    c_in, c_out, h, w, k, oh, ow = shape.c_in, shape.c_out, shape.h, shape.w, shape.k, shape.oh, shape.ow

    def kernel(lanes: int, accumulators: int) -> str:
        vectors = 2 if c_out % (2 * lanes) == 0 else 1
        width, rest = _split(ow, accumulators // vectors)
        start = f"*(const vecu*)(b0 + cb * {vectors * lanes} + c * {lanes})" if bias else "(vec)0.0f"

        def tile(cols: int) -> str:
            return f"""{{
  vec acc[{vectors}][{cols}];
  #pragma unroll
  for (int c = 0; c < {vectors}; c++)
    #pragma unroll
    for (int t = 0; t < {cols}; t++) acc[c][t] = {start};
  for (int ci = 0; ci < {c_in}; ci++)
    for (int ky = 0; ky < {k}; ky++) {{
      const float* xr = x + ((n * {c_in} + ci) * {h} + oy + ky) * {w} + ox0;
      const float* wr = wt + (ci * {k} + ky) * {k * c_out} + cb * {vectors * lanes};
      #pragma unroll
      for (int kx = 0; kx < {k}; kx++) {{
        vec wv[{vectors}];
        #pragma unroll
        for (int c = 0; c < {vectors}; c++) wv[c] = *(const vecu*)(wr + kx * {c_out} + c * {lanes});
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
      for (int l = 0; l < {lanes}; l++)
        out[((n * {c_out} + cb * {vectors * lanes} + c * {lanes} + l) * {oh} + oy) * {ow} + ox0 + t] = acc[c][t][l];
}}
"""

        last = f"{{ const int ox0 = {ow - rest};\n{tile(rest)}}}\n" if rest else ""
        return f"""for (int n = 0; n < {shape.n}; n++)
  for (int cb = 0; cb < {c_out // (vectors * lanes)}; cb++)
    for (int oy = 0; oy < {oh}; oy++) {{
      for (int ox0 = 0; ox0 + {width} <= {ow}; ox0 += {width})
{tile(width)}{last}    }}
"""

    bias_pointer = "const float* restrict b0 = @C@;\n" if bias else ""
    return f"""/* forward{"_bias" if bias else ""}_{shape.name} */
{{
float* restrict out = @OUT@;
const float* restrict x = @A@;
const float* restrict wt = @B@;
{bias_pointer}{_for_each_target(kernel)}}}
"""


def weight_gradient_source(shape: Shape) -> str:
    """C for the taps' gradient `[c_in][k][k][c_out]` from `x[n][c_in][h][w]` and `g[n][oh][ow][c_out]`."""
    c_in, c_out, h, w, k, oh, ow = shape.c_in, shape.c_out, shape.h, shape.w, shape.k, shape.oh, shape.ow

    def kernel(lanes: int, accumulators: int) -> str:
        vectors = 2 if c_out % (2 * lanes) == 0 else 1
        rows, rest = _split(k, max(1, accumulators // (k * vectors)))

        def tile(count: int) -> str:
            # The first image starts the sums (a zeroing loop could become a memset call, which a freestanding
            # kernel cannot make).
            return f"""{{
  vec acc[{count}][{k}][{vectors}];
  float* dr = dw + (ci * {k} + ky0) * {k * c_out} + cb * {vectors * lanes};
  #pragma unroll
  for (int r = 0; r < {count}; r++)
    #pragma unroll
    for (int kx = 0; kx < {k}; kx++)
      #pragma unroll
      for (int c = 0; c < {vectors}; c++)
        acc[r][kx][c] = n == 0 ? (vec)0.0f : *(vecu*)(dr + (r * {k} + kx) * {c_out} + c * {lanes});
  for (int oy = 0; oy < {oh}; oy++) {{
    const float* xr = x + ((n * {c_in} + ci) * {h} + oy + ky0) * {w};
    const float* gr = g + (n * {oh} + oy) * {ow * c_out} + cb * {vectors * lanes};
    for (int ox = 0; ox < {ow}; ox++) {{
      vec gv[{vectors}];
      #pragma unroll
      for (int c = 0; c < {vectors}; c++) gv[c] = *(const vecu*)(gr + ox * {c_out} + c * {lanes});
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
      for (int c = 0; c < {vectors}; c++) *(vecu*)(dr + (r * {k} + kx) * {c_out} + c * {lanes}) = acc[r][kx][c];
}}
"""

        last = f"{{ const int ky0 = {k - rest};\n{tile(rest)}}}\n" if rest else ""
        return f"""for (int n = 0; n < {shape.n}; n++)
  for (int ci = 0; ci < {c_in}; ci++)
    for (int cb = 0; cb < {c_out // (vectors * lanes)}; cb++) {{
      for (int ky0 = 0; ky0 + {rows} <= {k}; ky0 += {rows})
{tile(rows)}{last}    }}
"""

    return f"""/* weight_gradient_{shape.name} */
{{
float* restrict dw = @OUT@;
const float* restrict x = @A@;
const float* restrict g = @B@;
{_for_each_target(kernel)}}}
"""
