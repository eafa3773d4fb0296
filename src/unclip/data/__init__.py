"""Datasets: the procedural Shapes world (``unclip.data.shapes``) and readers of real captioned-image data.

Heavy optional parts; ``import unclip`` does not import this package.
"""
