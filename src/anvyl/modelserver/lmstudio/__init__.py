"""LM Studio's websocket API (the subset its Python SDK uses), beside the OpenAI routes.

`routes.router` holds the greeting route and one websocket per LM Studio namespace; `session`
serves a socket; `protocol` holds the frames, model infos and prediction configs.
"""
