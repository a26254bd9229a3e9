"""Arrow tables in the types an ordinary Hugging Face dataset has, and their `datasets` features.

polars writes `large_string` and `large_list`; `datasets.concatenate_datasets` refuses to join such
a table with a Hub dataset of `string` columns, and a dataset card's features name the small types.
So every export is cast to `string`, `list<...>` and `int64` labels before it is written, one
record batch at a time (a single chunk over 2 GiB of text would overflow `string`'s 32-bit offsets).
"""

from __future__ import annotations

import pyarrow as pa

_BATCH_ROWS = 16_384


def portable_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_large_list(kind) or pa.types.is_list(kind) or pa.types.is_list_view(kind):
        return pa.list_(portable_type(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, portable_type(f.type), f.nullable) for f in kind])
    if pa.types.is_integer(kind):
        return pa.int64()
    return kind


def portable_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, portable_type(f.type), f.nullable) for f in schema])


def portable_table(table: pa.Table) -> pa.Table:
    """`table` in portable types, as record batches of at most 16k rows."""
    schema = portable_schema(table.schema)
    batches = [b for batch in table.to_batches(max_chunksize=_BATCH_ROWS)
               for b in pa.Table.from_batches([batch]).cast(schema).to_batches()]
    return pa.Table.from_batches(batches, schema=schema)


_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16", "bool": "bool", "string": "string",
           "int64": "int64", "binary": "binary"}


def _feature(kind: pa.DataType):
    """One type as a dataset card writes it (`datasets.Features._to_yaml_list`): a dtype name, a
    `list` of a type, or the fields of a struct."""
    if pa.types.is_list(kind):
        inner = _feature(kind.value_type)
        return {"list": inner.get("dtype", inner.get("struct", inner))}
    if pa.types.is_struct(kind):
        return {"struct": [_field(f.name, f.type) for f in kind]}
    return {"dtype": _DTYPES.get(str(kind), str(kind))}


def _field(name: str, kind: pa.DataType) -> dict:
    return {"name": name, **_feature(kind)}


def features(schema: pa.Schema) -> list[dict]:
    """The `features` of a dataset card's `dataset_info` for a portable schema."""
    return [_field(f.name, f.type) for f in schema]
