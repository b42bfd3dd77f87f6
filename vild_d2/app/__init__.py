"""
The try-it page (``demo/app.py``, ``make app``): Gradio, an optional extra
(``python3 tools/install.py --extra app``); importing :mod:`vild_d2` does not import it.
"""
