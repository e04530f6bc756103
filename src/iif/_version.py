"""The package version, in a module of its own: the package root re-exports it, and the modules that stamp
it into what they write (``outputs``' folder marker, ``resume``'s settings key) import it from here, so none
of them imports the package root (which imports them: an import circle, docs/ARCHITECTURE.md
"Layering rules"). Keep it equal to ``version`` in pyproject.toml."""

__version__ = "0.1.0"
