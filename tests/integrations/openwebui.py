"""Helpers for the Open WebUI filter tests: load the function file as Open WebUI does, read its frontmatter."""

from __future__ import annotations

import re
import sys
import types
import uuid
from pathlib import Path
from types import ModuleType

FILTER_FILE = Path(__file__).resolve().parents[2] / "integrations" / "openwebui" / "millm_steering.py"


def load_filter_module() -> ModuleType:
    """As Open WebUI's load_function_module_by_id does: a fresh module registered in sys.modules, the file's
    text executed in its namespace."""
    name = f"function_millm_steering_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    module.__dict__["__file__"] = str(FILTER_FILE)
    exec(FILTER_FILE.read_text(), module.__dict__)
    return module


def frontmatter(text: str) -> dict[str, str]:
    """The frontmatter rule of Open WebUI's plugin loader (utils/plugin.py extract_frontmatter): the file's
    first line is exactly three double quotes, then `key: value` lines until the closing quotes."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != '"""':
        return {}
    out = {}
    for line in lines[1:]:
        if '"""' in line:
            break
        m = re.match(r"^\s*([a-z_]+):\s*(.*)\s*$", line, re.IGNORECASE)
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out
