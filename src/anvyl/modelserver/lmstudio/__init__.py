"""LM Studio's websocket API (the subset its Python SDK uses), beside the OpenAI routes.

`routes.router` holds the greeting route and one websocket per LM Studio namespace; `framing`
serves the socket's hello and frames (the gateway's relay uses it too); `session` answers calls
and channels from the engine; `protocol` holds the frames, model infos and prediction configs.
"""
