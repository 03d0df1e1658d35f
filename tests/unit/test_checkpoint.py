"""Checkpoints: atomic ckpt-<step> directories, retention, safe loading and exact resume."""

from __future__ import annotations

import pytest
import torch

from ganforge.checkpoints import (
    clean_stale,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    resolve_resume,
    save_checkpoint,
)
from ganforge.errors import GanforgeError
from ganforge.training import TrainConfig, train


def tiny(dataset: str, output, **kw) -> TrainConfig:
    base = dict(dataset=dataset, model="dcgan", batch_size=16, width=8, latent_dim=8, track=False,
                log_every=1, checkpoint_every=3, output=str(output))  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_save_load_round_trip_and_retention(tmp_path):
    net = _net()
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"generator": net.state_dict()}, {"step": step, "opt": opt.state_dict()},
                        {"config": {}}, keep=2)  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000003", "ckpt-000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000003", "ckpt-000004"]  # no temp leftovers
    ck = load_checkpoint(tmp_path / "ckpt-000004")
    assert ck.step == 4 and ck.meta == {"config": {}}
    assert sorted(p.name for p in ck.path.iterdir()) == ["generator.safetensors", "meta.json", "state.pt"]
    other = _net()
    load_weights(other, ck.weights["generator"], "x")
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert ck.state["opt"]["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]


def test_half_written_checkpoint_is_never_listed(tmp_path):
    (tmp_path / ".tmp-ckpt-000009-123").mkdir()
    (tmp_path / "ckpt-000009-partial").mkdir()
    assert list_checkpoints(tmp_path) == []
    with pytest.raises(GanforgeError, match="no ckpt-<step> directory"):
        resolve_resume("latest", tmp_path)


def _save(root, step, keep=3):
    save_checkpoint(root, step, {"generator": _net().state_dict()}, {"step": step}, {"config": {}}, keep=keep)


def test_a_failed_write_leaves_no_temp_dir(tmp_path, monkeypatch):
    """Issue 13: run directories were left with an empty .tmp-ckpt-*."""
    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        _save(tmp_path, 1)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_stale_removes_what_a_killed_writer_left(tmp_path):
    import os

    dead = _dead_pid()
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    (tmp_path / f".tmp-ckpt-000006-{dead}").mkdir()  # killed while writing step 6
    (tmp_path / f".tmp-ckpt-000006-{dead}" / "generator.safetensors").write_bytes(b"half")
    (tmp_path / "ckpt-000004").rename(tmp_path / f".old-ckpt-000004-{dead}")  # killed while replacing step 4
    (tmp_path / "ckpt-000002").rename(tmp_path / f".del-ckpt-000002-{dead}")  # killed while pruning step 2
    (tmp_path / f".tmp-ckpt-000008-{os.getpid()}").mkdir()  # a live writer's: left alone
    handled = clean_stale(tmp_path)
    assert sorted(handled) == sorted(f".{k}-ckpt-00000{s}-{dead}" for k, s in (("tmp", 6), ("old", 4), ("del", 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".tmp-ckpt-000008-{os.getpid()}", "ckpt-000004"]
    assert load_checkpoint(tmp_path / "ckpt-000004").step == 4  # the replaced checkpoint is back, complete
    assert clean_stale(tmp_path / "missing") == []


def test_pruning_hides_a_checkpoint_before_deleting_it(tmp_path, monkeypatch):
    """A kill in the middle of deleting an old checkpoint must not leave a partial ckpt-* to resume from."""
    import shutil

    _save(tmp_path, 1, keep=1)
    seen, real_rmtree = [], shutil.rmtree

    def interrupted_rmtree(path, ignore_errors=False):
        if not path.exists():
            return real_rmtree(path, ignore_errors=ignore_errors)
        seen.append(path.name)
        next(path.iterdir()).unlink()  # some files gone, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, keep=1)
    monkeypatch.undo()
    assert seen[-1].startswith(".del-ckpt-000001-")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000002"]


class Evil:
    pass


def test_loading_never_unpickles_objects(tmp_path):
    save_checkpoint(tmp_path, 1, {}, {"step": 1}, {}, keep=1)
    torch.save({"step": 1, "payload": Evil()}, tmp_path / "ckpt-000001" / "state.pt")
    with pytest.raises(GanforgeError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "ckpt-000001")


def test_weights_of_another_architecture_are_one_error():
    with pytest.raises(GanforgeError, match="another architecture"):
        load_weights(torch.nn.Linear(3, 5), torch.nn.Linear(3, 4).state_dict(), "ckpt-000001")


def test_resume_continues_exactly(digits16, tmp_path):
    """Interrupted at step 3 and resumed to 7 == trained to 7 at once: weights, EMA, D and optimisers."""
    kw = dict(ema_decay=0.9, keep_checkpoints=2, label_smoothing=True)  # label noise uses the saved RNG
    whole = train(tiny(digits16, tmp_path / "a", steps=7, **kw))
    train(tiny(digits16, tmp_path / "b", steps=3, **kw))
    resumed = train(tiny(digits16, tmp_path / "b", steps=7, resume="latest", **kw))
    assert resumed.step == 7
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["ckpt-000006", "ckpt-000007"]
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert sorted(a.weights) == ["discriminator", "generator", "generator_ema"]
    for name in a.weights:
        for key, tensor in a.weights[name].items():
            assert torch.allclose(tensor.float(), b.weights[name][key].float(), atol=1e-6, rtol=0), (name, key)
    exp_avg = lambda ck: ck.state["opt_g"]["state"][0]["exp_avg"]  # noqa: E731
    assert torch.allclose(exp_avg(a), exp_avg(b), atol=1e-6, rtol=0)


def test_resume_with_different_settings_is_refused(digits16, tmp_path):
    train(tiny(digits16, tmp_path, steps=3))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(GanforgeError, match=r"cannot resume .*lr_g 0.0002 -> 0.001; width 8 -> 16"):
        train(tiny(digits16, tmp_path, steps=5, resume="latest", lr_g=1e-3, width=16))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing touched
    with pytest.raises(GanforgeError, match="already holds checkpoints"):
        train(tiny(digits16, tmp_path, steps=5))
