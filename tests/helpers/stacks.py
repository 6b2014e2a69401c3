"""Plugin sets tests load through the real entry points (a module of its own: `conftest` names are ambiguous
between tests/ and tests/diffusion/ when pytest collects both)."""

#: The plugins written in this package's default face stack.
FACE_STACK_PLUGINS = "rp-dlib,rp-sfd,rp-centerface,rp-buffalo-l,rp-obfuscate,rp-affine,rp-presets"
