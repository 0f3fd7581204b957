"""Reading the user's data files: UTF-8 text, JSON arrays and JSON Lines, and the checks every row passes.

Every loader of a user-given file (TOFU and MUSE folders, forget-request files, generic texts, IDK answers,
WMDP / MMLU items) reads it through `read_text` and `parse_rows` (which also note it for the run's manifest), so a missing, unreadable, non-UTF-8 or
malformed file is one `UnlearnError` naming the file (and the line), never a traceback. `blank_field` and
`row_label` let the loaders refuse rows whose question, answer or text is empty, naming the row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from unlearnkit.errors import UnlearnError
from unlearnkit.manifest import record_read


def read_text(path: str | Path, what: str = "file", encoding: str = "utf-8") -> str:
    """The text of a UTF-8 file (`encoding="utf-8-sig"` drops a byte-order mark); a missing, unreadable or
    non-UTF-8 file is an error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise UnlearnError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-save the {what} as UTF-8"
                           ) from None
    except FileNotFoundError:
        raise UnlearnError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise UnlearnError(f"{what} {path} is a folder; give the file itself") from None
    except OSError as err:
        raise UnlearnError(f"{path}: cannot read the {what} ({err.strerror or err}); check its permissions") from None
    record_read(path)  # its digest goes into the run's manifest
    return text


def parse_rows(path: Path) -> tuple[list, list[int | None]]:
    """Rows of a JSON Lines or JSON array file, with each row's line number (None inside arrays)."""
    text = read_text(path, "data file")
    is_array = text.lstrip().startswith("[")  # a real JSON array (pandas-style export), else JSON Lines
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    chunks = [(1, text)] if is_array else lines
    parsed = []
    for line_no, chunk in chunks:
        try:
            parsed.append(json.loads(chunk))
        except json.JSONDecodeError as err:
            raise UnlearnError(
                f"{path}:{line_no + err.lineno - 1}: not valid JSON ({err.msg} at column {err.colno}); "
                "fix or remove that line"
            ) from None
    if is_array:
        return parsed[0], [None] * len(parsed[0])
    return parsed, [line_no for line_no, _ in chunks]


def blank_field(row: dict, keys: Sequence[str]) -> str | None:
    """The first of `keys` whose value is not a non-empty string (missing, empty, spaces, a number), or None."""
    return next((key for key in keys if not isinstance(row.get(key), str) or not row[key].strip()), None)


def row_label(where: str, index: int, line: int | None = None) -> str:
    """'file.jsonl:7: row 3' (JSON Lines) or 'file.json: row 3' (arrays, hub splits)."""
    return f"{where}:{line}: row {index}" if line is not None else f"{where}: row {index}"


def describe_blank(row: dict, key: str) -> str:
    """'an empty answer', 'no question', 'a question that is not text (int)'."""
    if key not in row or row[key] is None:
        return f"no {key}"
    value: Any = row[key]
    if isinstance(value, str):
        return f"an empty {key}"
    return f"a {key} that is not text ({type(value).__name__})"
