"""The README's notebook example runs as written, end to end, on tiny data: with device strings, and with
"cfg" swapped for "cutmix". Only the data and the training lengths are shrunk (listed in SHRINK)."""

import re
from pathlib import Path

import pytest
from fixtures_data import isolated_data_env, write_image_tree  # noqa: F401 (fixture)

README = Path(__file__).resolve().parents[1] / "README.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(b for b in blocks if "fill(reb" in b)


def shrink(code: str, root: Path) -> str:
    """Tiny data, CPU, short training; everything else stays as the README writes it."""
    subs = [
        ('DataConfig(name="cifar10")', f'DataConfig(name="folder", root={str(root)!r}, image_size=8, test_fraction=0.5)'),
        ("n_min=500", "n_min=2"),
        ('"cuda"', '"cpu"'),
        ('TrainConfig(model="resnet18")', 'TrainConfig(model="resnet18", epochs=2, batch_size=4, warmup_epochs=0)'),
        ('build_rebalancer("cfg", ', 'build_rebalancer("cfg", train={"train_steps": 4, "batch_size": 4}, '
                                     'num_inference_steps=2, '),
    ]
    for old, new in subs:
        assert old in code, f"the README example no longer contains {old}"
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("method", ["cfg", "cutmix"])
def test_readme_example_runs(tmp_path, isolated_data_env, method, capsys):
    write_image_tree(tmp_path / "data", {"cat": 12, "dog": 12, "fox": 12}, size=(8, 8))
    code = shrink(example(), tmp_path / "data")
    if method != "cfg":
        code = code.replace('build_rebalancer("cfg", train={"train_steps": 4, "batch_size": 4}, num_inference_steps=2, ',
                            f'build_rebalancer("{method}", ').replace('"fills/cfg"', f'"fills/{method}"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    imbalanced, fills = scope["imbalanced"], scope["fills"]
    assert imbalanced.counts() == [2, 4, 6]
    assert imbalanced.concat(fills).counts() == [6, 6, 6]
    assert 0 <= float(capsys.readouterr().out.strip()) <= 1
    assert (Path.cwd() / "fills" / method / "complete.json").is_file()
    if method == "cfg":  # a work folder was made for the generator, which plain diffusers loads
        from diffusers import DiffusionPipeline

        folder = next((Path.cwd() / "fills" / "cfg" / ".work").glob("cfg-generator-*"))
        assert DiffusionPipeline.from_pretrained(folder).unet.config.num_class_embeds == 4
