"""The OpenAI-compatible HTTP server (``llm4all serve``).

Example::

    from llm4all.server import ServerSettings, create_app
    app = create_app(ServerSettings(model="smollm2-135m-instruct", parallel=8))

See ``docs/server.md`` for the endpoints, the fields honoured and the security model.
"""

from llm4all.server.app import create_app, serve
from llm4all.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
