"""A version is loaded from the bytes that were verified: the manifest is read once (signature
checked and parsed from the same bytes), model.joblib is read once (hashed and unpickled from the
same bytes). A file swapped on disk between the check and the load is never used."""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import SGDClassifier

import core.registry
from core.registry import MODEL_FILE, Registry
from service.inference.model import LoadedModel, ModelLoadError
from tests.data import classification_frame
from training.config import Preprocessing
from training.data import FeatureKinds

KEY = "signing-key-0123456789abcdef"
KINDS = FeatureKinds(numeric=["x1", "x2"], categorical=["color"], datetime=[])


class Evil:
    """A pickle that runs code when loaded: it creates the directory `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


def publish(root: Path, key: str | None) -> Registry:
    from training.pipeline import build_pipeline

    frame = classification_frame(200)
    pipe = build_pipeline(
        KINDS, SGDClassifier(loss="log_loss", random_state=0), family="linear", prep=Preprocessing()
    )
    pipe.fit(frame[KINDS.all], frame["label"])

    def stage(folder: Path) -> dict[str, Any]:
        joblib.dump(pipe, folder / MODEL_FILE)
        frame[KINDS.all].to_parquet(folder / "reference.parquet")
        return {
            "created_at": "2026-01-01T00:00:00Z",
            "task": "classification",
            "target": "label",
            "classes": ["no", "yes"],
            "label_type": "string",
            "features": [
                {"name": "x1", "kind": "numeric", "dtype": "float", "nullable": True},
                {"name": "x2", "kind": "numeric", "dtype": "float", "nullable": True},
                {
                    "name": "color",
                    "kind": "categorical",
                    "dtype": "str",
                    "nullable": True,
                    "categories": ["blue", "green", "red"],
                },
            ],
        }

    reg = Registry(root, signing_key=key)
    reg.publish("m", stage)
    return reg


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_model_file_swapped_after_its_hash_is_never_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    reg = publish(tmp_path / "reg", key)
    model_path = reg.path("m", 1) / MODEL_FILE
    genuine = hashlib.sha256(model_path.read_bytes()).hexdigest()
    marker = tmp_path / "evil-ran"
    joblib.dump(Evil(marker), tmp_path / "evil.joblib")
    swaps: list[str] = []
    real = hashlib.sha256

    class SwapAfterHashing:
        """hashlib.sha256 for the registry: once model.joblib's bytes have been hashed, the
        file on disk is replaced by another pickle (an attacker, or a racing writer)."""

        def __init__(self, data: bytes = b"") -> None:
            self._h = real(data)

        def update(self, data: bytes) -> None:
            self._h.update(data)

        def __getattr__(self, name: str) -> Any:  # digest_size, copy, ... (for hmac)
            return getattr(self._h, name)

        def hexdigest(self) -> str:
            digest = self._h.hexdigest()
            if digest == genuine and not swaps:
                os.replace(tmp_path / "evil.joblib", model_path)
                swaps.append(digest)
            return digest

    monkeypatch.setattr(core.registry, "hashlib", types.SimpleNamespace(sha256=SwapAfterHashing))
    model = LoadedModel.load(reg, "m", 1)
    assert swaps, "the hook never ran: the model file was not hashed"
    assert not marker.exists(), "the pickle swapped in after the hash check was unpickled"
    assert type(model.pipeline).__name__ == "Pipeline"
    assert model.predict_columns({"x1": [0.5], "x2": [3.0], "color": ["red"]}).predictions


def test_manifest_swapped_between_its_reads_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old loader parsed the manifest (its file hashes) from one read and checked the
    signature on another: a manifest listing another pickle's hash, served to the first read
    only, loaded that pickle under a valid signature."""
    reg = publish(tmp_path / "reg", KEY)
    folder = reg.path("m", 1)
    marker = tmp_path / "evil-ran"
    joblib.dump(Evil(marker), folder / MODEL_FILE)  # on disk: another pickle
    manifest_path = folder / "manifest.json"
    genuine = manifest_path.read_bytes()
    raw = json.loads(genuine)
    raw["files"][MODEL_FILE] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    forged = json.dumps(raw).encode()  # its signature no longer matches
    reads: list[Path] = []
    read_bytes, read_text = Path.read_bytes, Path.read_text

    def first_read_forged(path: Path) -> bytes:
        if path == manifest_path:
            reads.append(path)
            return forged if len(reads) == 1 else genuine
        return read_bytes(path)

    def text(path: Path, *args: Any, **kwargs: Any) -> str:
        if path == manifest_path:
            return first_read_forged(path).decode()
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", first_read_forged)
    monkeypatch.setattr(Path, "read_text", text)
    with pytest.raises(ModelLoadError, match="signature does not match"):
        LoadedModel.load(reg, "m", 1)
    assert len(reads) == 1, f"manifest.json read {len(reads)} times"
    assert not marker.exists()


def test_a_model_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    reg = publish(tmp_path / "reg", None)
    path = reg.path("m", 1) / "manifest.json"
    raw = json.loads(path.read_bytes())
    del raw["files"][MODEL_FILE]
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="model.joblib: not listed"):
        LoadedModel.load(reg, "m", 1)


def test_the_reference_sample_is_read_from_the_verified_bytes(tmp_path: Path) -> None:
    """The fast path's check reads the reference rows that were hashed, not the file again."""
    reg = publish(tmp_path / "reg", None)
    ref = reg.path("m", 1) / "reference.parquet"
    checked = reg.read_verified("m", 1, keep=(MODEL_FILE, "reference.parquet"))
    assert checked.problems == []
    assert checked.contents["reference.parquet"] == ref.read_bytes()
    pd.read_parquet(ref)  # a valid sample


def test_a_model_needing_a_missing_package_is_named_from_the_bytes(tmp_path: Path) -> None:
    """load_model_bytes keeps load_model's mapping: the missing package is named."""
    reg = publish(tmp_path / "reg", None)
    folder = reg.path("m", 1)
    (folder / MODEL_FILE).write_bytes(b"cnot_a_real_package_sw\nThing\n.")
    raw = json.loads((folder / "manifest.json").read_bytes())
    raw["files"][MODEL_FILE] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="needs the Python package 'not_a_real_package_sw'"):
        LoadedModel.load(reg, "m", 1)
