import itertools
import math

import pytest
import torch

from segpets.errors import ConfigError
from segpets.schedules import warmup_cosine


def lrs(scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def sgd(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_spans_the_run_from_base_to_zero():
    values = lrs(warmup_cosine(sgd(), total_steps=10), 11)
    assert values[0] == pytest.approx(1.0)
    assert values[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_warmup_rises_linearly_then_decays_to_the_floor():
    values = lrs(warmup_cosine(sgd(2.0), total_steps=12, warmup_steps=4, min_lr_ratio=0.1), 13)
    assert values[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert max(values) == pytest.approx(2.0)
    assert values[12] == pytest.approx(0.2)


def test_bad_schedule_options_name_the_option():
    with pytest.raises(ConfigError, match=r"scheduler\.warmup_steps"):
        warmup_cosine(sgd(), total_steps=10, warmup_steps=-1)
    with pytest.raises(ConfigError, match=r"scheduler\.min_lr_ratio"):
        warmup_cosine(sgd(), total_steps=10, min_lr_ratio=2)
