"""The registered generator as an MLflow pyfunc, logged by code reference (MLflow "models from code").

Why this shape, and not the alternatives:

* ``mlflow.pytorch.log_model`` pickles the whole ``nn.Module`` (``torch.save``), and loading it
  unpickles arbitrary objects. Its exported-program variant avoids pickling, but would freeze one input
  shape, gives a tensor in / tensor out contract (latents, not seeds) and still needs a pyfunc wrapper
  to answer "n images for this seed and label".
* A ``PythonModel`` *instance* passed to ``pyfunc.log_model`` is cloudpickled, so loading it runs
  whatever the pickle says.
* Logged by code reference, the model directory holds this file as text, the weights as
  ``generator.safetensors`` and the architecture as ``meta.json`` (a ``ModelSpec``). Loading executes
  this ganforge source file, rebuilds the network from the spec and reads tensors with safetensors:
  nothing is unpickled. The serving environment needs ganforge installed (the project image does;
  ``--env-manager local`` uses the current one); the version tag ``ganforge_version`` says which.

This is the one registry module besides ``store`` that imports mlflow: the model class must subclass
``mlflow.pyfunc.PythonModel`` and the file must call ``mlflow.models.set_model`` when MLflow executes it,
and saving the model directory (``build_model_dir``) belongs with the class it saves.

Contract of ``predict`` (see ``SIGNATURE``): one input row per request ``(seed, label, n)``; ``label``
is a class id, or -1 for "none" (unconditional models) / "cycle over all classes" (conditional ones).
The output has one row per image: ``row`` (index of the input row), ``seed``, ``label`` (the class
actually used, -1 when unconditional), ``index`` (0..n-1) and ``png`` (the image as a base64 PNG), so
any JSON client can read it. Row ``(seed, label, n)`` gives exactly the images of ``ganforge generate
--seed seed --labels label --n n`` on the same weights.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

MODEL_CODE = Path(__file__)  # logged by reference: MLflow runs this file to load the model
MAX_IMAGES = 4096  # per request: a typo in n must not exhaust the serving machine's memory
NO_LABEL = -1

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "seed"), ColSpec("long", "label"), ColSpec("long", "n")]),
    outputs=Schema([ColSpec("long", "row"), ColSpec("long", "seed"), ColSpec("long", "label"),
                    ColSpec("long", "index"), ColSpec("string", "png")]),
)  # fmt: skip


def png_base64(image: np.ndarray) -> str:
    """(H, W, C) uint8 -> base64 text of a PNG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """Inverse of ``png_base64``: (H, W, C) uint8."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))
    return a[..., None] if a.ndim == 2 else a


class GeneratorModel(PythonModel):
    """A ganforge generator rebuilt from ``meta.json`` + ``generator.safetensors``."""

    def load_context(self, context) -> None:
        """Rebuild the network from the spec and load the weights (safetensors: no unpickling)."""
        from safetensors.torch import load_file

        from ganforge.checkpoints import load_weights
        from ganforge.models import ModelSpec, build_generator

        meta = json.loads(open(context.artifacts["meta"]).read())  # noqa: SIM115 - tiny file
        self.spec = ModelSpec(**meta["spec"])
        self.generator = build_generator(self.spec).eval()
        load_weights(self.generator, load_file(context.artifacts["generator"]), "registered model")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Images for each (seed, label, n) row; see the module docstring for the columns."""
        from ganforge.inference import sample
        from ganforge.pictures import to_uint8

        rows = model_input[["seed", "label", "n"]].astype("int64").itertuples(index=False)
        requests = list(rows)
        total = sum(int(r.n) for r in requests)
        if any(r.n < 1 for r in requests) or total > MAX_IMAGES:
            raise ValueError(f"n must be >= 1 per row and at most {MAX_IMAGES} images per request (got {total})")
        out: dict[str, list[int | str]] = {"row": [], "seed": [], "label": [], "index": [], "png": []}
        for i, (seed, label, n) in enumerate(requests):
            z, labels = self._latents(int(seed), int(label), int(n))
            images = to_uint8(sample(self.generator, z, labels))
            used = labels.tolist() if labels is not None else [NO_LABEL] * n
            for k in range(n):
                out["row"].append(i)
                out["seed"].append(int(seed))
                out["label"].append(int(used[k]))
                out["index"].append(k)
                out["png"].append(png_base64(images[k]))
        return pd.DataFrame(out).astype({c: "int64" for c in ("row", "seed", "label", "index")})

    def _latents(self, seed: int, label: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents and labels exactly as ``ganforge.inference.generate`` draws them."""
        from ganforge.inference import latents

        spec = self.spec
        z = latents(seed, n, spec.latent_dim)[:n]
        if not spec.conditional:
            if label != NO_LABEL:
                raise ValueError(f"label {label} given but the model is not conditional; send label -1")
            return z, None
        if label != NO_LABEL and not 0 <= label < spec.num_classes:
            raise ValueError(f"label {label} out of range: use 0..{spec.num_classes - 1} or -1 for all classes")
        pool = [label] if label != NO_LABEL else list(range(spec.num_classes))
        return z, torch.tensor([pool[i % len(pool)] for i in range(n)])


def build_model_dir(checkpoint: Path, meta: dict, dest: Path) -> Path:
    """Save the pyfunc of ``checkpoint``'s generator (``meta["weights"]``: ema or raw) into ``dest``."""
    from ganforge.inference import WEIGHTS

    src = dest.with_name(dest.name + "-src")
    src.mkdir(parents=True)
    shutil.copy(checkpoint / f"{WEIGHTS[meta['weights']]}.safetensors", src / "generator.safetensors")
    (src / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    example = pd.DataFrame({"seed": [0], "label": [-1], "n": [2]})
    mlflow.pyfunc.save_model(
        dest, python_model=str(MODEL_CODE), signature=SIGNATURE, input_example=example,
        artifacts={"generator": str(src / "generator.safetensors"), "meta": str(src / "meta.json")},
        pip_requirements=_requirements(),
    )  # fmt: skip
    shutil.rmtree(src)
    return dest


def _requirements() -> list[str]:
    """Pinned from this environment; MLflow's inference would load the model in a subprocess."""
    from importlib.metadata import version

    import ganforge

    pkgs = ["torch", "safetensors", "numpy", "pandas", "pillow", "pydantic", "mlflow"]
    return [f"{p}=={version(p)}" for p in pkgs] + [f"ganforge=={ganforge.__version__}"]


# Models from code: MLflow executes this file when the model loads and serves the object set here.
mlflow.models.set_model(GeneratorModel())
