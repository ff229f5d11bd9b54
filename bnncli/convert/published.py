"""The ImageNet weights Larq Zoo publishes for bnncli's architectures: where, and their checksums.

Plain data (the standard library only), so `bnn models` lists them without loading torch;
bnncli.convert.larq imports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """A weights file Larq Zoo publishes (larq_zoo 2.4's download table: file name and SHA-256)."""

    larq_zoo_model: str
    release: str
    file: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://github.com/larq/zoo/releases/download/{self.release}/{self.file}"


PUBLISHED = {
    "binarydensenet28": Published("BinaryDenseNet28", "binary_densenet-v0.1.0", "binary_densenet_28_weights.h5",
                                  "21fe3ca03eed244df9c41a2219876fcf03e73800932ec96a3e2a76af4747ac53"),
    "binarydensenet37": Published("BinaryDenseNet37", "binary_densenet-v0.1.0", "binary_densenet_37_weights.h5",
                                  "8056a5d52c3ed86a934893987d09a06f59a5166aa9bddcaedb050f111d0a7d76"),
    "binarydensenet37_dilated": Published(
        "BinaryDenseNet37Dilated", "binary_densenet-v0.1.0", "binary_densenet_37_dilated_weights.h5",
        "15c1bcd79b8dc22971382fbf79acf364a3f51049d0e584a11533e6fdbb7363d3"),
    "binarydensenet45": Published("BinaryDenseNet45", "binary_densenet-v0.1.0", "binary_densenet_45_weights.h5",
                                  "d00a0d26fbd2dba1bfba8c0306c770f3aeea5c370e99f963bb239bd916f72c37"),
    "resnete18": Published("BinaryResNetE18", "resnet_e-v0.1.0", "resnet_e_18_weights.h5",
                           "bde4a64d42c164a7b10a28debbe1ad5b287c499bc0247ecb00449e6e89f3bf5b"),
}
