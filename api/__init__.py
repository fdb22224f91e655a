"""`balabol serve`: an OpenAI-compatible HTTP server over the runtime's scheduler.

The folder holds no generation logic: `app.py` maps OpenAI's routes onto
`runtime.scheduler.Scheduler` jobs, `protocol.py` reads requests and writes OpenAI's JSON,
`models.py` loads each requested (artifact, format) once, `cli.py` is the command.

Example: `BALABOL_API_KEY=secret balabol serve --host 0.0.0.0 --port 8000`.
"""
