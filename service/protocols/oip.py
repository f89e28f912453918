"""Open Inference Protocol (KServe v2) REST tensors to servewatch instances, and answers back.

A request carries one tensor per feature (shape `[n]` or `[n, 1]`, as MLServer's pandas codec
sends a data frame), or one 2-D numeric tensor `[n, features]` in schema order when every
feature is numeric. Tensors come as JSON `data` or, with Triton's binary tensor extension, as
raw bytes after the JSON header. The instances this builds go through the same validator as
`/v1`. Problems raise `Malformed` (400: the request breaks the protocol) or `Rejected` (422: it
breaks the model's schema), each message naming the input and the rule. See docs/protocols.md.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from operator import itemgetter
from types import NoneType
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import orjson

from core.digits import whole_number
from core.errors import ServewatchError
from core.registry import FeatureSchema
from service.errors import MAX_PROBLEMS
from service.inference.model import LoadedModel, Outputs
from service.validation import Validator, short_repr

BINARY_HEADER = "inference-header-content-length"

FLOATS = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
INTEGERS = {
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
NUMPY_TYPES = {**FLOATS, **INTEGERS, "BOOL": "?"}
DATATYPES = {*NUMPY_TYPES, "BYTES"}
NUMBERS = {*FLOATS, *INTEGERS, "BOOL"}
# The tensor datatypes each feature kind accepts (a category may be sent as integer codes, as
# /v1 accepts a number for a category; a timestamp is ISO 8601 text).
ACCEPTS: dict[str, frozenset[str]] = {
    "numeric": frozenset(NUMBERS),
    "categorical": frozenset({"BYTES", *INTEGERS}),
    "datetime": frozenset({"BYTES"}),
}
# The datatype a feature kind is described with in the model's metadata.
DESCRIBED = {"numeric": "FP64", "categorical": "BYTES", "datetime": "BYTES"}
# The datatype of the `predict` output, by the version's label type.
PREDICTION_TYPES = {"string": "BYTES", "integer": "INT64", "boolean": "BOOL", "float": "FP64"}
OUTPUTS = ("predict", "predict_proba", "prediction_id")


class Malformed(ServewatchError):
    """The request breaks the protocol itself (400)."""


class Rejected(ServewatchError):
    """The request breaks the model's schema (422): one (input, rule, message) per problem."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        super().__init__(describe(problems))
        self.problems = problems


