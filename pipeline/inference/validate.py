"""Check a submission table against the competition's sample_submission before anything is uploaded.

Pure and fast (vectorised pandas, no I/O): the submission stage calls it on what it is about to write, and the
submit stage calls it again on the file it is about to upload. A problem raises UserError naming the file, the
row (1-based data row and its line in the CSV, header = line 1) and the column.
"""

from __future__ import annotations

import pandas as pd
from pandas.api import types as ptypes

from pipeline.core.errors import UserError


def _where_row(position: int) -> str:
    return f"row {position + 1} (line {position + 2})"


def _first(mask: pd.Series) -> int:
    """Position of the first True in a boolean Series (the caller knows there is one)."""
    return int(mask.to_numpy().argmax())


def is_probability_sample(sample: pd.DataFrame) -> bool:
    """True when every non-id column of the sample is float-typed with values in [0, 1] (one column per class)."""
    values = sample.iloc[:, 1:]
    if values.shape[1] == 0 or not all(ptypes.is_float_dtype(dtype) for dtype in values.dtypes):
        return False
    finite = values.dropna()
    return bool(((finite >= 0) & (finite <= 1)).all().all())


def check_submission(
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    where: str,
    probability_columns: bool | None = None,
    id_column: str | None = None,
) -> None:
    """Raise UserError naming `where`, row and column unless `frame` matches `sample`'s format.

    Same columns in the same order, same row count, the same ids in the same order (compared as strings, so
    `007` vs `7` is caught and ids typed as numbers still match), no empty cell, numeric where the sample is
    numeric, and probabilities within [0, 1] when `probability_columns` is True (None: infer from the sample).
    `id_column`: the sample's id column (None: its first column).
    """
    expected, got = [str(c) for c in sample.columns], [str(c) for c in frame.columns]
    if got != expected:
        missing = [c for c in expected if c not in got]
        extra = [c for c in got if c not in expected]
        if missing or extra:
            detail = "; ".join(
                part
                for part in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "")
                if part
            )
        else:
            position = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
            detail = f"column {position + 1} is {got[position]!r} where sample_submission has {expected[position]!r}"
        raise UserError(f"{where}: columns must be {expected} in this order; {detail}")
    if len(frame) != len(sample):
        raise UserError(f"{where}: {len(frame)} rows but sample_submission has {len(sample)}; predict every test id")
    if len(frame) == 0:
        raise UserError(f"{where}: no rows")

    id_column = id_column if id_column in expected else expected[0]
    ids = frame[id_column].astype(str).reset_index(drop=True)
    sample_ids = sample[id_column].astype(str).reset_index(drop=True)
    differ = ids != sample_ids
    if differ.any():
        position = _first(differ)
        raise UserError(
            f"{where}: {_where_row(position)}, column {id_column!r} is {ids[position]!r} where sample_submission has "
            f"{sample_ids[position]!r}; keep sample_submission's ids and order"
        )

    empty = frame.isna().reset_index(drop=True)
    if empty.any().any():
        column = next(c for c in frame.columns if empty[c].any())
        raise UserError(f"{where}: {_where_row(_first(empty[column]))}, column {str(column)!r} is empty")

    if probability_columns is None:
        probability_columns = is_probability_sample(sample)
    for index, column in enumerate(frame.columns):
        if column == id_column:
            continue
        should_be_numeric = probability_columns or ptypes.is_numeric_dtype(sample.iloc[:, index])
        if not should_be_numeric:
            continue
        values = frame.iloc[:, index].reset_index(drop=True)
        numbers = values if ptypes.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            position = _first(bad)
            raise UserError(
                f"{where}: {_where_row(position)}, column {str(column)!r} is {values[position]!r}, not a number"
            )
        if probability_columns:
            outside = (numbers < 0) | (numbers > 1)
            if outside.any():
                position = _first(outside)
                raise UserError(
                    f"{where}: {_where_row(position)}, column {str(column)!r} is {float(numbers[position])!r}, "
                    "not a probability in [0, 1]"
                )
