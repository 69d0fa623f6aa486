"""ShortGAN's command line: `python main.py fit --config configs/quickstart.yaml` (see README.md)."""

from shortgan.cli import cli_main

if __name__ == "__main__":
    cli_main()
