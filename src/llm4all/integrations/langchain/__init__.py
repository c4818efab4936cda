"""LangChain integration: chat and completion models, embeddings and LocalDocs retrieval.

Example::

    from llm4all.integrations.langchain import ChatLlm4all, Llm4allEmbeddings, LocalDocsRetriever

    chat = ChatLlm4all(model="qwen2.5-coder-0.5b-instruct", temperature=0)
    chat.invoke("Hello!")                                     # in this process
    ChatLlm4all(base_url="http://127.0.0.1:4891/v1")          # or an llm4all server

Installed with ``pip install 'llm4all[langchain]'``; see docs/langchain.md.
Old ``langchain_community`` GPT4All code: :mod:`.compat`.
"""

from llm4all.integrations.langchain.chat_models import ChatLlm4all
from llm4all.integrations.langchain.compat import GPT4All, GPT4AllEmbeddings
from llm4all.integrations.langchain.embeddings import Llm4allEmbeddings
from llm4all.integrations.langchain.llms import Llm4allLLM
from llm4all.integrations.langchain.retrievers import LocalDocsRetriever

__all__ = [
    "ChatLlm4all",
    "GPT4All",
    "GPT4AllEmbeddings",
    "Llm4allEmbeddings",
    "Llm4allLLM",
    "LocalDocsRetriever",
]
