"""Label Studio ML backend served by Ray Serve (``jobs/serve.py``).

``config`` (flags), ``labelconfig`` (class names from a project's labelling XML), ``fetch``
(task image URLs, allow-listed), ``backend`` (setup/predict, batched), ``app`` (the HTTP
protocol on FastAPI). See ``docs/serve.md``.
"""
