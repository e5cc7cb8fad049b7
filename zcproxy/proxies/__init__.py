"""Built-in proxies; importing this package registers them (and does nothing else)."""
from . import entropic, gradient, jacob_cov, naswot, structural, synflow  # noqa: F401
