"""Only the compiled part: the FTS5 ranking function (memctl/recall/_memrank.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler or
SQLite's headers the build goes on and keyword recall uses FTS5's own bm25 (slower on large
vaults, the same results; docs/usage.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "memctl.recall._memrank",
            sources=["memctl/recall/_memrank.c"],
            libraries=["m"],
            optional=True,
        )
    ]
)