def describe(problems: list[tuple[str, str, str]]) -> str:
    """One message naming every problem's input and rule."""
    shown = "; ".join(f"input {name!r} [{rule}]: {msg}" for name, rule, msg in problems[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"{len(problems)} problem(s): {shown}{more}"


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]  # flat, row-major; from binary data already in Python types
    binary: bool = False
    types: set[type] | None = None  # the JSON data's value types, when already looked at


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None  # the outputs asked for; None: all


def decode(
    raw: bytes | bytearray, header_length: str | None, validator: Validator
) -> tuple[InferRequest, list[Any]]:
    """The request and its rows as /v1 instances, for the version's validator.

    The common request (JSON, one flat `[n]` tensor per feature, the datatypes the features
    take) goes straight to rows with a few C calls per input; anything else takes the careful
    path, which names every problem."""
    if header_length is None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        inputs = body.get("inputs") if type(body) is dict else None
        if type(inputs) is list and type(body.get("id", "")) is str:
            rows = _common_rows(inputs, _accepts(validator))
            if rows is not None:
                wanted = _requested(body.get("outputs"))
                return InferRequest(body.get("id"), [], wanted), rows
    req = parse_request(raw, header_length)
    return req, instances(req, validator.features, validator.known)


_ACCEPTED: WeakKeyDictionary[Validator, dict[str, dict[str, frozenset[type]]]] = WeakKeyDictionary()
_PICK = itemgetter("name", "datatype", "shape", "data")


def _accepts(validator: Validator) -> dict[str, dict[str, frozenset[type]]]:
    """Feature -> datatype it takes in the common case -> the JSON value types allowed (BOOL,
    which needs converting, and personal-data inputs take the careful path); built once per
    loaded version."""
    found = _ACCEPTED.get(validator)
    if found is None:
        found = {
            f.name: {dt: _JSON_TYPES[dt][0] for dt in ACCEPTS[f.kind] - {"BOOL"}}
            for f in validator.features
        }
        _ACCEPTED[validator] = found
    return found


def _common_rows(
    inputs: list[Any], accepts: dict[str, dict[str, frozenset[type]]]
) -> list[Any] | None:
    """Rows from JSON tensors: exactly one flat `[n]` tensor per feature (objects of the four
    keys name, datatype, shape and data), in a datatype the feature takes, with values of that
    datatype's JSON types; None for anything else (the careful path decides). A few C calls per
    input: one lookup of the four keys, one of the feature's datatype, one of the value types."""
    columns: dict[str, list[Any]] = {}
    wanted: list[int] | None = None  # the shape every input has: [n], n from the first one
    try:
        for item in inputs:
            if len(item) != 4:  # `parameters` (binary data, a content type) or unknown keys
                return None
            name, datatype, shape, data = _PICK(item)
            ok = accepts[name][datatype]
            if type(data) is not list:
                return None
            if wanted is None:
                wanted = [len(data)]
            if shape != wanted or len(data) != wanted[0] or type(shape[0]) is not int:
                return None  # (an int: [1.0] == [1] and [True] == [1])
            if wanted[0] == 1:
                if type(data[0]) not in ok:
                    return None
            elif not ok.issuperset(map(type, data)):
                return None
            columns[name] = data
    except (TypeError, KeyError):  # not an object, a key missing, an unknown input or datatype
        return None
    if wanted is None or wanted[0] < 1:
        return None  # no inputs or no rows
    if len(columns) != len(accepts) or len(inputs) != len(accepts):
        return None  # an input missing or twice
    if wanted[0] == 1:
        return [{k: v[0] for k, v in columns.items()}]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def parse_request(raw: bytes | bytearray, header_length: str | None) -> InferRequest:
    """The request's tensors, from a JSON body or the binary tensor extension's body."""
    tail: bytes | bytearray = b""
    if header_length is not None:
        text = header_length.strip()
        cut = whole_number(text)
        if cut is None or not 0 < cut <= len(raw):
            raise Malformed(
                f"Inference-Header-Content-Length {header_length[:40]!r} must be a whole number "
                f"of bytes within the body's {len(raw)}"
            )
        raw, tail = raw[:cut], raw[cut:]
    if not raw:
        raise Malformed("empty body; expected an inference request object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Malformed('the body must be an object {"inputs": [...]}')
    req_id = body.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise Malformed("'id' must be a string")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise Malformed("'inputs' must be a non-empty list of tensors")
    tensors: list[Tensor] = []
    offset = 0
    for i, item in enumerate(inputs):
        # the common case, checked with few C calls: JSON data, flat, shape [n]
        if type(item) is dict and "parameters" not in item:
            name, datatype, shape, data = (
                item.get("name"),
                item.get("datatype"),
                item.get("shape"),
                item.get("data"),
            )
            if (
                type(name) is str
                and name
                and type(datatype) is str
                and datatype in DATATYPES
                and type(shape) is list
                and len(shape) == 1
                and type(data) is list
                and type(shape[0]) is int
                and shape[0] == len(data)
            ):
                types = set(map(type, data))
                if list not in types:
                    tensors.append(Tensor(name, datatype, shape, data, types=types))
                    continue
        tensor, used = _tensor(i, item, tail, offset)
        offset += used
        tensors.append(tensor)
    if offset != len(tail):
        raise Malformed(
            f"the binary part holds {len(tail)} bytes but the inputs' binary_data_size add up "
            f"to {offset}"
        )
    seen: set[str] = set()
    dupes: set[str] = set()
    for t in tensors:  # linear: a request chooses how many inputs it sends
        (dupes if t.name in seen else seen).add(t.name)
    if dupes:
        raise Malformed(f"input(s) {sorted(dupes)[:20]} appear more than once")
    return InferRequest(req_id, tensors, _requested(body.get("outputs")))


def _tensor(i: int, item: Any, tail: bytes | bytearray, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise Malformed(f"inputs[{i}] must be an object with name, datatype, shape and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise Malformed(f"inputs[{i}] needs a 'name' (a non-empty string)")
    datatype = item.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPES:  # (a list is unhashable)
        raise Malformed(
            f"input {name!r}: datatype {short_repr(datatype)} is not one of the protocol's "
            f"({', '.join(sorted(DATATYPES))})"
        )
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise Malformed(
            f"input {name!r}: shape must be a list of whole numbers >= 0, got {short_repr(shape)}"
        )
    if len(shape) > MAX_DEPTH:  # the product of 50,000 dimensions is a CPU bomb
        raise Malformed(f"input {name!r}: a shape has at most {MAX_DEPTH} dimensions")
    count = math.prod(shape)
    params = item.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(tail):
            shown = short_repr(size)
            raise Malformed(
                f"input {name!r}: binary_data_size {shown} runs past the body's binary part"
            )
        data = _from_binary(name, datatype, tail[offset : offset + size])
        used = size
    else:
        raw = item.get("data")
        if raw is None:
            raise Malformed(f"input {name!r} has neither 'data' nor a binary_data_size")
        data = _flatten(raw) if isinstance(raw, list) else [raw]
        used = 0
    if len(data) != count:
        raise Malformed(
            f"input {name!r}: shape {shape} holds {count} element(s) but the data has {len(data)}"
        )
    return Tensor(name, datatype, shape, data, binary=size is not None), used


def _requested(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise Malformed("'outputs' must be a list of objects with a 'name'")
    names = [o["name"] for o in outputs]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise Malformed(f"requested output(s) {unknown} unknown; the outputs are {list(OUTPUTS)}")
    return names


MAX_DEPTH = 32
"""Deepest nesting of a tensor's JSON data (a shape has a dimension per level)."""


def _flatten(data: list[Any]) -> list[Any]:
    """Nested (row-major) data as one flat list; without recursion (JSON nested a thousand
    levels deep is a Malformed request, not a RecursionError)."""
    if not any(type(v) is list for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if type(v) is list:
                if len(stack) >= MAX_DEPTH:
                    raise Malformed(f"tensor data nested more than {MAX_DEPTH} levels deep")
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _from_binary(name: str, datatype: str, chunk: bytes | bytearray) -> list[Any]:
    """Triton's binary tensor data: little-endian values, or 4-byte-length-prefixed strings."""
    if datatype == "BYTES":
        out: list[Any] = []
        i = 0
        while i < len(chunk):
            if i + 4 > len(chunk):
                raise Malformed(f"input {name!r}: BYTES element cut short in the binary data")
            (n,) = struct.unpack_from("<I", chunk, i)
            text = chunk[i + 4 : i + 4 + n]
            if len(text) < n:
                raise Malformed(f"input {name!r}: BYTES element cut short in the binary data")
            try:
                out.append(text.decode("utf-8"))
            except UnicodeDecodeError:
                raise Malformed(f"input {name!r}: a BYTES element is not UTF-8 text") from None
            i += 4 + n
        return out
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise Malformed(
            f"input {name!r}: {len(chunk)} bytes is not a whole number of {datatype} values"
        )
    values: list[Any] = np.frombuffer(chunk, dtype=dtype).tolist()
    if datatype in FLOATS:  # a missing value travels as NaN in binary data
        values = [None if v != v else v for v in values]
    return values


def instances(req: InferRequest, features: list[FeatureSchema], known: set[str]) -> list[Any]:
    """The request as /v1 instances (one dict per row), for the version's validator."""
    kinds = {f.name: f.kind for f in features}
    first = req.inputs[0]
    if len(req.inputs) == 1 and first.name not in kinds and len(first.shape) == 2:
        return _from_matrix(first, features)
    rows = {t.shape[0] for t in req.inputs}
    if len(rows) > 1:
        sizes = ", ".join(f"{t.name!r} has {t.shape[0]}" for t in req.inputs)
        raise Malformed(f"the inputs must all have the same number of rows: {sizes}")
    problems: list[tuple[str, str, str]] = []
    given = {t.name for t in req.inputs}
    if not given <= known:
        have = ", ".join(f.name for f in features)
        for t in req.inputs:
            if t.name not in known:
                problems.append((t.name, "unknown", f"not an input of this model (inputs: {have})"))
    if not given >= kinds.keys():
        for f in features:
            if f.name not in given:
                problems.append(
                    (f.name, "required", f"missing; send it as {DESCRIBED[f.kind]} with shape [n]")
                )
    columns: dict[str, list[Any]] = {}
    for t in req.inputs:
        kind = kinds.get(t.name)
        if kind is None and t.name not in known:
            continue
        if len(t.shape) != 1 and (len(t.shape) != 2 or t.shape[1] != 1):
            problems.append(
                (t.name, "shape", f"shape must be [n] or [n, 1] (one feature), got {t.shape}")
            )
            continue
        allowed = ACCEPTS[kind] if kind is not None else DATATYPES
        if t.datatype not in allowed:
            problems.append(
                (
                    t.name,
                    "datatype",
                    f"a {kind} feature takes {' or '.join(sorted(allowed))}, got {t.datatype}",
                )
            )
            continue
        columns[t.name] = _values(t, problems)
    if problems:
        raise Rejected(problems[:MAX_PROBLEMS])
    names = list(columns)
    if len(req.inputs[0].data) == 1:
        return [{k: v[0] for k, v in columns.items()}]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _from_matrix(t: Tensor, features: list[FeatureSchema]) -> list[Any]:
    """One [n, features] numeric tensor in schema order."""
    names = [f.name for f in features]
    problems: list[tuple[str, str, str]] = []
    other = [f"{f.name!r} is {f.kind}" for f in features if f.kind != "numeric"]
    if other:
        problems.append(
            (
                t.name,
                "datatype",
                "a single 2-D tensor carries only numeric features, but "
                + ", ".join(other)
                + ": send one input per feature",
            )
        )
    elif t.shape[1] != len(names):
        problems.append(
            (
                t.name,
                "shape",
                f"a 2-D tensor carries the model's {len(names)} features in schema order "
                f"({', '.join(names)}); got {t.shape[1]} column(s)",
            )
        )
    elif t.datatype not in NUMBERS:
        problems.append((t.name, "datatype", f"a 2-D tensor takes numbers, got {t.datatype}"))
    if problems:
        raise Rejected(problems)
    values = _values(t, problems)
    if problems:
        raise Rejected(problems[:MAX_PROBLEMS])
    k = len(names)
    return [dict(zip(names, values[r * k : (r + 1) * k], strict=True)) for r in range(t.shape[0])]


def _values(t: Tensor, problems: list[tuple[str, str, str]]) -> list[Any]:
    """The tensor's values as /v1 would receive them, each checked against its datatype
    (binary data is typed by construction); BOOL becomes 0.0/1.0 for a numeric feature."""
    data = t.data
    dt = t.datatype
    if t.binary:
        return [None if v is None else float(v) for v in data] if dt == "BOOL" else data
    ok, want = _JSON_TYPES[dt]
    types = t.types if t.types is not None else set(map(type, data))
    if types <= ok:  # the common case, in C (type(True) is bool: never taken for a number)
        return [None if v is None else float(v) for v in data] if dt == "BOOL" else data
    bad = 0
    for i, v in enumerate(data):
        if type(v) in ok:
            continue
        bad += 1
        if bad <= 5:
            problems.append((t.name, "type", f"{dt} element {i} is {short_repr(v)}, not {want}"))
    if dt == "BOOL":
        return [None if v is None else float(v) for v in data]
    return data


_NUMBER: frozenset[type] = frozenset((int, float, NoneType))
_WHOLE: frozenset[type] = frozenset((int, NoneType))
_JSON_TYPES: dict[str, tuple[frozenset[type], str]] = {
    **dict.fromkeys(FLOATS, (_NUMBER, "a number")),
    **dict.fromkeys(INTEGERS, (_WHOLE, "a whole number")),
    "BOOL": (frozenset((bool, NoneType)), "true or false"),
    "BYTES": (frozenset((str, NoneType)), "a string"),
}


def render(
    name: str,
    model: LoadedModel,
    out: Outputs,
    ids: list[str],
    req_id: str | None,
    wanted: list[str] | None,
) -> bytes:
    """The inference response: `predict`, `predict_proba` (classifiers) and `prediction_id`.

    Every output (the common request asks for none by name) is joined from pieces built once per
    version around the values' JSON; outputs asked for by name are built as a document."""
    if wanted is None:
        return _render_all(name, model, out, ids, req_id)
    return _render(name, model, out, ids, req_id, wanted)


@dataclass(frozen=True)
class _Pieces:
    """The constant bytes of one version's response with every output, between the values."""

    head: bytes  # model_version, then the predict output up to its shape
    proba: bytes  # up to predict_proba's shape
    proba_data: bytes  # the rest of its shape, up to its data
    proba_tail: bytes  # its parameters (the classes)
    ids: bytes  # the prediction_id output, up to its shape


_PIECES: WeakKeyDictionary[LoadedModel, _Pieces] = WeakKeyDictionary()


def _pieces(model: LoadedModel) -> _Pieces:
    found = _PIECES.get(model)
    if found is None:
        classes = model.classes or []
        found = _Pieces(
            head=b'"model_version":' + orjson.dumps(str(model.version))
            + b',"outputs":[{"name":"predict","datatype":'
            + orjson.dumps(PREDICTION_TYPES[model.label_type]) + b',"shape":[',
            proba=b'},{"name":"predict_proba","datatype":"FP64","shape":[',
            proba_data=b"," + str(len(classes)).encode() + b'],"data":',
            proba_tail=b',"parameters":{"classes":'
            + orjson.dumps(orjson.dumps(classes).decode()) + b"}",
            ids=b'},{"name":"prediction_id","datatype":"BYTES","shape":[',
        )  # fmt: skip
        _PIECES[model] = found
    return found


def _render_all(
    name: str, model: LoadedModel, out: Outputs, ids: list[str], req_id: str | None
) -> bytes:
    """Every output, as `_render` writes them (tested equal), from the version's `_Pieces`."""
    p = _pieces(model)
    n = str(len(ids)).encode()
    start = b'{"model_name":' + orjson.dumps(name) + b","
    if req_id is not None:
        start += b'"id":' + orjson.dumps(req_id) + b","
    chunks = [start, p.head, n, b'],"data":', orjson.dumps(out.predictions)]
    if out.probabilities is not None and model.classes:
        classes = model.classes
        flat = [q[c] for q in out.probabilities for c in classes]
        chunks += [p.proba, n, p.proba_data, orjson.dumps(flat), p.proba_tail]
    chunks += [p.ids, n, b'],"data":', orjson.dumps(ids), b"}]}"]
    return b"".join(chunks)


def _render(
    name: str,
    model: LoadedModel,
    out: Outputs,
    ids: list[str],
    req_id: str | None,
    wanted: list[str] | None,
) -> bytes:
    """The outputs in `wanted` (None: all) as one document."""
    n = len(ids)
    outputs: list[dict[str, Any]] = []
    if wanted is None or "predict" in wanted:
        outputs.append(
            {
                "name": "predict",
                "datatype": PREDICTION_TYPES[model.label_type],
                "shape": [n],
                "data": out.predictions,
            }
        )
    if (
        out.probabilities is not None
        and model.classes
        and (wanted is None or "predict_proba" in wanted)
    ):
        classes = model.classes
        outputs.append(
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [n, len(classes)],
                "data": [p[c] for p in out.probabilities for c in classes],
                "parameters": {"classes": orjson.dumps(classes).decode()},
            }
        )
    if wanted is None or "prediction_id" in wanted:
        outputs.append({"name": "prediction_id", "datatype": "BYTES", "shape": [n], "data": ids})
    body: dict[str, Any] = {
        "model_name": name,
        "model_version": str(model.version),
        "outputs": outputs,
    }
    if req_id is not None:
        body["id"] = req_id
    return orjson.dumps(body)


def metadata(name: str, model: LoadedModel) -> dict[str, Any]:
    """The model metadata response: one input per feature, then the outputs."""
    inputs = [
        {"name": f.name, "datatype": DESCRIBED[f.kind], "shape": [-1]}
        for f in model.manifest.features
    ]
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "datatype": PREDICTION_TYPES[model.label_type], "shape": [-1]}
    ]
    if model.classes:
        outputs.append(
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [-1, len(model.classes)],
                "parameters": {"classes": orjson.dumps(model.classes).decode()},
            }
        )
    outputs.append({"name": "prediction_id", "datatype": "BYTES", "shape": [-1]})
    return {
        "name": name,
        "versions": [str(model.version)],
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": outputs,
    }


def example_request(instance: dict[str, Any], features: list[FeatureSchema]) -> dict[str, Any]:
    """One instance as an inference request (the OpenAPI example)."""
    return {
        "inputs": [
            {
                "name": f.name,
                "datatype": DESCRIBED[f.kind],
                "shape": [1],
                "data": [instance[f.name]],
            }
            for f in features
        ]
    }
