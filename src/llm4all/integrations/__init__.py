"""Adapters that let other frameworks use llm4all's models: :mod:`.langchain`."""
