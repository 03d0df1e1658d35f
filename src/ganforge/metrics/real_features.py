"""The real-image feature cache: a dataset split's backbone features, computed once.

Keyed by (dataset fingerprint, split, backbone name and weights hash, sample size) under
``$GANFORGE_CACHE_DIR/features/<fingerprint>/``; evaluation and training's per-epoch FID read the same
files. The key is the fingerprint checked against the dataset's shards (``ganforge.data.loader.
verified_fingerprint``: a stat per shard once the location was verified), never the manifest's unchecked
claim: a dataset whose manifest claims another's fingerprint is refused, not handed that one's features.
The labels file is written first and the features last, so the features' presence marks a complete entry
(each file is written under a temp name and renamed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganforge.errors import GanforgeError
from ganforge.outputs import save_npy_atomic


def real_features(dataset: str, split: str, extractor, n_real: int | None, batch_size: int,
                  cache_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features of the real split, computed once per (fingerprint, split, backbone hash, sample).

    Returns:
        (features (N, D) float32, labels (N,), whether they came from the cache).
    """
    from ganforge.data import load
    from ganforge.data.loader import default_cache_dir, verified_fingerprint

    fp = verified_fingerprint(dataset)
    # The runtime (extractor.runtime: torch, onnxruntime, openvino) is deliberately not in the key: it runs
    # the same weights on the same input contract, and the features agree to float32 rounding (OpenVINO
    # bit-identical to torch's path, ONNX Runtime within 2.1e-6 of the largest feature, FID within 2e-7 on
    # 2k vs 2k; benchmarks/fid_runtimes.py, tests/unit/test_fid_runtimes.py), far below FID's sampling noise.
    # Keying by it would recompute the real side (about 20 min per 10k images on a core) whenever the optional runtime is
    # installed or removed, for no change in any reported figure. The weights' hash stays in the key.
    name = f"{split}-{extractor.name}-{extractor.sha256[:16]}-{n_real or 'all'}"
    d = Path(cache_dir or default_cache_dir()) / "features" / fp
    feats_path, labels_path = d / f"{name}.npy", d / f"{name}-labels.npy"
    if feats_path.exists() and labels_path.exists():
        return torch.from_numpy(np.load(feats_path)), torch.from_numpy(np.load(labels_path)), True
    data = load(dataset, split)
    if data.fingerprint != fp:
        raise GanforgeError(f"dataset {dataset} was re-ingested while its features were being computed; run it again")
    images, labels = data.images, data.labels
    if n_real is not None and n_real < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n_real].sort().values
        images, labels = images[keep], labels[keep]
    label = f"extract {extractor.name} real {split}"
    feats = extractor.extract(images, batch_size, progress=label).float().cpu()
    for path, arr in ((labels_path, labels.numpy()), (feats_path, feats.numpy())):  # features last: marks complete
        save_npy_atomic(path, arr)
    return feats, labels, False
