"""The datalake: chats that users chose to share, as training data.

The service side (``llm4all datalake serve``) is :mod:`.service` over
:mod:`.storage`; the payload both sides agree on is :mod:`.payload`; the
client side (opt-in, the queue, scrubbing) lives in :mod:`.client`,
:mod:`.queue` and :mod:`.scrub`.
"""
