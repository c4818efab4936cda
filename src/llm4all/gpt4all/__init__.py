"""The original GPT4All Python API on llm4all: old scripts run after one changed import.

    from llm4all.gpt4all import GPT4All      # was: from gpt4all import GPT4All
    model = GPT4All("qwen2.5-coder-0.5b-instruct")
    with model.chat_session():
        print(model.generate("What is the capital of France?", max_tokens=50))

It follows the signatures, defaults and behaviours of the ``gpt4all`` 2.8.2
wheel (``generate`` with ``streaming``/``callback``, ``chat_session``,
``current_chat_session``, ``list_models``/``retrieve_model``/``download_model``)
and keeps two older forms alive: the 1.x ``chat_completion`` and the nomic-era
``GPT4All().open()``/``prompt()``. Underneath everything is llm4all's: the model
store instead of ``~/.cache/gpt4all``, the catalog instead of ``models3.json``,
the model's own chat template inside a chat session (unless a 2.8-style
``{0}``/``{1}`` template is given), and KV-cache prefix reuse instead of
``n_past`` bookkeeping. ``docs/gpt4all-compat.md`` lists what differs.

Modules: :mod:`.formats` (pure prompt/parameter/catalog translations),
:mod:`.loading` (finding and downloading models, the device choice, the
errors), :mod:`.gpt4all` (the class).
"""

from llm4all.embeddings import Embed4All
from llm4all.gpt4all.formats import (
    ConfigType,
    MessageType,
    ResponseCallbackType,
    append_extension_if_missing,
    empty_response_callback,
)
from llm4all.gpt4all.gpt4all import GPT4All
from llm4all.gpt4all.gpu import GPT4AllGPU
from llm4all.gpt4all.loading import GPUUnavailable, ModelNotFoundError, ModelNotInstalledError

__all__ = [
    "ConfigType",
    "Embed4All",
    "GPT4All",
    "GPT4AllGPU",
    "GPUUnavailable",
    "MessageType",
    "ModelNotFoundError",
    "ModelNotInstalledError",
    "ResponseCallbackType",
    "append_extension_if_missing",
    "empty_response_callback",
]
