"""Framework adapters: cachekit.integrations.flask, .starlette, .django (each needs its extra)."""

from __future__ import annotations


def missing_extra(exc: ModuleNotFoundError, framework: str, extra: str) -> ImportError:
    """The error for an adapter imported without its framework: names the extra to install.

    Re-raises ``exc`` itself when what is missing is not the framework (a broken install
    of something else must not be reported as a missing extra).
    """
    if exc.name is None or exc.name.partition(".")[0] != framework:
        raise exc
    error = ImportError(
        f"cachekit.integrations.{extra} needs {framework}, which is not installed: "
        f"pip install 'cachekit[{extra}]'",
        name=framework,
    )
    return error
