"""mn.__version__ without importing the rest of the package (the CLI and `import mn` both read it)."""
from __future__ import annotations

from pathlib import Path


def package_version() -> str:
    """The installed distribution's version (importlib.metadata); in a source checkout that is not installed,
    the version in the checkout's pyproject.toml; else '0+unknown'."""
    from importlib import metadata
    try:
        return metadata.version("mn")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        import re
        text = pyproject.read_text(encoding="utf-8")
        if re.search(r'^name\s*=\s*"mn"', text, re.M):
            found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
            if found:
                return found.group(1)
    except OSError:
        pass
    return "0+unknown"


__version__ = package_version()
