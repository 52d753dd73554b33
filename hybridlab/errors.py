"""User-facing errors: one line that says what is wrong and where, never a traceback."""

from __future__ import annotations


class HybridlabError(Exception):
    """A mistake in user input or environment (bad pattern, config, dataset, storage).

    The CLI prints `str(err)` on one line and exits non-zero; library callers can catch it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # keep it on one line


class PatternError(HybridlabError, ValueError):
    """A malformed or invalid pattern string; `col` is 1-based (0 when no column applies)."""

    def __init__(self, message: str, col: int = 0) -> None:
        self.col = col
        self.reason = message
        where = f"pattern error at col {col}" if col else "pattern error"
        super().__init__(f"{where}: {message}")


class ConfigError(HybridlabError, ValueError):
    """An invalid model, study or measurement setting; `where` names the key (e.g. `model.num_heads`)."""

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        self.reason = " ".join(str(message).split())
        super().__init__(f"{where}: {self.reason}" if where else self.reason)

    def within(self, prefix: str) -> ConfigError:
        """The same error located inside `prefix` (`model` + `num_heads` -> `model.num_heads`).

        Keeps message and location apart, so callers never split message strings to re-prefix them.
        """
        if not prefix:
            return type(self)(self.reason, self.where) if type(self) is ConfigError else self
        if not self.where:
            where = prefix
        elif self.where.startswith("["):
            where = f"{prefix}{self.where}"
        else:
            where = f"{prefix}.{self.where}"
        return ConfigError(self.reason, where)


class StudyHalt(HybridlabError):
    """A fault of the machine, not of the candidate (a full disk), that would fail every later trial too.

    The runner records it on the running trial and stops the study instead of going on to the next trial.
    """
