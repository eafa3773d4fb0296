"""unclip: unCLIP (Ramesh et al., 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents").

Importing the package is cheap and free of side effects: subpackages (``unclip.diffusion`` and the rest) are
imported explicitly by the user.
"""

__version__ = "0.1.0"
