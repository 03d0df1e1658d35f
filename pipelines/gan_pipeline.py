"""The GAN pipeline: ingest -> train -> (evaluate || audit) -> gate -> register, one MLflow parent run.

Every user choice is a parameter of ``gan_pipeline``, written out below with its KFP type and default: the
fields of ``ganforge.pipeline.params.PipelineParams``, same names, order and defaults, with an optional
parameter "" or 0 when unset (KFP cannot carry None; see ``ganforge.pipeline.params.encode``).
``tests/unit/test_pipeline_schema.py`` holds the two equal. Cluster wiring lives here and only here: the
image, the GPU node pool of the training task, its resources and ``/dev/shm``, the checkpoint volume and
the credential Secrets. It is fixed at compile time, so ``build(cluster)`` defines the pipeline over one
``ClusterConfig``.
"""

from kfp import dsl, kubernetes

from components import audit, evaluate, finish_run, gate, ingest, register, start_run, train
from ganforge.pipeline.params import ClusterConfig

PIPELINE_NAME = "ganforge-gan"
WORKSPACE = "/workspace"  # mount path of the ClusterConfig.workspace_pvc volume
# Secret key -> environment variable; the values never appear in the pipeline spec.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
           "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}
MLFLOW_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}


def _wire(task: dsl.PipelineTask, cluster: ClusterConfig, s3: bool = True, workspace: bool = False):
    """Image, credentials from Secrets (optional keys: a cluster may use IAM instead) and no cache."""
    task.set_container_image(cluster.image)
    kubernetes.set_image_pull_policy(task, cluster.pull_policy)
    kubernetes.use_secret_as_env(task, cluster.mlflow_secret, MLFLOW_KEYS, optional=True)
    if s3:
        kubernetes.use_secret_as_env(task, cluster.s3_secret, S3_KEYS, optional=True)
    if workspace:
        kubernetes.mount_pvc(task, cluster.workspace_pvc, WORKSPACE)
    task.set_caching_options(False)  # steps log to MLflow: a cached step would skip its run
    return task


def _on_gpus(task: dsl.PipelineTask, cluster: ClusterConfig, gpus) -> None:
    """The GPU node pool: accelerator type and limit, node selector, toleration, requests, /dev/shm."""
    # KFP turns the accelerator type into the container's resource-limit name, so it must be the resource
    # (nvidia.com/gpu), not the GPU model; the model picks the node pool through the node selector below.
    task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(gpus)
    task.set_cpu_request(cluster.cpu_request).set_memory_request(cluster.memory_request)
    kubernetes.add_node_selector(task, cluster.gpu_node_label, cluster.gpu_type)
    kubernetes.add_toleration(task, key=cluster.gpu_taint, operator="Exists", effect="NoSchedule")
    # DataLoader workers and NCCL share tensors through /dev/shm; the container default is 64 MB.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=cluster.shm_size)


def build(cluster: ClusterConfig | None = None):
    """The pipeline for ``cluster`` (default ``ClusterConfig()``): ``gan_pipeline`` below, wired for it.

    Its parameters are ``PipelineParams``' fields; "" or 0 is an optional one left unset (the source's own
    input, every image, the preset's model, epochs or steps, no backbone weights).
    """
    cluster = cluster or ClusterConfig()

    @dsl.pipeline(name=PIPELINE_NAME, description="ingest -> train -> evaluate || audit -> gate -> register")
    def gan_pipeline(
        source: str = "digits", input: str = "", dataset: str = "/workspace/datasets/digits",  # ingest
        image_size: int = 32, limit: int = 0, audit_fraction: float = 0.0,
        preset: str = "digits-tiny", model: str = "", epochs: int = 0, steps: int = 0,  # train
        seed: int = 0, gpus: int = 0,  # seed: also of evaluate's and the audit's latents
        n: int = 1000, backbone: str = "pixels", backbone_weights: str = "",  # evaluate
        audit_n: int = 500,  # audit
        max_fid: float = 100.0, model_name: str = "ganforge-generator",  # gate, register
        experiment: str = "ganforge", work_dir: str = "/workspace/runs",  # MLflow; checkpoints, kept on retries
    ) -> str:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # The exit handler may not take outputs of the tasks it guards: it finds the parent run by the KFP run id.
        finish = _wire(finish_run(experiment=experiment, pipeline_run_id=run_id), cluster, s3=False)
        finish.set_display_name("close MLflow parent run")
        finish.set_caching_options(False)
        with dsl.ExitHandler(finish, name="tracked"):
            start = _wire(start_run(experiment=experiment, pipeline_run_id=run_id, dataset=dataset, preset=preset,
                                    model_name=model_name, max_fid=max_fid), cluster, s3=False)
            start.set_display_name("open MLflow parent run")
            parent = start.output
            ing = _wire(ingest(source=source, dataset=dataset, image_size=image_size, input=input, limit=limit,
                               audit_fraction=audit_fraction), cluster, workspace=True)
            ing.set_caching_options(True)  # cached on its inputs; ingest itself also reuses an identical dataset
            tr = _wire(train(dataset=ing.outputs["dataset_out"], work_dir=work_dir, gpus=gpus, experiment=experiment,
                             parent_run_id=parent, pipeline_run_id=run_id, preset=preset, model=model, epochs=epochs,
                             steps=steps, seed=seed), cluster, workspace=True)
            tr.set_retry(num_retries=cluster.train_retries, backoff_duration="60s", backoff_factor=2.0)
            _on_gpus(tr, cluster, gpus)
            common = dict(dataset=ing.outputs["dataset_out"], generator=tr.outputs["generator"], seed=seed,
                          experiment=experiment, parent_run_id=parent, pipeline_run_id=run_id)
            ev = _wire(evaluate(n=n, backbone=backbone, backbone_weights=backbone_weights, **common), cluster,
                       workspace=True)
            au = _wire(audit(n=audit_n, **common), cluster, workspace=True)
            decision = _wire(gate(fid=ev.outputs["Output"], max_fid=max_fid, audit_verdict=au.outputs["verdict"],
                                  audit_reasons=au.outputs["reasons"], parent_run_id=parent), cluster, s3=False)
            # One unnamed bool output: kfp.local resolves a condition on a task's "Output" but not on named outputs.
            with dsl.If(decision.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
                _wire(register(train_run_id=tr.outputs["Output"], model_name=model_name, parent_run_id=parent,
                               pipeline_run_id=run_id), cluster)
        return finish.output  # "FINISHED: <the gate's decision>" or "FAILED: <why>"

    return gan_pipeline
