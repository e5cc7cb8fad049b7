"""Built-in proxies; importing this package registers them (and does nothing else)."""
from . import entropic, gradient, jacob_cov, naswot, structural, synflow  # noqa: F401
from . import epe_nas, fisher, gradsign, grasp, l2_norm, plain, zen  # noqa: F401
from . import aznas, meco, swap, tenas, zico  # noqa: F401  (issue 14 part 2)
