"""The convolution with a hand-written backward, and the hand-written C kernels (output channels a multiple of 16 on
the CPU), compute what the definition of a convolution gives (numpy, in float64): outputs and the three gradients,
for every kernel size and padding the models use, from random inputs (a wrong identity or index would be off by far
more than float rounding). The oracle is numpy rather than tinygrad's own `nn.Conv2d` and autograd: independent of the
code under test, and no second set of kernels to compile (~1 CPU-s a case)."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.helpers import Context
from tinygrad.uop.ops import Ops
from trainer_tinygrad import convolution_kernels
from trainer_tinygrad.convolution import Conv2d


def reference_convolution(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, upstream: np.ndarray, padding: int
) -> tuple[np.ndarray, ...]:
    """A convolution's output and its gradients (input, weight, bias) for the loss sum(output * upstream), in float64
    numpy from the definition: each output is a window of the padded input times the weights, plus the bias."""
    x, w, g = (a.astype(np.float64) for a in (x, w, upstream))
    k = w.shape[-1]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))  # n c oy ox ky kx
    out = np.einsum("ncyxij,ocij->noyx", windows, w) + b.reshape(1, -1, 1, 1)
    grad_padded = np.zeros_like(padded)
    oh, ow = g.shape[2:]
    for i in range(k):
        for j in range(k):  # every input pixel under tap (i, j) of some window
            grad_padded[:, :, i : i + oh, j : j + ow] += np.einsum("noyx,oc->ncyx", g, w[:, :, i, j])
    grad_x = grad_padded[:, :, padding : padding + x.shape[2], padding : padding + x.shape[3]]
    return out, grad_x, np.einsum("noyx,ncyxij->ocij", g, windows), g.sum(axis=(0, 2, 3))


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "padding", "size"),
    [
        (1, 8, 5, 0, 12),
        (6, 4, 5, 0, 11),
        (5, 7, 3, 0, 9),
        (3, 6, 3, 1, 8),
        (4, 4, 3, 2, 7),
        # the C kernels: two vectors of output channels, one, and 48 (one-vector tiles); input gradients in C
        # (16 and 32 input channels) and not (1 and 3); rows split into full and last tiles (13 and 17 columns)
        (16, 32, 5, 0, 12),
        (32, 16, 3, 1, 9),
        (1, 32, 5, 0, 17),
        (3, 48, 3, 1, 11),
        (32, 64, 3, 0, 15),
    ],
)
def test_output_and_gradients_equal_the_definition(c_in: int, c_out: int, kernel: int, padding: int, size: int) -> None:
    rng = np.random.default_rng(kernel * 100 + padding * 10 + c_in)
    x = rng.standard_normal((3, c_in, size, size)).astype(np.float32)
    upstream = rng.standard_normal((3, c_out, size + 2 * padding - kernel + 1, size + 2 * padding - kernel + 1))
    layer = Conv2d(c_in, c_out, kernel, padding=padding)
    assert layer.bias is not None
    with Context(TRAINING=1):
        inputs = Tensor(x)
        out = layer(inputs)
        grads = (out * Tensor(upstream.astype(np.float32))).sum().gradient(inputs, layer.weight, layer.bias)
        mine = [t.numpy() for t in (out, *grads)]
    expected = reference_convolution(x, layer.weight.numpy(), layer.bias.numpy(), upstream, padding)
    for name, got, reference in zip(("output", "input grad", "weight grad", "bias grad"), mine, expected, strict=True):
        assert got.shape == reference.shape, name
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(reference).max() > 0.1, name  # not a vacuous comparison of zeros


def test_padding_as_wide_as_the_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="padding 3 for a 3x3 kernel"):
        Conv2d(2, 2, 3, padding=3)


def _hand_kernels(out: Tensor) -> int:
    return sum(u.op is Ops.CUSTOM for u in out.uop.toposort(enter_calls=True))


def test_the_c_kernels_run_where_they_apply_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    x = Tensor.ones(2, 16, 9, 9)
    with Context(TRAINING=1):
        layer = Conv2d(16, 32, 3)
        out = layer(x)
        assert _hand_kernels(out) == 1
        grad_x, grad_w = out.sum().gradient(x, layer.weight)
        assert _hand_kernels(grad_x) == 1 and _hand_kernels(grad_w) == 1
        assert _hand_kernels(Conv2d(16, 8, 3)(x)) == 0  # 8 output channels: not a whole vector
        monkeypatch.setenv(convolution_kernels.ENV, "0")
        assert _hand_kernels(layer(x)) == 0


def test_tiles_cover_a_row_in_full_tiles_and_one_last() -> None:
    assert convolution_kernels._split(20, 12) == (10, 0)
    assert convolution_kernels._split(32, 12) == (11, 10)
    assert convolution_kernels._split(5, 2) == (2, 1)
    assert convolution_kernels._split(3, 24) == (3, 0)


def _c_functions(sources: dict[str, str]) -> str:
    """Each kernel's C block as a function of its buffers (output, then inputs), the way tinygrad wraps it."""
    return "".join(
        f"void {name}(float* restrict o, const float* restrict a, const float* restrict b, const float* restrict c) "
        + source.replace("@OUT@", "o").replace("@A@", "a").replace("@B@", "b").replace("@C@", "c")
        for name, source in sources.items()
    )


