"""Per-mode request schemas: which fields each `mode` (or `action`) of a built-in
control reads, in one table per control, shared by the resolver's 400s and the
OpenAPI spec's discriminated `oneOf`.

A field the chosen mode does not read is a 400 `field_not_applicable`, never ignored;
the spec shows the same rule as one object schema per mode, each closed
(`additionalProperties: false`), its `mode` a constant. The default mode's variant is the
only one that may leave `mode` out, so exactly one variant matches any body.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModeFields:
    key: str  # the field that picks the mode ("mode", or "action" for hallucination)
    default: str  # the mode a body that leaves `key` out gets
    applies: dict[str, frozenset[str]]  # mode -> the other fields it reads
    always: frozenset[str] = frozenset()  # fields every mode reads

    def fields(self, mode: str) -> frozenset[str]:
        return self.applies[mode] | self.always

    def check(self, given: set[str], mode: str, prefix: str) -> None:
        """A field that `mode` does not read is a 400 `field_not_applicable`."""
        takes = self.fields(mode)
        extra = sorted(given - {self.key} - takes)
        if extra:
            from vsteer.server.errors import APIError  # server side only

            names = ", ".join(sorted(takes)) or "no other field"
            raise APIError(400, f"{prefix}.{extra[0]} does not apply to {self.key} {mode!r} "
                           f"(it takes {names})", param=f"{prefix}.{extra[0]}",
                           code="field_not_applicable")

    def json_schema(self, flat: dict[str, Any]) -> dict[str, Any]:
        """`flat` (the pydantic model's schema, every field optional) as a `oneOf` with
        one closed variant per mode, discriminated by `key`."""
        props: dict[str, Any] = flat["properties"]
        variants = []
        for mode in self.applies:
            key = {k: v for k, v in props[self.key].items() if k != "default"}
            key.update(const=mode, enum=[mode])
            if mode == self.default:
                key["default"] = mode
            own = {self.key: key}
            own.update({f: copy.deepcopy(props[f]) for f in props if f in self.fields(mode)})
            variant: dict[str, Any] = {"type": "object", "title": f"{self.key}: {mode}",
                                       "properties": own, "additionalProperties": False}
            required = [f for f in flat.get("required", []) if f in own]
            if mode != self.default:
                required.append(self.key)
            if required:
                variant["required"] = required
            variants.append(variant)
        out = {k: v for k, v in flat.items()
               if k not in ("properties", "required", "additionalProperties", "type")}
        out["oneOf"] = variants
        out["description"] = (f"One object per {self.key} (default {self.default!r}); a field "
                              f"the chosen {self.key} does not read is a 400 "
                              "field_not_applicable.")
        return out


def f(*names: str) -> frozenset[str]:
    return frozenset(names)
