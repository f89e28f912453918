"""The model registry on disk: atomic versions that only grow, hashed files and movable aliases.

Layout::

    <root>/<name>/<version>/model.joblib, manifest.json, reference.parquet, reports ...
    <root>/<name>/aliases.json      {"production": {"version": 3, "history": [1, 2]}, ...}

A version is staged in a hidden folder and renamed into place in one step, so readers never see
half a version. This module is light (no scikit-learn) because the service imports it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from core.decision import Decision as DecisionOf
from core.decision import of as decided_by
from core.digits import whole_number
from core.errors import RegistryError
from core.features import FeatureKind

MANIFEST = "manifest.json"
MODEL_FILE = "model.joblib"
REFERENCE_FILE = "reference.parquet"
ALIASES_FILE = "aliases.json"
SIGNING_ENV = "SERVEWATCH_SIGNING_KEY"
ALIASES = ("production", "staging")
STAGING_PREFIX = ".staging-"

# Columns the reference sample adds beside the input features.
PREDICTION_COL = "sw_prediction"
LABEL_COL = "sw_label"
PROBA_PREFIX = "sw_proba__"


class Section(BaseModel):
    """A manifest section: keys it does not declare are kept, and it is written with its keys in
    the order they were given or first set (a manifest file reads as it was built)."""

    model_config = ConfigDict(extra="allow")
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _given_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Remember the order of the keys the section was read or built from."""
        section = handler(data)
        if isinstance(data, dict) and isinstance(section, Section) and not section._order:
            section._order = [str(k) for k in data]
        return section

    def __setattr__(self, name: str, value: Any) -> None:
        """Set a field; a key set for the first time goes after the others."""
        super().__setattr__(name, value)
        if not name.startswith("_") and name not in self._order:
            self._order.append(name)

    @model_serializer(mode="wrap")
    def _in_order(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        """The section's keys in their order (given, then set; undeclared order: declared); with
        `exclude_unset`, also the fields left at a default that was changed in place since."""
        out: dict[str, Any] = handler(self)
        if info.exclude_unset:
            out.update(self._changed_defaults(str(info.mode), out))
        place = {k: i for i, k in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda kv: place.get(kv[0], len(place))))

    def _changed_defaults(self, mode: str, written: dict[str, Any]) -> dict[str, Any]:
        """Fields never given or set whose value is no longer their default: a default section
        (or list, dict) changed in place, as `manifest.model.family = "hgb"` on a manifest built
        without `model`. `exclude_unset` alone would drop the change; written after the others,
        a section as its own `body` (its changed defaults included)."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            if name in written or name in self.model_fields_set or field.is_required():
                continue
            value, default = getattr(self, name), field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                same = isinstance(default, BaseModel) and value.model_dump() == default.model_dump()
                if not same:
                    out[name] = value.model_dump(mode=mode, exclude_unset=True)
            elif value != default:
                out[name] = self.model_dump(mode=mode, include={name})[name]
        return out

    def body(self) -> dict[str, Any]:
        """The section as its JSON object holds it: the keys given or set, in their order, and
        any default changed in place since (`_changed_defaults`)."""
        return self.model_dump(exclude_unset=True)


class FeatureSchema(Section):
    """One input feature as the model expects it at serving time."""

    name: str
    kind: FeatureKind
    dtype: str
    nullable: bool
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None
    required_for: str | None = None
    """`postprocess`: a sensitive attribute a post-processed model reads at prediction time."""


class Objective(Section):
    """The metric a version is judged by and how it scored."""

    metric: str
    min_test_score: float | None = None
    test_score: float | None = None
    passed: bool | None = None
    scored_on: Literal["test", "sample"] = "test"
    """`sample` for imported versions: scored on the import sample, not a held-out test split."""


class Refit(Section):
    """The manifest's `model.refit`: whether the published model was refitted on every row."""

    all_rows: bool = False


class ModelInfo(Section):
    """Which estimator a version holds (the manifest's `model` section holds more)."""

    family: str | None = None
    refit: Refit | None = None
    """None in versions published before the refit on all rows (issue 32)."""
    incremental_update: dict[str, Any] | None = None
    """Rows and seconds of an incremental update (versions made by one)."""


class Decision(Section):
    """How a classifier's probabilities become its predicted class (`core.decision.decide`).

    `threshold` None: the most probable class (argmax). A number (binary only): the positive
    class when its probability is >= threshold. Older manifests have no `decision`: argmax."""

    threshold: float | None = None
    positive_class: Any = None
    """The positive class as a JSON value of `label_type` (binary classifiers)."""
    objective: str = "argmax"
    """What the threshold was chosen for: argmax, f1, precision_at, recall_at, cost, given."""
    why: str = ""