def _cpu_has(flag: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and flag in cpuinfo.read_text(encoding="utf-8").split()


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("clang") is None, reason="x86-64 and clang")
@pytest.mark.parametrize(("march", "flag"), [("x86-64-v4", "avx512f"), ("x86-64-v3", "avx2"), ("x86-64", "sse2")])
def test_every_x86_targets_c_computes_the_convolution(march: str, flag: str, tmp_path: Path) -> None:
    """The C of each preprocessor branch (AVX-512, AVX, plain SSE), compiled alone and run on numpy arrays."""
    if not _cpu_has(flag):
        pytest.skip(f"this CPU has no {flag}")
    shape = convolution_kernels.Shape(n=2, c_in=16, c_out=48, h=9, w=16, k=3)  # 14 columns: a full and a last tile
    sources = {
        "forward": convolution_kernels.forward_source(shape, bias=True),
        "weight_gradient": convolution_kernels.weight_gradient_source(shape),
    }
    (tmp_path / "k.c").write_text(_c_functions(sources), encoding="utf-8")
    library = tmp_path / "k.so"
    # Compiled the way tinygrad compiles CPU kernels: freestanding, without the C library.
    subprocess.run(
        ["clang", "-O2", f"-march={march}", "-ffreestanding", "-nostdlib", "-shared", "-fPIC", "-o", str(library),
         str(tmp_path / "k.c")],
        check=True,
    )  # fmt: skip
    kernels = ctypes.CDLL(str(library))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((shape.n, shape.c_in, shape.h, shape.w)).astype(np.float32)
    w = rng.standard_normal((shape.c_out, shape.c_in, shape.k, shape.k)).astype(np.float32)
    g = rng.standard_normal((shape.n, shape.c_out, shape.oh, shape.ow)).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(x, (shape.k, shape.k), axis=(2, 3))  # n ci oy ox ky kx

    bias = rng.standard_normal(shape.c_out).astype(np.float32)

    def call(name: str, out: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
        arrays = [np.ascontiguousarray(t, dtype=np.float32) for t in (out, *inputs, bias)]
        getattr(kernels, name)(*(t.ctypes.data_as(ctypes.c_void_p) for t in arrays))
        return arrays[0]

    out = call("forward", np.zeros((shape.n, shape.c_out, shape.oh, shape.ow)), x, w.transpose(1, 2, 3, 0))
    expected_out = np.einsum("ncyxij,ocij->noyx", windows, w) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(out, expected_out, rtol=1e-4, atol=1e-4)
    taps = call("weight_gradient", np.zeros((shape.c_in, shape.k, shape.k, shape.c_out)), x, g.transpose(0, 2, 3, 1))
    expected = np.einsum("noyx,ncyxij->cijo", g, windows)
    np.testing.assert_allclose(taps, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang")
def test_the_arm64_branch_compiles(tmp_path: Path) -> None:
    shape = convolution_kernels.Shape(n=1, c_in=16, c_out=32, h=8, w=8, k=3)
    source = convolution_kernels.forward_source(shape, bias=True)
    (tmp_path / "k.c").write_text(_c_functions({"forward": source}), encoding="utf-8")
    subprocess.run(
        ["clang", "--target=aarch64-linux-gnu", "-O2", "-ffreestanding", "-c", "-o", str(tmp_path / "k.o"),
         str(tmp_path / "k.c")],
        check=True,
    )  # fmt: skip
