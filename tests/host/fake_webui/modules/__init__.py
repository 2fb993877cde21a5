"""Test double of AUTOMATIC1111 WebUI v1.10.1's ``modules`` package (only what PromptScope touches).

Signatures, attribute names, call order and batch layouts follow v1.10.1; everything else is a miniature.
Put ``tests/host/fake_webui`` on ``sys.path`` (the ``fake_webui`` fixture does) and import ``modules.*``.
"""
