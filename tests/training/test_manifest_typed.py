"""The manifest is typed from build to file (issue 29): what is written is what was written."""

import json
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.compose import make_column_transformer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.registry import Manifest, ManifestDraft, Registry, verify_signature
from tests.conftest import fast_config
from tests.data import classification_frame
from training.importer import import_pipeline
from training.train import run_training

BEFORE = Path(__file__).parents[1] / "fixtures" / "manifest-before-29"
PRE_CORE = Path(__file__).parents[1] / "fixtures" / "registry-pre-core"
VOLATILE = {
    "created_at",
    "git_commit",
    "training_seconds",
    "seconds",
    "after_search_seconds",
    "source",  # the data file's temporary path
    "path",
    "libraries",
    "imported_from",
}
"""Keys whose values depend on the clock, the machine or a temporary folder: compared as keys."""
ADDED_SINCE = {
    ("config", "publish"): "baseline_folds",
    ("reference",): "baseline",
    ("model", "search", "budget"): "shortfall",
    ("config", "preprocessing"): "categorical_splits",
}
"""Keys added after the fixtures were published (the realised-performance baseline and its
setting), each the last of its object: checked there, then left out of the comparison."""


def without_added(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` without ADDED_SINCE's keys, each asserted to be the last of its object where
    it is (an imported version has no baseline)."""
    out = json.loads(json.dumps(manifest))
    for path, key in ADDED_SINCE.items():
        obj = out
        for part in path:
            obj = obj.get(part) or {}
        if key in obj:
            assert list(obj)[-1] == key, (path, key)
            obj.pop(key)
    return out


def same_shape(old: Any, new: Any, where: str = "") -> list[str]:
    """Where `new` differs from `old`: keys (in order), list lengths, JSON types, values."""
    if isinstance(old, dict) and isinstance(new, dict):
        if list(old) != list(new):
            return [f"{where}: keys {list(old)} != {list(new)}"]
        out: list[str] = []
        for k in old:
            if k in VOLATILE or (where == ".config" and k == "data") or where == ".files":
                continue
            out += same_shape(old[k], new[k], f"{where}.{k}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items != {len(new)}"]
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in same_shape(a, b, f"{where}[{i}]")
        ]
    if type(old) is not type(new):
        return [f"{where}: {type(old).__name__} != {type(new).__name__}"]
    if isinstance(old, float):
        return [] if new == pytest.approx(old, rel=1e-6) else [f"{where}: {old} != {new}"]
    return [] if old == new else [f"{where}: {old!r} != {new!r}"]


def test_a_trained_version_writes_the_manifest_the_untyped_code_wrote(
    trained_registry: Path,
) -> None:
    written = Registry(trained_registry).raw_manifest("demo", 1)
    before = json.loads((BEFORE / "trained.json").read_text())
    assert same_shape(before, without_added(written)) == []
    assert set(written["files"]) == set(before["files"])


def test_an_imported_version_writes_the_manifest_the_untyped_code_wrote(tmp_path: Path) -> None:
    frame = classification_frame()
    pipe = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["x1"]), (OneHotEncoder(handle_unknown="ignore"), ["color"])
        ),
        SGDClassifier(loss="log_loss", random_state=0),
    ).fit(frame[["x1", "color"]], frame["label"])
    joblib.dump(pipe, tmp_path / "p.joblib")
    frame[["x1", "color", "label"]].to_csv(tmp_path / "sample.csv", index=False)
    reg = Registry(tmp_path / "reg")
    sample = str(tmp_path / "sample.csv")
    import_pipeline(
        tmp_path / "p.joblib",
        name="imp",
        sample=sample,
        target="label",
        registry=reg,
        threshold=0.4,
    )
    before = json.loads((BEFORE / "imported.json").read_text())
    assert same_shape(before, without_added(reg.raw_manifest("imp", 1))) == []


def test_the_shape_comparison_sees_a_moved_key_a_type_and_a_value() -> None:
    before = json.loads((BEFORE / "imported.json").read_text())
    moved = {"task": before["task"], **before}
    assert same_shape(before, moved)
    assert same_shape(before, {**before, "label_type": None})
    assert same_shape(before, {**before, "target": "other"})
    assert same_shape(before, {**before, "created_at": "then"}) == []


@pytest.mark.parametrize(
    "path",
    [BEFORE / "trained.json", BEFORE / "imported.json", *PRE_CORE.rglob("manifest.json")],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_a_manifest_read_typed_writes_back_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    manifest = Manifest.model_validate_json(text)
    assert json.dumps(manifest.body(), indent=2, default=str) == text.rstrip("\n")


def test_a_key_set_later_is_written_after_the_others_and_an_unset_default_not_at_all() -> None:
    before = json.loads((BEFORE / "imported.json").read_text())
    manifest = Manifest.model_validate(before)
    manifest.gate = {"passed": True}
    manifest.reference.predicted_by = "tested model"
    body = manifest.body()
    assert list(body)[-1] == "gate" and list(body["reference"])[-1] == "predicted_by"
    assert "lineage" not in body and "refit" not in body["model"]
    assert manifest.model.refit is None and manifest.plots == []


def test_publishing_a_draft_fills_it_in_and_an_invalid_one_writes_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    before = json.loads((BEFORE / "imported.json").read_text())
    kept = {k: v for k, v in before.items() if k not in {"name", "version", "files"}}
    draft = ManifestDraft.model_validate(kept)

    def stage(folder: Path) -> ManifestDraft:
        pd.DataFrame({"a": [1]}).to_parquet(folder / "reference.parquet")
        (folder / "model.joblib").write_bytes(b"x")
        return draft

    assert reg.publish("m", stage) == 1
    assert (draft.name, draft.version, sorted(draft.files)) == (
        "m",
        1,
        ["model.joblib", "reference.parquet"],
    )
    assert reg.raw_manifest("m", 1) == draft.body()
    draft.features[0].kind = "nonsense"  # type: ignore[assignment]
    with pytest.raises(ValidationError):
        reg.publish("m", stage)
    assert reg.versions("m") == [1] and not list((tmp_path / "m").glob(".staging-*"))


def test_a_section_left_at_its_default_and_changed_in_place_is_written() -> None:
    """`exclude_unset` wrote only the sections given or set: a change made inside a default
    section (`model`, `reference`) or list was silently dropped from manifest.json."""
    manifest = Manifest(
        name="m", version=1, created_at="now", task="classification", target="y", features=[]
    )
    assert not {"model", "reference", "plots"} & set(manifest.body())
    manifest.model.family = "hgb"
    manifest.reference.predicted_by = "tested model"
    manifest.plots.append("roc.png")
    body = manifest.body()
    assert body["model"] == {"family": "hgb"}
    assert body["reference"] == {
        "drawn_from": "train+validation",
        "unseen": False,
        "predicted_by": "tested model",
    }
    assert list(body)[-3:] == ["model", "reference", "plots"] and body["plots"] == ["roc.png"]
    assert json.loads(manifest.model_dump_json(exclude_unset=True)) == body
    again = Manifest.model_validate(body)
    assert again.model.family == "hgb" and again.reference.predicted_by == "tested model"
    fresh = Manifest(
        name="n", version=2, created_at="now", task="classification", target="y", features=[]
    )
    assert fresh.model.family is None and fresh.reference.predicted_by is None  # not shared


def test_a_signed_version_returns_the_manifest_it_wrote_signature_included(
    tmp_path: Path,
) -> None:
    """The typed manifest a publish wrote gains its signature (and loses one when unsigned)."""
    before = json.loads((BEFORE / "imported.json").read_text())
    draft = ManifestDraft.model_validate(
        {k: v for k, v in before.items() if k not in {"name", "version", "files"}}
    )

    def stage(folder: Path) -> ManifestDraft:
        (folder / "model.joblib").write_bytes(b"x")
        return draft

    signed = Registry(tmp_path, signing_key="secret")
    assert signed.publish("m", stage) == 1
    written = signed.raw_manifest("m", 1)
    assert isinstance(written.get("signature"), str)
    assert draft.body() == written and list(draft.body()) == list(written)
    assert verify_signature(draft.body(), "secret") is None
    unsigned = Registry(tmp_path, signing_key="")
    assert unsigned.publish("m", stage) == 2
    assert "signature" not in draft.body() and draft.body() == unsigned.raw_manifest("m", 2)


def test_run_training_returns_the_signed_manifest_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "clf.csv"
    classification_frame(200).to_csv(path, index=False)
    cfg = fast_config(data=str(path), target="label", models=["linear"])
    reg = Registry(tmp_path / "reg", signing_key="secret")
    result = run_training(cfg, reg)
    assert result.version == 1 and "signature" in result.manifest
    assert result.manifest == reg.raw_manifest(cfg.name, 1)
    assert reg.read_verified(cfg.name, 1).problems == []