class ReferenceSample(Section):
    """What `reference.parquet` was drawn from (manifest `reference`; absent before issue 33,
    when it was drawn from the train and validation rows: in-sample predictions)."""

    drawn_from: str
    """test, test+out_of_fold (test rows topped up with out-of-fold predictions of train and
    validation rows), import_sample, or train+validation."""
    unseen: bool
    """True: every row's prediction comes from a model that never trained on it."""
    rows: dict[str, int] = {}
    predicted_by: str | None = None
    """`tested model`: a version refitted on all rows publishes its tested model's reference."""


class RowFingerprints(Section):
    """The manifest's `data.row_fingerprints`: the file of row hashes and what they cover."""

    file: str
    columns: list[str]
    rows: dict[str, int] = {}


class DataRecord(Section):
    """The manifest's `data`: source, rows, fingerprint and split of the training data."""

    row_fingerprints: RowFingerprints | None = None
    """None in versions published before row fingerprints (and imported ones)."""


IN_SAMPLE_REFERENCE = ReferenceSample(drawn_from="train+validation", unseen=False)
"""What a manifest without `reference` means: the older releases' in-sample sample."""

MANIFEST_SCHEMA = 3
"""Bumped when a field is added that readers rely on; older manifests still load (every field
added since version 1 has a default that means what the older release did). 3: `decision`."""


class Manifest(Section):
    """What the service and monitoring read from manifest.json, typed. The file holds more
    (reports, config, lineage) for people and `models show`; code reads only these fields."""

    schema_version: int = 1
    name: str
    version: int
    created_at: str
    task: Literal["classification", "regression"]
    target: str
    classes: list[Any] | None = None
    """In `predict_proba` column order, as JSON values of `label_type`."""
    label_type: Literal["string", "integer", "boolean", "float"] | None = None
    """The type answers and feedback labels carry; None in manifests older than it (read as
    string for classifiers, float for regressors)."""
    features: list[FeatureSchema]
    objective: Objective | None = None
    model: ModelInfo = ModelInfo()
    personal_data: list[str] = []
    """Columns clients may send that are personal data: never features, redacted in the log."""
    metrics: dict[str, Any] = {}
    decision: Decision | None = None
    """The decision threshold (schema 3); None in older manifests and for regressors: argmax."""
    files: dict[str, str] = {}
    reference: ReferenceSample = IN_SAMPLE_REFERENCE
    """What reference.parquet was drawn from; older manifests: train+validation (in-sample)."""
    # What training records for people, `models show`, the model card and later runs:
    data: DataRecord | None = None
    config: dict[str, Any] | None = None
    """The training config as run (a retrain starts from it); None for imported versions."""
    fairness: Any = None
    champion: Any = None
    error_analysis: Any = None
    explanations: Any = None
    data_quality: Any = None
    mitigation: dict[str, Any] | None = None
    libraries: dict[str, str] = {}
    git_commit: str | None = None
    training_seconds: float | None = None
    lineage: dict[str, Any] | None = None
    """Where a retrained version came from (monitoring's retrain)."""
    gate: dict[str, Any] | None = None
    """A retrained version's promotion gate verdict."""
    plots: list[str] = []

    @property
    def threshold(self) -> float | None:
        """The binary decision threshold, None for argmax."""
        return self.decision.threshold if self.decision is not None else None

    @property
    def positive_index(self) -> int:
        """The positive class's column in `predict_proba` (the last class without a decision)."""
        return self.decided[1]

    @property
    def decided(self) -> DecisionOf:
        """(threshold, positive class column) as `core.decision.decide` takes them."""
        decision = self.decision.model_dump() if self.decision is not None else None
        return decided_by(decision, self.classes)


class ManifestDraft(Manifest):
    """A manifest before `Registry.publish` gives it its name, version and files."""

    name: str = ""
    version: int = 0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _staging_dir(model_dir: Path) -> Path:
    """A new hidden folder with the mode the umask gives any folder (not mkdtemp's 0700).

    A version must be readable by whoever serves it: another uid, another machine after a copy.
    """
    for _attempt in range(100):
        path = model_dir / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RegistryError(f"could not create a staging folder in {model_dir}")


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    # Round-trip through JSON so the signed form is exactly what readers will parse.
    plain = json.loads(json.dumps(body, default=str))
    return json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()


def sign(manifest: dict[str, Any], key: str) -> str:
    """HMAC-SHA256 of the manifest (without its signature); it covers every file's SHA-256."""
    return hmac.new(key.encode(), _canonical(manifest), hashlib.sha256).hexdigest()


