"""``llm4all mcp serve``: LocalDocs search as MCP tools, for other assistants.

Two tools: ``list_collections`` (names, folders, documents) and
``search_documents(query, collections=None, k=5)`` — the same hybrid search
the chat uses (BM25 and embeddings, fused), each hit with its text, file,
location and score. Over stdio (the default, what Claude Desktop and editors
start) or Streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs


def localdocs_server(localdocs: LocalDocs | None = None) -> Any:
    """An ``MCPServer`` offering LocalDocs search (``localdocs``: default, the user's database)."""
    from mcp.server.mcpserver import MCPServer

    from llm4all.localdocs.context import shared_localdocs

    app = MCPServer(
        "llm4all-localdocs",
        instructions="Search the user's local documents (llm4all LocalDocs collections).",
    )

    def docs() -> LocalDocs:
        return localdocs if localdocs is not None else shared_localdocs()

    @app.tool()
    def list_collections() -> list[dict[str, Any]]:
        """The LocalDocs collections: name, folders and how many documents each holds."""
        return [
            {"name": c.name, "folders": list(c.folders), "documents": c.files, "chunks": c.chunks}
            for c in docs().list()
        ]

    @app.tool()
    def search_documents(
        query: str, collections: list[str] | None = None, k: int = 5
    ) -> list[dict[str, Any]]:
        """Search the user's documents; the best k excerpts, each with its file and location.

        collections: the collections to search (default: all of them).
        """
        d = docs()
        names = collections or d.names()
        hits = d.search(names, query, k=max(1, min(k, 50))) if names else []
        return [
            {
                "text": h.text,
                "path": h.path,
                "location": h.location,
                "heading": h.heading,
                "collection": h.collection,
                "score": round(h.score, 4),
            }
            for h in hits
        ]

    return app
