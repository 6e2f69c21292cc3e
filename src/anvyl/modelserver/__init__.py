"""Anvyl's model server: one MLX model behind the OpenAI and LM Studio REST APIs.

It stands alone (no imports from the control plane): the model image runs it, and the control
plane knows only its URL and `/health`.
"""
