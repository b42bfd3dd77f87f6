"""
Compatibility with the installed stack. ``detectron2_patch`` is standard-library only so
that the installer can run it before anything is installed.
"""
