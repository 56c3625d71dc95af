"""pipelines-jsonl: a pipelines plugin adding the ``jsonl`` target type.

pipelines finds it through the ``pipelines`` entry point group (see
pyproject.toml), which names ``pipelines_jsonl.plugin``.
"""
