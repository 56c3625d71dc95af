"""The runner's web console (``pipelines run --console``): see docs/console.md.

``app.Console`` serves the pages under ``/console`` on the runner's HTTP
port; ``sections`` is what a plugin contributes through the
``register_console`` hook; ``views`` the engine's own pages; ``static``
the vendored front end (htmx, uPlot) and the console's script and style.
"""
