from .builtin import register_all_builtin, shapes_world_root
from .lvis_format import load_lvis_format_json, lvis_format_metadata, register_lvis_format
from .shapes_world import ShapesWorldSpec, generate_shapes_world

register_all_builtin()
