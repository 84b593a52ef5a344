"""The version, written once; setup.cfg reads it (``attr: proxy.version.__version__``)."""

__version__ = "0.1.0"
