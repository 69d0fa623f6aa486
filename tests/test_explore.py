import pytest
import torch
import yaml
from torchvision.io import decode_png

from shortgan.errors import UserError
from shortgan.explore import explore, interpolate, latent_plane, load_generator, main
from shortgan.networks import MLPGenerator


def test_interpolate_runs_from_z0_to_z1():
    z0, z1 = torch.randn(16), torch.randn(16)
    for spherical in (True, False):
        path = interpolate(z0, z1, 5, spherical)
        assert path.shape == (5, 16)
        assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    assert torch.allclose(interpolate(z0, z1, 3, spherical=False)[1], (z0 + z1) / 2)


def test_spherical_interpolation_keeps_the_norm_between_equal_norm_ends():
    z0, z1 = torch.randn(64), torch.randn(64)
    z1 = z1 / z1.norm() * z0.norm()
    norms = interpolate(z0, z1, 7).norm(dim=1)
    assert torch.allclose(norms, z0.norm().expand(7), rtol=1e-4)
    assert interpolate(z0, z1, 7, spherical=False).norm(dim=1)[3] < 0.9 * z0.norm()  # the line sags


def test_latent_plane_varies_two_coordinates_and_fixes_the_rest():
    z = torch.randn(10)
    grid = latent_plane(z, dims=(2, 5), span=2.0, steps=3)
    assert grid.shape == (9, 10)
    others = [i for i in range(10) if i not in (2, 5)]
    assert torch.equal(grid[:, others], z[others].expand(9, -1))
    assert grid[:3, 2].tolist() == [-2.0, 0.0, 2.0]  # along a row
    assert grid[::3, 5].tolist() == [-2.0, 0.0, 2.0]  # down the rows


@pytest.mark.parametrize("mode, size", [("samples", (2, 4)), ("interpolate", (2, 4)), ("plane", (4, 4))])
def test_explore_writes_one_png_with_a_cell_per_image(mode, size, tmp_path):
    path = explore(MLPGenerator(latent_dim=8, hidden_dims=(16,)).eval(), mode, tmp_path, steps=4, rows=2)
    image = decode_png(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
    rows, cols = size
    assert path.name == f"{mode}.png"
    assert image.shape[1:] == (2 + 30 * rows, 2 + 30 * cols)  # make_grid: 28 px + 2 px padding per cell


def _checkpoint_run(tmp_path, generator_config):
    """A run folder as the CLI writes it: config.yaml beside checkpoints/last.ckpt."""
    generator = MLPGenerator(**generator_config["init_args"])
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in generator.state_dict().items()}}, ckpt)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"generator": generator_config}}}))
    return generator, ckpt


def test_load_generator_rebuilds_the_run_generator_from_its_config(tmp_path):
    config = {"class_path": "shortgan.networks.MLPGenerator", "init_args": {"latent_dim": 8, "hidden_dims": [16]}}
    original, ckpt = _checkpoint_run(tmp_path, config)
    loaded = load_generator(str(ckpt))
    assert not loaded.training
    z = torch.randn(3, 8)
    assert torch.equal(loaded(z), original.eval()(z))


def test_explore_cli_reports_a_config_that_does_not_fit_the_checkpoint(tmp_path, capsys):
    config = {"class_path": "shortgan.networks.MLPGenerator", "init_args": {"latent_dim": 8, "hidden_dims": [16]}}
    _, ckpt = _checkpoint_run(tmp_path, config)
    other = tmp_path / "other.yaml"
    config["init_args"]["latent_dim"] = 4
    other.write_text(yaml.safe_dump({"model": {"init_args": {"generator": config}}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(ckpt), "--config", str(other), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "does not fit the generator" in capsys.readouterr().err
    with pytest.raises(UserError, match="--dims must be two different coordinates"):
        explore(load_generator(str(ckpt)), "plane", tmp_path, dims=(0, 8))
