"""Opening the user's input files, and turning every way reading one can fail (OS, decoding,
compression, CSV, Arrow) into one `HnmineError` line that names the file and, where there is one,
the line."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from hnmine.errors import HnmineError

# CSV fields of any size are read: a document may be megabytes. The limit is a C long, so the
# largest value every platform takes.
CSV_FIELD_LIMIT = 2**31 - 1
# A byte that is not UTF-8, as decoded with errors="surrogateescape".
_UNDECODED = re.compile("[\udc80-\udcff]")


def open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def open_text(path: Path) -> io.TextIOWrapper:
    """UTF-8 text, a leading byte-order mark dropped, line endings kept (for csv)."""
    return io.TextIOWrapper(open_binary(Path(path)), encoding="utf-8-sig", newline="")


def is_empty(path: Path) -> bool:
    return Path(path).stat().st_size == 0


def csv_reader(handle: io.TextIOBase, delimiter: str):
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    return csv.reader(handle, delimiter=delimiter)


def first_undecodable_line(path: Path) -> tuple[int, int] | None:
    """(line, byte) of the first bytes that are not UTF-8, counting lines as open_text does."""
    try:
        with io.TextIOWrapper(open_binary(Path(path)), encoding="utf-8-sig", errors="surrogateescape",
                              newline="") as handle:
            for line_no, line in enumerate(handle, start=1):
                if match := _UNDECODED.search(line):
                    return line_no, ord(match.group()) - 0xDC00
    except (OSError, EOFError, zlib.error):
        pass
    return None


@contextlib.contextmanager
def reading(path: Path, line: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """Errors raised while reading `path` become HnmineError; `line()` gives the line being read
    where the reader knows it (csv)."""
    path = Path(path)
    try:
        yield
    except HnmineError:
        raise
    except UnicodeDecodeError as exc:
        # a text file's lines are counted again to find the line; Parquet has no lines
        found = None if path.name.lower().endswith(".parquet") else first_undecodable_line(path)
        byte = f"byte 0x{found[1]:02x}" if found else f"byte 0x{exc.object[exc.start]:02x}"
        raise HnmineError(f"not UTF-8 text ({byte})", path=path, row=found[0] if found else None,
                          fix="save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # not gzip, corrupt, or cut short
        raise HnmineError(f"cannot decompress it as gzip ({exc})", path=path,
                          fix="download or gzip the file again, or drop the .gz suffix if it is not compressed") from None
    except csv.Error as exc:
        raise HnmineError(f"unreadable CSV ({exc})", path=path, row=line(), fix="repair the line") from None
    except pa.ArrowException as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HnmineError(f"cannot read it as Parquet ({detail})", path=path,
                          fix="check that it is a complete Parquet file") from None
    except OSError as exc:
        raise HnmineError(f"cannot read the file ({exc.strerror or exc})", path=path,
                          fix="check the path and its permissions") from None
