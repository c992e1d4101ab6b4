"""The optimizer's fresh state, realized from host arrays at a run's start, is tinygrad's own initial state."""

from __future__ import annotations

import pytest
from tinygrad import nn
from tinygrad.nn.state import get_state_dict
from trainer_harness import spec
from trainer_tinygrad.checkpoints import named_state
from trainer_tinygrad.train import build_optimizer, initial_model


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"optimizer": "adam", "learning_rate": 3e-3}, nn.optim.Adam),
        ({"optimizer": "sgd", "momentum": 0.9}, nn.optim.SGD),
    ],
)
def test_the_fresh_state_equals_tinygrads_lazy_one_bit_for_bit(overrides: dict[str, object], kind: type) -> None:
    config = spec(model="mlp", **overrides)
    model = initial_model(config, (1, 28, 28), 10)
    ours = build_optimizer(config, model)
    params = list(get_state_dict(model).values())
    if kind is nn.optim.Adam:
        theirs = nn.optim.Adam(params, lr=config["learning_rate"], fused=False)
    else:
        theirs = nn.optim.SGD(params, lr=config["learning_rate"], momentum=config["momentum"], fused=False)
    mine, reference = named_state(model, ours), named_state(model, theirs)
    assert mine.keys() == reference.keys() and any(k.startswith("optim.") for k in mine)
    assert all(t.uop.is_realized for t in (*mine.values(), ours.lr)), "realized before any step is captured"
    for name in mine:
        a, b = mine[name].numpy(), reference[name].numpy()
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
    assert ours.lr.numpy().tobytes() == theirs.lr.numpy().tobytes()
    assert ours.lr.dtype == theirs.lr.dtype and ours.lr.shape == theirs.lr.shape
