"""Built-in plugins of pipelines.

Each built-in registers through the ``pipelines`` entry point group exactly as a
third-party package would. Target plugins arrive with the bus (issue 3).
"""
