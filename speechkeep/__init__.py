"""speechkeep: turn a pretrained text LLM into a speech LLM without losing what it knew.

Data flows one way: data -> features -> models -> strategy -> train -> evaluate -> report.
"""

__version__ = "0.1.0"

from speechkeep.errors import SpeechkeepError  # noqa: F401
