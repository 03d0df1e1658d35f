"""The KFP pipeline's logic: parameters, the gate, the parent MLflow run, step wrappers, compile/run/submit.

Importable and tested without KFP running: ``components/`` and ``pipelines/`` only wire these
functions into tasks. Submodules are imported on use (``ganforge.pipeline.runner`` pulls in kfp).
"""
