"""The ImageNet weights Larq Zoo publishes for bnncli's architectures: where, and their checksums;
and the Larq Zoo models bnncli does not import, with the reason.

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
    "quicknet_small": Published("QuickNetSmall", "quicknet-v1.0", "quicknet_small_weights.h5",
                                "1ac3b07df7f5a911dd0b49febb2486428ddf1ca130297c403815dfae5a1c71a2"),
    "quicknet": Published("QuickNet", "quicknet-v1.0", "quicknet_weights.h5",
                          "8aba9e4e5f8d342faef04a0b2ae8e562da57dbb7d15162e8b3e091c951ba756c"),
    "quicknet_large": Published("QuickNetLarge", "quicknet-v1.0", "quicknet_large_weights.h5",
                                "c5158e8a59147b31370becd937825f4db8a5cdf308314874f678f596629be45c"),
    "birealnet_larq": Published("BiRealNet", "birealnet-v0.3.0", "birealnet_weights.h5",
                                "6e6efac1584fcd60dd024198c87f42eb53b5ec719a5ca1f527e1fe7e8b997117"),
    "meliusnet22": Published("MeliusNet22", "meliusnet22-v0.1.0", "meliusnet22_weights.h5",
                             "c1ba85e8389ae326009665ec13331e49fc3df4d0f925fa8553e224f7362c18ed"),
    "realtobinarynet": Published("RealToBinaryNet", "r2b-v0.1.0", "r2b_weights.h5",
                                 "e8fd16ca1ab9810ac3835f24f5c62758a57bc32a615f73aaa50d382d2b9617e1"),
    "xnornet": Published("XNORNet", "xnornet-v0.2.0", "xnornet_weights.h5",
                         "e6ba24f785655260ae76a2ef1fab520e3528243d9c8fac430299cd81dbeabe10"),
    "binary_alexnet": Published("BinaryAlexNet", "binary_alexnet-v0.3.0", "binary_alexnet_weights.h5",
                                "7fc065c47c5c1d92389e0bb988ce6df6a4fa09d803b866e2ba648069d6652d63"),
}
# Larq Zoo 2.4's other published models (top-1 from its docstrings), and why bnncli does not import them.
NOT_IMPORTED: dict[str, tuple[float, str]] = {
    "DoReFaNet": (53.39, "out of scope: 2-bit activations; the packed runtime's binary convs take +-1 inputs only"),
}
