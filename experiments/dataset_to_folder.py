"""Write a built-in dataset's training split as a folder of PNGs, one subfolder per class (issue 28's check
that `--data.dataset folder` trains as the built-in config does):

    python experiments/dataset_to_folder.py --dataset fashion_mnist --data_dir DIR --out /tmp/fashion_folder
    python main.py fit --config configs/fashion_mnist.yaml --data.dataset folder --data.data_dir /tmp/fashion_folder
"""

import argparse
from pathlib import Path

from PIL import Image

from shortgan.data import ImageDataModule

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = ImageDataModule(args.dataset, args.data_dir, download=False)
    split = data.load_split(train=True)
    pixels = ((split.images[:, 0] + 1) * 127.5).round().byte().numpy()  # back to the files' uint8
    for i, (image, label) in enumerate(zip(pixels, split.labels.tolist())):
        folder = Path(args.out, str(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    print(f"wrote {len(pixels):,} PNGs of {args.dataset} into {args.out}/<class>/")
