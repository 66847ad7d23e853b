"""A live web dashboard for a classify or stream job's output folder (``cryoclass serve``).

``service.Dashboard`` reads the job's outputs into one JSON state (classes, progress, history,
parameters, selection); ``app.create_app`` serves it with the page in ``static/``;
``launch`` runs the server (in the foreground, or beside a running job).
"""
