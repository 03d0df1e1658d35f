"""Two CPU ranks (gloo, through torchrun) train the same weights as one process with the same global batch."""

from __future__ import annotations

import pytest
import torch

from ganforge.checkpoints import load_checkpoint
from ganforge.training import TrainConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.parametrize("options", [{}, {"conditional": True, "spectral_norm": True, "upsample": "resize-conv"}])
def test_two_ranks_match_one_process(digits16, tmp_path, options):
    """Batch norm in G and D: ranks must use the global batch's statistics (GlobalBatchNorm).

    Equality needs networks without per-sample noise: dropout (the mlp's D), gradient-penalty
    interpolation and the VAE's epsilon draw per-rank noise, which is statistically right but not
    the same numbers as one process.
    """
    base = dict(dataset=digits16, model="dcgan", steps=4, batch_size=32, width=8, latent_dim=8, track=False,
                log_every=2, ema_decay=0.9, **options)  # fmt: skip
    one = train(TrainConfig(**base, output=str(tmp_path / "one")))
    two = train(TrainConfig(**base, output=str(tmp_path / "two"), nproc=2))
    assert two.step == one.step == 4
    a, b = load_checkpoint(one.checkpoint), load_checkpoint(two.checkpoint)
    assert sorted(a.weights) == sorted(b.weights) == ["discriminator", "generator", "generator_ema"]
    for name in a.weights:
        for key, tensor in a.weights[name].items():
            assert torch.allclose(tensor.float(), b.weights[name][key].float(), atol=1e-5, rtol=1e-4), (name, key)
    assert abs(one.metrics["train/loss_d"] - two.metrics["train/loss_d"]) < 1e-4
