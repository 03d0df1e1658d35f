"""``PipelineParams`` is the one schema of the pipeline's parameters (issue 15): the pipeline function writes
them out (names, order, KFP types, encoded defaults) and a test holds the two equal, every component input a
pipeline parameter feeds agrees with it, the train component takes exactly the training flags, one
encode/decode pair carries "unset", and exposing one more training flag takes the edits the schema names."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import Field

import components
import pipelines.gan_pipeline as gan_pipeline
from ganforge.pipeline import params
from ganforge.pipeline.params import PipelineParams, decode, encode, train_flags, unset
from ganforge.pipeline.runner import compile_pipeline
from ganforge.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
# the train component's inputs that are not training flags: artifacts and the run's plumbing
TRAIN_PLUMBING = {"dataset", "generator", "metrics", "work_dir", "gpus", "experiment", "parent_run_id",
                  "pipeline_run_id"}


def kfp_type(field) -> type:
    """The type a field has as a KFP parameter: ``int | None`` -> int."""
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def signature_mismatches(func, schema: type[PipelineParams] = PipelineParams) -> list[str]:
    """How the pipeline function's written signature differs from ``schema``: names and order, KFP types,
    encoded defaults; empty when they agree."""
    sig = inspect.signature(func)
    defaults = encode({k: f.default for k, f in schema.model_fields.items()})
    out = []
    if list(sig.parameters) != list(schema.model_fields):
        out.append(f"parameters {list(sig.parameters)} != fields {list(schema.model_fields)}")
    for name, field in schema.model_fields.items():
        p = sig.parameters.get(name)
        if p is not None and (p.annotation is not kfp_type(field) or p.default != defaults[name]
                              or type(p.default) is not p.annotation):
            out.append(f"{name}: {p.annotation.__name__} = {p.default!r}, the schema's "
                       f"{kfp_type(field).__name__} = {defaults[name]!r}")
    if sig.return_annotation is not str:
        out.append(f"returns {sig.return_annotation}, not str")
    return out


def training_flag_mismatches(component, schema: type[PipelineParams] = PipelineParams) -> list[str]:
    """How the train component differs from ``schema``'s training flags: its inputs other than the plumbing,
    their encoded defaults, and the flags its body passes on to ``train_step`` by name."""
    flags = [k for k, f in schema.model_fields.items() if (f.json_schema_extra or {}).get("train_flag")]
    defaults = encode({k: f.default for k, f in schema.model_fields.items()})
    sig = inspect.signature(component.python_func)
    taken = set(sig.parameters) - TRAIN_PLUMBING
    out = [f"component inputs {sorted(taken)} != training flags {sorted(flags)}"] if taken != set(flags) else []
    out += [f"{k} defaults to {sig.parameters[k].default!r}, the schema's {defaults[k]!r}" for k in taken & set(flags)
            if sig.parameters[k].default not in (inspect.Parameter.empty, defaults[k])]
    body = ast.parse(inspect.getsource(component.python_func))
    call = next(n for n in ast.walk(body) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "train_step")
    passed = {kw.arg for kw in call.keywords if isinstance(kw.value, ast.Name) and kw.value.id == kw.arg}
    return out + [f"{k} is not passed on to train_step as {k}={k}" for k in flags if k not in passed]


def test_pipeline_signature_is_the_schema():
    """Names, order, types and (encoded) defaults of the pipeline function are PipelineParams' fields."""
    func = gan_pipeline.build().pipeline_func
    assert "__signature__" not in vars(func)  # written in the source, not made at run time
    assert signature_mismatches(func) == []
    sig = inspect.signature(func)
    assert sig.parameters["limit"].annotation is int and sig.parameters["input"].annotation is str
    assert sig.parameters["max_fid"].annotation is float and sig.parameters["limit"].default == 0


@pytest.mark.parametrize("name, change, said", [
    ("limit", {"default": 1}, "limit: int = 1, the schema's int = 0"),
    ("max_fid", {"annotation": int, "default": 100}, "max_fid: int = 100, the schema's float = 100.0"),
    ("preset", {"default": ""}, "preset: str = '', the schema's str = 'digits-tiny'"),
    ("steps", {"name": "n_steps"}, "parameters"),
])  # fmt: skip
def test_a_drifted_pipeline_parameter_is_named(name, change, said):
    real = inspect.signature(gan_pipeline.build().pipeline_func)

    def drifted():
        pass

    drifted.__signature__ = real.replace(parameters=[p.replace(**change) if p.name == name else p
                                                     for p in real.parameters.values()])
    assert any(said in m for m in signature_mismatches(drifted)), signature_mismatches(drifted)