def verify_signature(manifest: dict[str, Any], key: str) -> str | None:
    """None when the manifest is signed with `key`, else the problem."""
    given = manifest.get("signature")
    if not isinstance(given, str):
        return "manifest is not signed and a signing key is configured"
    if not hmac.compare_digest(given, sign(manifest, key)):
        return "manifest signature does not match (tampered, or signed with another key)"
    return None


@dataclass(frozen=True)
class VerifiedVersion:
    """A version read once: the manifest parsed from the bytes its signature was checked on,
    and the bytes of the files asked for, the same bytes that were hashed. Load from these,
    never from the folder again: a file swapped on disk after the check is never read."""

    manifest: Manifest
    raw: dict[str, Any]
    contents: dict[str, bytes]
    problems: list[str]
    """Empty when the signature (with a key) and every listed file's SHA-256 match."""


def read_verified(
    version_dir: Path, *, signing_key: str | None, keep: Collection[str] = (MODEL_FILE,)
) -> VerifiedVersion:
    """Read `manifest.json` once, check its signature (when a key is set) over those bytes and
    parse the manifest from the same bytes; read every listed file once, hash it, and keep the
    bytes of the files in `keep` (a kept file the manifest does not list is a problem).

    Raises FileNotFoundError without a manifest, ValueError (or pydantic's) when it is not a
    valid one."""
    data = (version_dir / MANIFEST).read_bytes()
    raw: dict[str, Any] = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("the manifest is not a JSON object")
    manifest = Manifest.model_validate_json(data)
    problems: list[str] = []
    if signing_key:
        bad = verify_signature(raw, signing_key)
        if bad:
            problems.append(bad)
    if not manifest.files:
        problems.append("manifest lists no files")
    contents: dict[str, bytes] = {}
    for rel, expected in manifest.files.items():
        path = version_dir / rel
        try:
            if rel in keep:
                body = path.read_bytes()
                digest = hashlib.sha256(body).hexdigest()
            else:
                body, digest = b"", sha256_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            problems.append(f"{rel}: missing")
            continue
        if digest != expected:
            problems.append(f"{rel}: SHA-256 does not match the manifest")
        elif rel in keep:
            contents[rel] = body
    for rel in keep:
        if rel not in manifest.files and rel == MODEL_FILE:
            problems.append(f"{rel}: not listed in the manifest")
    return VerifiedVersion(manifest, raw, contents, problems)


def verify_files(version_dir: Path, manifest: Manifest) -> list[str]:
    """Differences between the folder and the manifest's SHA-256 list (empty: all good)."""
    problems = []
    if not manifest.files:
        problems.append("manifest lists no files")
    for rel, expected in manifest.files.items():
        path = version_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{rel}: SHA-256 does not match the manifest")
    return problems


def _as_written(staged: Manifest, written: dict[str, Any]) -> None:
    """`staged` (the typed manifest a publish wrote) given what `written` added: schema version,
    name, version, files and the signature, which it loses when the version is unsigned."""
    staged.schema_version, staged.name = written["schema_version"], written["name"]
    staged.version, staged.files = written["version"], written["files"]
    if "signature" in written:
        setattr(staged, "signature", written["signature"])  # noqa: B010 (an undeclared key)
    elif "signature" in (staged.model_extra or {}):
        delattr(staged, "signature")


