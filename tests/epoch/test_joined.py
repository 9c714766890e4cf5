"""The status checks of a joined pass (``epoch/joined.py``) in one process: a one-rank process group (gloo) and the
tiny CNN sharded by FSDP2. The two-rank behaviour (a failure on one rank only) is tested in test_distributed.py."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from conftest import TinyCNN

from lightning_explain.epoch.joined import run_joined


@pytest.fixture
def sharded() -> TinyCNN:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with socket.socket() as s:  # a free port for the one-rank group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        torch.manual_seed(0)
        model = TinyCNN()
        for unit in (model.features, model.head):
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        yield model
    finally:
        dist.destroy_process_group()


def _pass(model: TinyCNN) -> torch.Tensor:
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    with torch.enable_grad():
        return torch.autograd.grad(model(x)[:, 0].sum(), [x])[0]


def _hooks(model: TinyCNN) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]


def _groups(model: TinyCNN) -> list:
    return [m._get_fsdp_state()._fsdp_param_group for m in (model.features, model.head)]


def test_a_pass_that_finishes_everywhere_returns_none_and_leaves_no_hook(sharded):
    hooks = _hooks(sharded)
    seen = []
    assert run_joined(sharded, torch.device("cpu"), lambda: seen.append(_pass(sharded))) is None
    assert len(seen) == 1 and _hooks(sharded) == hooks


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_failure_mid_pass_is_reported_and_fsdp2_is_reset_for_the_next_step(sharded, where):
    hooks = _hooks(sharded)
    layer = sharded.head[3]
    sharded.eval()  # no dropout: the same input gives the same loss
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(sharded(x), y)

    def boom(*_):
        raise torch.OutOfMemoryError(f"out of memory in the {where}")

    def on_input(_module, args):
        args[0].register_hook(boom)

    handle = layer.register_forward_pre_hook(boom if where == "forward" else on_input)
    try:
        failure = run_joined(sharded, torch.device("cpu"), lambda: _pass(sharded))
    finally:
        handle.remove()
    assert failure is not None and failure.rank == 0
    assert failure.message == f"OutOfMemoryError: out of memory in the {where}"
    assert isinstance(failure.error, torch.OutOfMemoryError)
    assert _hooks(sharded) == hooks  # the status hooks are gone
    assert all(group.is_sharded for group in _groups(sharded))  # nothing left gathered
    # The next step runs as before the failure: the same loss, and a backward that reaches every parameter.
    loss = torch.nn.functional.cross_entropy(sharded(x), y)
    assert torch.equal(loss.detach(), before)
    loss.backward()
    assert all(p.grad is not None for p in sharded.parameters())
    assert all(group.is_sharded for group in _groups(sharded))


def test_a_failure_outside_any_unit_is_reported_at_the_end(sharded):
    def work() -> None:
        _pass(sharded)
        raise ValueError("rendering failed")

    failure = run_joined(sharded, torch.device("cpu"), work)
    assert failure is not None and failure.message == "ValueError: rendering failed"
