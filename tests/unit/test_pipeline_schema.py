"""``PipelineParams`` is the one schema of the pipeline's parameters (issue 15): the pipeline signature is
made from it, every component input a pipeline parameter feeds agrees with it, one encode/decode pair
carries "unset", and exposing one more training flag takes two edits."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import yaml
from pydantic import Field

import components
from ganforge.pipeline import params
from ganforge.pipeline.params import PipelineParams, decode, encode, train_flags, unset
from ganforge.pipeline.runner import compile_pipeline, load_pipeline
from ganforge.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_signature_is_the_schema():
    """Names, order, types and (encoded) defaults of the pipeline function are PipelineParams' fields."""
    sig = inspect.signature(load_pipeline().pipeline_func)
    defaults = PipelineParams().arguments()
    assert list(sig.parameters) == list(PipelineParams.model_fields)
    for name, p in sig.parameters.items():
        assert p.default == defaults[name] and type(p.default) is p.annotation, name
    assert sig.parameters["limit"].annotation is int and sig.parameters["input"].annotation is str
    assert sig.parameters["max_fid"].annotation is float


KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from ganforge.pipeline import golden

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


def test_every_training_flag_reaches_the_train_component_and_trainconfig():
    train_params = inspect.signature(components.train.python_func).parameters
    assert set(train_flags()) == {"preset", "model", "epochs", "steps", "seed"}
    for name in train_flags():
        assert name in train_params, f"components/train.py has no parameter {name}"
        assert name in TrainConfig.model_fields, f"{name} is marked TRAIN_FLAG but is no TrainConfig field"


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


def test_exposing_a_training_flag_is_two_edits(tmp_path, monkeypatch):
    """Edit 1: a TRAIN_FLAG field in PipelineParams. Edit 2: its parameter in components/train.py. Nothing
    else: the pipeline signature, the train task's wiring, the encoding and train_step follow."""
    import ganforge.pipeline.runner as runner
    import pipelines.gan_pipeline as gan_pipeline

    class Extended(PipelineParams):  # edit 1
        batch_size: int | None = Field(None, ge=1, description="Global batch size. None: the preset's.",
                                       json_schema_extra=params.TRAIN_FLAG)

    monkeypatch.setattr(params, "PipelineParams", Extended)
    monkeypatch.setattr(runner, "PipelineParams", Extended)  # the module's own import of the name
    source = (ROOT / "components" / "train.py").read_text()
    edited = source.replace("epochs: int = 0, steps: int = 0)", "epochs: int = 0, steps: int = 0, batch_size: int = 0)")
    assert edited != source  # edit 2
    path = tmp_path / "train_extended.py"
    path.write_text(edited)
    spec = importlib.util.spec_from_file_location("train_extended", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(gan_pipeline, "train", module.train)

    out = tmp_path / "p.yaml"
    compile_pipeline(out)
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
