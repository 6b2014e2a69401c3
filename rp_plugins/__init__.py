"""The default components of rp, each registered through the same hooks a third-party plugin uses.

Every module here is a plugin listed under the `rp.plugins` entry-point group in
pyproject.toml. Heavy libraries (torch, dlib, OpenCV, onnxruntime) are imported
inside the components' methods, never at module import.
"""
