"""User-facing errors: one line that names the file, the row and the fix."""

from __future__ import annotations


class HnmineError(Exception):
    """A problem with the user's input or parameters. The CLI prints it as one line and exits 2."""

    def __init__(self, message: str, *, path: object | None = None, row: int | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.row = row
        self.fix = fix
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.row is not None:
                where += f" row {self.row}"
            where += ": "
        text = where + self.detail
        if self.fix:
            text += f" (fix: {self.fix})"
        return text
