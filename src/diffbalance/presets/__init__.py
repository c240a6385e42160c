"""The bundled experiment configs: one YAML file per preset, named by the file (`diffbalance run NAME`)."""

from importlib import resources

PRESETS = tuple(sorted((p.name[: -len(".yaml")] for p in resources.files(__name__).iterdir()
                        if p.name.endswith(".yaml")), key=lambda n: (n != "demo", n)))  # the demo first