def test_the_train_component_takes_exactly_the_training_flags():
    assert set(train_flags()) == {"preset", "model", "epochs", "steps", "seed"}
    assert training_flag_mismatches(components.train) == []
    for name in train_flags():
        assert name in TrainConfig.flat_fields(), f"{name} is marked TRAIN_FLAG but is no TrainConfig field"


KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from tests import golden

    return next(yaml.safe_load_all(golden.write(tmp_path_factory.mktemp("schema") / "p.yaml").read_text()))


def test_component_inputs_fed_by_a_parameter_agree_with_it(compiled):
    """Every component input wired to a pipeline parameter (through any nesting) has the parameter's type,
    and its default when the component declares one: the schema's default, encoded."""
    defaults = PipelineParams().arguments()
    comps, seen = compiled["components"], set()

    def walk(dag: dict) -> None:
        for task in dag["tasks"].values():
            comp = comps[task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"])
            for inp, src in task.get("inputs", {}).get("parameters", {}).items():
                field = src.get("componentInputParameter", "").removeprefix("pipelinechannel--")
                if field not in defaults or inp.startswith("pipelinechannel--"):
                    continue
                declared = comp["inputDefinitions"]["parameters"][inp]
                assert declared["parameterType"] == KFP_TYPES[type(defaults[field])], (task["taskInfo"], inp)
                if "defaultValue" in declared:
                    assert declared["defaultValue"] == defaults[field], (task["taskInfo"], inp)
                seen.add(field)

    walk(compiled["root"]["dag"])
    assert seen == set(defaults), f"parameters no step reads: {set(defaults) - seen}"


def test_compiled_train_task_takes_the_training_flags_from_the_pipeline_parameters(compiled):
    train = compiled["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    for name in train_flags():
        assert train[name]["componentInputParameter"] == f"pipelinechannel--{name}"


def test_one_encode_decode_pair():
    assert [unset(k) for k in ("input", "preset", "limit", "epochs")] == ["", "", 0, 0]
    values = PipelineParams(model="dcgan", preset=None, epochs=5).model_dump()
    encoded = encode(values)
    assert (encoded["preset"], encoded["limit"], encoded["model"], encoded["seed"]) == ("", 0, "dcgan", 0)
    # decoding is per field: 0 is a value of seed and gpus, "unset" only for optional parameters
    assert {k: decode(k, v) for k, v in encoded.items()} == values
    assert decode("seed", 0) == 0 and decode("steps", 0) is None and decode("steps", 7) == 7


def test_steps_read_unset_values_through_decode(tmp_path, monkeypatch):
    """train_step passes decoded flags on: "" and 0 are "not set" (the preset's), never a value."""
    import ganforge.training
    from ganforge.data.ingest import ingest
    from ganforge.pipeline.steps import train_step
    from ganforge.training.config import PRESETS
    from ganforge.training.loop import TrainResult

    data = ingest("digits", str(tmp_path / "data"), image_size=16, limit=64).uri
    seen = {}

    def fake_train(config, context=None):
        seen["config"] = config
        ckpt = Path(config.output) / "ckpt-000001"
        ckpt.mkdir(parents=True)
        return TrainResult(output=config.output, checkpoint=str(ckpt), step=1, run_id=None, seconds=1.0,
                           images_per_second=1.0)

    monkeypatch.setattr(ganforge.training, "train", fake_train, raising=False)
    train_step(data, str(tmp_path / "work"), str(tmp_path / "model"), gpus=0, experiment="e", parent_run_id="p",
               pipeline_run_id="kfp-1", **{**encode(dict.fromkeys(train_flags())), "preset": "digits-tiny",
                                           "seed": 3})
    c = seen["config"]
    assert (c.preset, c.model, c.steps, c.seed) == ("digits-tiny", PRESETS["digits-tiny"].overrides["model"],
                                                     PRESETS["digits-tiny"].overrides["steps"], 3)
    with pytest.raises(Exception, match="not training flags"):
        train_step(data, str(tmp_path / "work"), str(tmp_path / "m2"), gpus=0, experiment="e", parent_run_id="p",
                   pipeline_run_id="kfp-2", preset="digits-tiny", lr_g=0.1)


def _edited(path: Path, name: str, tmp_path: Path, *edits: tuple[str, str]):
    """The module at ``path`` with each (old, new) text replaced once, loaded under ``name``."""
    source = path.read_text()
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    (tmp_path / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exposing_a_training_flag_takes_the_edits_the_schema_names(tmp_path, monkeypatch):
    """Edit 1: a TRAIN_FLAG field in PipelineParams; until the pipeline and the train component take it, the
    checks above name it. Edits 2 and 3: its parameter in the pipeline and in components/train.py, each
    passing it on. Then the encoding, the train task's wiring and train_step follow."""
    import ganforge.pipeline.runner as runner

    class Extended(PipelineParams):  # edit 1
        batch_size: int | None = Field(None, ge=1, description="Global batch size. None: the preset's.",
                                       json_schema_extra=params.TRAIN_FLAG)

    monkeypatch.setattr(params, "PipelineParams", Extended)
    monkeypatch.setattr(runner, "PipelineParams", Extended)  # the module's own import of the name
    assert any("batch_size" in m for m in signature_mismatches(gan_pipeline.build().pipeline_func, Extended))
    assert any("batch_size" in m for m in training_flag_mismatches(components.train, Extended))

    passed_on = ("steps=steps, seed=seed)", "steps=steps, seed=seed, batch_size=batch_size)")
    module = _edited(ROOT / "components" / "train.py", "train_extended", tmp_path,  # edit 2
                     ("epochs: int = 0, steps: int = 0)", "epochs: int = 0, steps: int = 0, batch_size: int = 0)"),
                     passed_on)
    pipeline = _edited(ROOT / "pipelines" / "gan_pipeline.py", "gan_pipeline_extended", tmp_path,  # edit 3
                       ('work_dir: str = "/workspace/runs",', 'work_dir: str = "/workspace/runs", batch_size: int = 0,'),
                       passed_on)
    monkeypatch.setattr(pipeline, "train", module.train)
    assert signature_mismatches(pipeline.build().pipeline_func, Extended) == []
    assert training_flag_mismatches(module.train, Extended) == []

    out = tmp_path / "p.yaml"
    compile_pipeline(out, build=pipeline.build)
    root = next(yaml.safe_load_all(out.read_text()))
    assert root["root"]["inputDefinitions"]["parameters"]["batch_size"]["defaultValue"] == 0
    train = root["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train["batch_size"]["componentInputParameter"] == "pipelinechannel--batch_size"
    assert params.check_params({"batch_size": 16}).arguments()["batch_size"] == 16
    assert params.check_params({"batch_size": 0}).batch_size is None  # KFP's "unset" read back

    # and the component hands it to training by name
    import ganforge.training
    from ganforge.data.ingest import ingest
    from ganforge.training.loop import TrainResult

    seen = {}

    def fake_train(config, context=None):
        seen["config"] = config
        ckpt = Path(config.output) / "ckpt-000001"
        ckpt.mkdir(parents=True)
        return TrainResult(output=config.output, checkpoint=str(ckpt), step=1, run_id=None, seconds=1.0,
                           images_per_second=1.0)

    class Artifact:
        def __init__(self, path, metadata=None):
            self.path, self.metadata = str(path), metadata or {}

        def log_metric(self, k, v):
            self.metadata[k] = v

    monkeypatch.setattr(ganforge.training, "train", fake_train, raising=False)
    data = ingest("digits", str(tmp_path / "data"), image_size=16, limit=64)
    module.train.python_func(
        dataset=Artifact(tmp_path / "ds", {"uri": data.uri, "fingerprint": data.fingerprint}),
        generator=Artifact(tmp_path / "gen"), metrics=Artifact(tmp_path / "m"), work_dir=str(tmp_path / "w"),
        seed=0, gpus=0, experiment="e", parent_run_id="p", pipeline_run_id="kfp-3", preset="digits-tiny",
        batch_size=16)  # fmt: skip
    assert seen["config"].batch_size == 16
