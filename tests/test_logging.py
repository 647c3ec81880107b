"""Log lines read well under ``logging.basicConfig``: one logger per module under
"cachekit" (so the logger name says where a line comes from), messages that do not repeat
it, and an outage's end at INFO (only its start is a WARNING)."""

from __future__ import annotations

import ast
import logging
import pathlib
import threading

import pytest

from cachekit import Cache
from cachekit.testing.servers import RedisServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASIC_FORMAT = logging.BASIC_FORMAT  # "%(levelname)s:%(name)s:%(message)s", as basicConfig


class _Capture(logging.Handler):
    """Formats records as basicConfig would, and signals each one (no polling)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(BASIC_FORMAT))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.back = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))
        if "is back after" in record.getMessage():
            self.back.set()


@pytest.fixture
def capture() -> object:
    handler = _Capture()
    root = logging.getLogger("cachekit")
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(saved)


def test_outage_lines_name_the_module_once_and_recovery_is_info(
    private_redis: RedisServer, capture: _Capture
) -> None:
    cache = Cache(private_redis.url, timeout=0.5, retry_interval=0.05)

    @cache.cached(ttl=60)
    def compute(n: int) -> int:
        return n + 1

    assert compute(1) == 2
    private_redis.kill()
    assert compute(1) == 2  # fails open, and logs the outage
    private_redis.start()
    assert capture.back.wait(10), capture.lines
    cache.close()

    down = [r for r in capture.records if "unavailable" in r.getMessage()]
    back = [r for r in capture.records if "is back after" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING
    assert len(back) == 1 and back[0].levelno == logging.INFO
    for record, line in zip(capture.records, capture.lines):
        assert record.name.startswith("cachekit."), record.name  # the module, under cachekit
        assert not record.getMessage().lower().startswith("cachekit"), line
        assert line.count("cachekit") == 1 or "cachekit-" in line, line


def _logger_calls(path: pathlib.Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "cachekit").rglob("*.py")) + sorted((ROOT / "integrations").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_module_logs_under_its_own_name_without_a_prefix(path: pathlib.Path) -> None:
    for call in _logger_calls(path):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "getLogger":
            # getLogger(__name__): "cachekit.<module>", a child of "cachekit"
            assert [ast.unparse(a) for a in call.args] == ["__name__"], (
                f"{path}:{call.lineno}: use logging.getLogger(__name__)"
            )
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "logger"
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            message = call.args[0].value
            assert not message.lower().startswith("cachekit"), (
                f"{path}:{call.lineno}: the logger name already says cachekit: {message!r}"
            )
