"""Other APIs on the same engine: each dialect translates its request into the internal chat
request the OpenAI route builds (same prompt, same constraints, same limits) and renders the
engine's events in its own response and stream shapes."""
