"""Every HTTP error the server raises carries a machine-readable `code` from the one
vocabulary in server/error_codes.py (read from the source with `ast`: no server runs)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from vsteer.server.error_codes import ARTIFACT_KINDS, ERROR_CODES

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("server", "vsteer", "plugins")  # plugins/: every control's resolve
EXCLUDED: frozenset[str] = frozenset()  # none: every HTTP error names its code
ERROR_CALLS = frozenset({"APIError", "error_response"})  # (status, message, param, code)
SNAKE = re.compile(r"[a-z][a-z0-9_]*")


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)


def _error_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
            if name in ERROR_CALLS or _is_ctx_error(f):
                yield node


def _is_ctx_error(f: ast.expr) -> bool:
    """A control's `ctx.error(message, field, code=...)` (ResolveContext.error)."""
    return (isinstance(f, ast.Attribute) and f.attr == "error"
            and isinstance(f.value, ast.Name) and f.value.id == "ctx")


def _error_status(call: ast.Call) -> int | None:
    """The status if it is an int literal of an HTTP error (4xx/5xx), else None."""
    arg = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg == "status"), None)
    if isinstance(arg, ast.Constant) and type(arg.value) is int and 400 <= arg.value < 600:
        return arg.value
    return None


def _code(call: ast.Call) -> ast.expr | None:
    """The `code` argument (keyword or 4th positional); None when absent or `None`."""
    node = next((k.value for k in call.keywords if k.arg == "code"), None)
    if node is None and len(call.args) >= 4:
        node = call.args[3]
    if node is None and any(k.arg is None for k in call.keywords):
        return ast.Constant("**kwargs")  # can't tell statically: assume it is passed
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    return node


def uncoded(tree: ast.AST, rel: str) -> list[str]:
    return [f"{rel}:{c.lineno}" for c in _error_calls(tree)
            if _error_status(c) is not None and _code(c) is None]


def literal_codes(tree: ast.AST, rel: str) -> Iterator[tuple[str, ast.expr]]:
    """(file:line, node) for every code given as a str literal or f-string: in error
    calls, and in hand-built error bodies ({"message": ..., "code": "..."})."""
    for c in _error_calls(tree):
        node = _code(c)
        if isinstance(node, ast.Constant | ast.JoinedStr):
            yield f"{rel}:{c.lineno}", node
    for d in ast.walk(tree):
        if isinstance(d, ast.Dict):
            keys = {k.value: v for k, v in zip(d.keys, d.values, strict=True)
                    if isinstance(k, ast.Constant)}
            code = keys.get("code")
            if "message" in keys and isinstance(code, ast.Constant | ast.JoinedStr):
                yield f"{rel}:{d.lineno}", code


def _pattern(node: ast.expr) -> re.Pattern[str]:
    """A literal code as a regex: an f-string's fields match any snake_case part."""
    if isinstance(node, ast.JoinedStr):
        return re.compile("".join(re.escape(v.value) if isinstance(v, ast.Constant)
                                  else "[a-z0-9_]+" for v in node.values))
    return re.compile(re.escape(str(node.value)))


def test_every_error_call_names_a_code():
    missing = [where for rel, tree in _trees() if rel not in EXCLUDED
               for where in uncoded(tree, rel)]
    assert not missing, "APIError/error_response without code=: " + ", ".join(missing)


def test_every_code_is_snake_case_and_in_the_vocabulary():
    found = [(where, node) for rel, tree in _trees() for where, node in literal_codes(tree, rel)]
    assert len(found) >= 40  # the scan sees the call sites (a wrong ROOT would pass vacuously)
    bad = []
    for where, node in found:
        pat = _pattern(node)
        known = [c for c in ERROR_CODES if pat.fullmatch(c)]
        if isinstance(node, ast.Constant) and not (
                isinstance(node.value, str) and SNAKE.fullmatch(node.value)):
            bad.append(f"{where}: {node.value!r} is not snake_case")
        elif not known:
            bad.append(f"{where}: {ast.unparse(node)} is not in server/error_codes.py")
    assert not bad, "\n".join(bad)


def test_vocabulary_is_snake_case_and_covers_every_artifact_kind():
    from vsteer.server.artifact_access import LABELS

    assert all(SNAKE.fullmatch(c) for c in ERROR_CODES), sorted(ERROR_CODES)
    assert set(ARTIFACT_KINDS) == set(LABELS)  # load_artifact raises unknown_<kind>


def test_the_checker_flags_missing_and_none_codes():
    src = ('APIError(400, "a")\nAPIError(404, "b", code=None)\n'
           'APIError(409, "c", code="artifact_exists")\nAPIError(400, "d", None, "invalid_value")\n'
           'error_response(503, "e")\nerror_response(status, "f")\nAPIError(200, "g")\n')
    assert uncoded(ast.parse(src), "x.py") == ["x.py:1", "x.py:2", "x.py:5"]
