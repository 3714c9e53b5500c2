"""``run_cifar.py`` with the narrowed test network (ResNet18 width 4), as a real process.

The kill-and-resume test runs it with ``python`` and kills it with SIGKILL; the full-width
ResNet18 would take minutes on the test machine's CPU. Everything else is the real script.
"""

from example_forgetting import models, train
from example_forgetting.cli import cifar_main
from forgetting_common import run_main


def narrow(name: str, num_classes: int):
    if name != "resnet18":
        raise ValueError(name)
    return models.ResNet18(num_classes=num_classes, width=4)


if __name__ == "__main__":
    train.build_cifar_model = narrow
    run_main(cifar_main, prog="run_cifar.py")
