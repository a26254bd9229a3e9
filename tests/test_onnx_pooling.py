"""The ONNX encoder reads a Pooling module in either config form: the legacy `pooling_mode_*`
bools and sentence-transformers 6's `pooling_mode`, which every folder saved by the current
sentence-transformers has (a fine-tuned checkpoint), and pools as sentence-transformers does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import MODEL

from hnmine.packaged.resolve import resolve_model
from hnmine.retrievers.encoders import resolve_backend
from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder
from hnmine.text import document_text


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The packaged MiniLM saved again by the installed sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("saved") / "model"
    SentenceTransformer(resolve_model(MODEL), device="cpu").save(str(folder))
    return folder


def _pooling_config(folder):
    modules = json.loads((folder / "modules.json").read_text())
    return folder / modules[1]["path"] / "config.json"


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_a_folder_saved_by_current_sentence_transformers_encodes_through_onnx(saved, tmp_path, adi_rows, mode):
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config_file = _pooling_config(folder)
    config = json.loads(config_file.read_text())
    assert "pooling_mode" in config  # the current form, not the legacy bools
    config_file.write_text(json.dumps(config | {"pooling_mode": mode}))
    assert resolve_backend("auto", str(folder), "cpu") == "onnx"
    docs, _, _ = adi_rows
    texts = [document_text(d.get("title"), d.get("text")) for d in docs]
    encoder = OnnxSentenceEncoder(str(folder), max_length=None, batch_size=16, normalize=True)
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=16, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=2e-5)


def test_pooling_the_onnx_encoder_cannot_do_takes_torch(saved, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config_file = _pooling_config(folder)
    config = json.loads(config_file.read_text())
    for changed in ({"pooling_mode": "weightedmean"}, {"pooling_mode": ["mean", "max"]}, {"include_prompt": False}):
        config_file.write_text(json.dumps(config | changed))
        assert resolve_backend("auto", str(folder), "cpu") == "torch", changed
