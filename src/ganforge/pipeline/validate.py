"""Every check the pipeline's steps make on their parameters, made once before the first step.

A pipeline run that a later step would refuse (a model that cannot build the ingested size, a seed
preset at another size, a registry name MLflow cannot carry, a backbone without weights) must fail in
seconds, before ingest, with the step's own message: ``check_run`` calls the functions the steps call,
on what the parameters alone say about the data (its side from ``image_size``; its channels and classes
do not decide whether the networks build, see ``_facts``). What only the data can say (its real size when
ingest keeps a source's own, its number of images) the steps still check themselves.

``ganforge pipeline run --local`` and ``pipeline submit`` call it on the run's parameters, ``pipeline
compile`` on the defaults the package carries; a user error that only a step can see ends that step with
``USER_ERROR_EXIT`` and is never retried (``ganforge.pipeline.steps.user_error_step``).
"""

from __future__ import annotations

from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.pipeline.params import PipelineParams, train_flags

# What the parameters cannot say about the data: the model checks use the larger channel count (RGB: the
# parameter count is an upper bound) and two classes (a label embedding's size never decides a build).
_CHANNELS, _CLASSES = 3, 2


def check_run(params: PipelineParams, *, local: bool) -> list[str]:
    """Raise the first error a step of this run would fail on; return notes worth printing.

    Args:
        params: the run's parameters (already validated one by one by ``check_params``).
        local: the steps run on this machine, so local paths (``--input``, ``--backbone-weights``,
            the dataset folder) can be checked too; on a cluster they are paths inside the image or volume.

    Raises:
        GanforgeError: the step's own message, prefixed with the step's name.
    """
    notes: list[str] = []
    for step, check in (("ingest", _ingest), ("train", _train), ("evaluate", _evaluate), ("audit", _audit),
                        ("register", _register)):
        try:
            notes += check(params, local) or []
        except GanforgeError as exc:
            raise GanforgeError(f"{step} would fail: {exc}") from None
        except ValueError as exc:  # pydantic's ValidationError: a step's config refuses a value
            raise GanforgeError(f"{step} would fail: {_one_line(exc)}") from None
    return notes


def _one_line(exc: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from ganforge.pipeline.params import one_line

        return one_line(exc)
    return " ".join(str(exc).split())


def _ingest(p: PipelineParams, local: bool) -> None:
    from ganforge.data.config import IngestConfig
    from ganforge.data.ingest import check_options

    check_options(IngestConfig(source=p.source, output=p.dataset, input=p.input, image_size=p.image_size,
                               limit=p.limit))
    if local and p.input is not None and not Path(p.input).exists():
        raise GanforgeError(f"--input {p.input} does not exist; give the {p.source} source's files")
    if local and "://" not in p.dataset:
        from ganforge.outputs import check_output_dir

        check_output_dir(p.dataset, "--dataset")


def _train(p: PipelineParams, local: bool) -> list[str]:
    from ganforge.training.config import check_preset_size, preset_size_note, resolve_config
    from ganforge.training.preflight import DataFacts, check_model

    # the train step's own call (``steps.train_step``), with a placeholder output: the folder is per run
    config = resolve_config({"dataset": p.dataset, "output": "/nonexistent/ganforge-check", "nproc": max(1, p.gpus),
                             **{k: getattr(p, k) for k in train_flags()}})
    check_preset_size(config, p.image_size)
    facts = DataFacts(n_train=p.limit or 0, channels=_CHANNELS, height=p.image_size, width=p.image_size,
                      class_names=[str(k) for k in range(_CLASSES)], fingerprint="")
    check_model(config, facts)
    if p.limit is not None and p.limit < config.batch_size:
        raise GanforgeError(f"--limit {p.limit} keeps fewer training images than --batch-size {config.batch_size}; "
                            "raise --limit or lower --batch-size")
    note = preset_size_note(config, p.image_size)
    return [note] if note else []


def _evaluate(p: PipelineParams, local: bool) -> None:
    from ganforge.evaluate import EvalConfig
    from ganforge.metrics.features import weights_file

    EvalConfig(checkpoint="models:/check/1", dataset=p.dataset, n=p.n, seed=p.seed, backbone=p.backbone,
               backbone_weights=p.backbone_weights, track=False)
    if local or p.backbone_weights is None:  # a path in the image can only be checked there
        weights_file(p.backbone, p.backbone_weights)


def _audit(p: PipelineParams, local: bool) -> None:
    from ganforge.audit.run import AuditConfig

    AuditConfig(checkpoint="models:/check/1", dataset=p.dataset, n=p.audit_n, seed=p.seed, track=False)


def _register(p: PipelineParams, local: bool) -> None:
    from ganforge.registry.versions import check_model_name

    check_model_name(p.model_name)