def split_ref(text: str) -> tuple[str, str | None]:
    """NAME, NAME:VERSION or NAME@ALIAS as (name, ref) for `Registry.resolve`: ("m", "3"),
    ("m", "@staging") or ("m", None)."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return name, "@" + alias
    if ":" in text:
        name, version = text.split(":", 1)
        return name, version
    return text, None


class Registry:
    """Read and write access to one registry root."""

    def __init__(self, root: Path | str, *, signing_key: str | None = None) -> None:
        self.root = Path(root)
        self.signing_key = signing_key if signing_key is not None else os.environ.get(SIGNING_ENV)

    # -- reading -------------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.name.isascii() and p.name.isdigit() and (p / MANIFEST).is_file()
        )

    def path(self, name: str, version: int) -> Path:
        return self.root / name / str(version)

    def manifest(self, name: str, version: int) -> Manifest:
        path = self.path(name, version) / MANIFEST
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"model {name} has no version {version}") from None

    def read_verified(
        self, name: str, version: int, *, keep: Collection[str] = (MODEL_FILE,)
    ) -> VerifiedVersion:
        """The version read once and checked against its manifest (and signature, with a key);
        see `read_verified`. RegistryError when there is no such version."""
        try:
            return read_verified(self.path(name, version), signing_key=self.signing_key, keep=keep)
        except FileNotFoundError as exc:
            if exc.filename == str(self.path(name, version) / MANIFEST):
                raise RegistryError(f"model {name} has no version {version}") from None
            raise

    def raw_manifest(self, name: str, version: int) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path(name, version) / MANIFEST).read_text())
        return data

    def aliases(self, name: str) -> dict[str, dict[str, Any]]:
        path = self.root / name / ALIASES_FILE
        if not path.is_file():
            return {}
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data

    def alias_version(self, name: str, alias: str) -> int | None:
        entry = self.aliases(name).get(alias)
        return int(entry["version"]) if entry else None

    def resolve(self, name: str, ref: str | None = None) -> int:
        """`3` -> 3, `@staging` -> its version; None -> production if set, else the newest."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise RegistryError(f"no model named {name!r} in {self.root} (models: {known})")
        if ref is None:
            prod = self.alias_version(name, "production")
            return prod if prod is not None else versions[-1]
        if ref.startswith("@"):
            found = self.alias_version(name, ref[1:])
            if found is None:
                raise RegistryError(f"model {name} has no alias {ref[1:]!r}")
            return found
        if whole_number(ref) not in versions:
            raise RegistryError(f"model {name} has no version {ref!r} (versions: {versions})")
        return int(ref)

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        with (model_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, name: str, stage: Callable[[Path], dict[str, Any] | Manifest]) -> int:
        """Stage a version with `stage(folder) -> manifest`, hash its files, rename it into place.

        The version number is taken at the rename: two concurrent runs never share one, and a
        crash leaves only a hidden staging folder that the next publish removes. A typed
        manifest returned by `stage` gains the `schema_version`, `name`, `version`, `files` and
        `signature` (removed when unsigned) written: its `body()` is what manifest.json holds.
        """
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        self._prune_stale_staging(model_dir)
        tmp = _staging_dir(model_dir)
        try:
            staged = stage(tmp)
            manifest = staged.body() if isinstance(staged, Manifest) else staged
            files = {
                str(p.relative_to(tmp)): sha256_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file() and p.name != MANIFEST
            }
            for _attempt in range(1000):
                version = (max(self.versions(name), default=0)) + 1
                manifest.update(
                    schema_version=MANIFEST_SCHEMA, name=name, version=version, files=files
                )
                manifest.pop("signature", None)
                Manifest.model_validate(manifest)  # the contract holds before anyone reads it
                if self.signing_key:
                    manifest["signature"] = sign(manifest, self.signing_key)
                _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=2, default=str))
                try:
                    os.rename(tmp, model_dir / str(version))
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue
                    raise
                if isinstance(staged, Manifest):
                    _as_written(staged, manifest)
                return version
            raise RegistryError(f"could not find a free version number for {name}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _prune_stale_staging(model_dir: Path, older_than_s: float = 6 * 3600) -> None:
        now = time.time()
        for p in model_dir.glob(f"{STAGING_PREFIX}*"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > older_than_s:
                    shutil.rmtree(p, ignore_errors=True)

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point `alias` at `version`; returns the version it pointed to before."""
        if alias not in ALIASES:
            raise RegistryError(f"alias must be one of {ALIASES}, not {alias!r}")
        if version not in self.versions(name):
            raise RegistryError(f"model {name} has no version {version}")
        with self._locked(name):
            data = self.aliases(name)
            entry = data.get(alias, {"version": None, "history": []})
            previous = entry["version"]
            if previous is not None and previous != version:
                entry["history"] = [*entry["history"], previous]
            entry["version"] = version
            entry["changed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            data[alias] = entry
            _fsync_write(self.root / name / ALIASES_FILE, json.dumps(data, indent=2))
        return int(previous) if previous is not None else None

    def clear_alias(self, name: str, alias: str) -> int | None:
        """Remove `alias`; returns the version it pointed to (None if it was not set)."""
        with self._locked(name):
            data = self.aliases(name)
            entry = data.pop(alias, None)
            _fsync_write(self.root / name / ALIASES_FILE, json.dumps(data, indent=2))
        return int(entry["version"]) if entry and entry.get("version") is not None else None

    def rollback(self, name: str, alias: str = "production") -> int:
        """Move `alias` back to the version it pointed to before; returns that version."""
        with self._locked(name):
            data = self.aliases(name)
            entry = data.get(alias)
            if not entry or not entry.get("history"):
                raise RegistryError(f"model {name}: alias {alias!r} has no earlier version")
            entry["version"] = entry["history"].pop()
            entry["changed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _fsync_write(self.root / name / ALIASES_FILE, json.dumps(data, indent=2))
            return int(entry["version"])
