"""The convolution with a hand-written backward computes what tinygrad's own autograd computes: outputs and both
gradients, for every kernel size and padding the models use, from random inputs (a wrong identity would be off by
far more than float rounding)."""

from __future__ import annotations

import numpy as np
import pytest
from tinygrad import Tensor, nn
from tinygrad.helpers import Context
from trainer_tinygrad.convolution import Conv2d


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "padding", "size"),
    [(1, 8, 5, 0, 12), (6, 4, 5, 0, 11), (5, 7, 3, 0, 9), (3, 6, 3, 1, 8), (4, 4, 3, 2, 7)],
)
def test_output_and_gradients_equal_tinygrads_autograd(
    c_in: int, c_out: int, kernel: int, padding: int, size: int
) -> None:
    rng = np.random.default_rng(kernel * 100 + padding * 10 + c_in)
    x = rng.standard_normal((3, c_in, size, size)).astype(np.float32)
    upstream = rng.standard_normal((3, c_out, size + 2 * padding - kernel + 1, size + 2 * padding - kernel + 1))
    ours, theirs = Conv2d(c_in, c_out, kernel, padding=padding), nn.Conv2d(c_in, c_out, kernel, padding=padding)
    theirs.weight.replace(ours.weight.contiguous().realize())
    assert theirs.bias is not None and ours.bias is not None
    theirs.bias.replace(ours.bias.contiguous().realize())
    results = []
    with Context(TRAINING=1):
        for layer in (ours, theirs):
            inputs = Tensor(x)
            out = layer(inputs)
            assert layer.bias is not None
            grads = (out * Tensor(upstream.astype(np.float32))).sum().gradient(inputs, layer.weight, layer.bias)
            results.append([t.numpy() for t in (out, *grads)])
    for name, mine, reference in zip(("output", "input grad", "weight grad", "bias grad"), *results, strict=True):
        assert mine.shape == reference.shape, name
        np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(reference).max() > 0.1, name  # not a vacuous comparison of zeros


def test_padding_as_wide_as_the_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="padding 3 for a 3x3 kernel"):
        Conv2d(2, 2, 3, padding=3)
