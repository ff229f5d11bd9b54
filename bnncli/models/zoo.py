"""The zoo's names, families and counts at ImageNet size, as plain data: `bnn models` prints its
default table, and `bnn train` refuses a misspelt model name, without loading torch.

The counts are :func:`bnncli.models.count_model` of each registered model built for 1000 classes
and measured at 224x224 (what `bnn models` shows by default); tests/test_models.py checks that
this table equals the registry and the counts, so a change to a model fails there until the table
is regenerated (the test prints the rows).

The standard library only: importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE, NUM_CLASSES = 224, 1000


class CountsMixin:
    """What follows from a model's counts (the fields of ZooCounts and bnncli.models.ModelStats)."""

    binary_macs: int
    fp_macs: int
    fc_macs: int
    binary_params: int
    params: int

    @property
    def ops(self) -> float:
        return self.binary_macs / 64 + (self.fp_macs - self.fc_macs)

    @property
    def size_bytes(self) -> int:
        """Trainable parameters with binary weights at 1 bit and the rest at 32 bits."""
        return (self.binary_params + 7) // 8 + 4 * (self.params - self.binary_params)


@dataclass(frozen=True)
class ZooCounts(CountsMixin):
    """bnncli.models.ModelStats' fields of one model at :data:`IMAGE_SIZE`, :data:`NUM_CLASSES`."""

    family: str
    params: int
    params_with_bn_stats: int
    binary_params: int
    binary_macs: int
    fp_macs: int
    fc_macs: int


# The registry's built-in models, in registration order.
ZOO: dict[str, ZooCounts] = {
    "binarydensenet28": ZooCounts("binarydensenet", 5131496, 5150504, 4202496, 3587383296, 202484224, 576000),
    "binarydensenet37": ZooCounts("binarydensenet", 8702248, 8734120, 7593984, 4506808320, 199738368, 640000),
    "binarydensenet37_dilated": ZooCounts("binarydensenet", 8702248, 8734120, 7593984, 7774470144, 452625408, 640000),
    "binarydensenet45": ZooCounts("binarydensenet", 13889512, 13939240, 12349440, 6430556160, 244103424, 800000),
    "binarydensenet_tiny": ZooCounts("binarydensenet", 123144, 124360, 46080, 47980800, 61178368, 64000),
    "binarydensenet_tiny_wide": ZooCounts("binarydensenet", 330264, 332488, 161280, 103179888, 62278432, 148000),
    "binarydensenet_tiny_dilated": ZooCounts("binarydensenet", 123144, 124360, 46080, 63221760, 63887872, 64000),
    "resnete18": ZooCounts("resnete", 11689640, 11699368, 10985472, 1676279808, 137793536, 512000),
    "resnete34": ZooCounts("resnete", 21797800, 21814952, 21086208, 3525967872, 137793536, 512000),
    "resnete_tiny": ZooCounts("resnete", 438488, 439960, 294912, 46964736, 30835712, 128000),
    "birealnet18": ZooCounts("birealnet", 11689512, 11699112, 10985472, 1676279808, 137793536, 512000),
    "birealnet_tiny": ZooCounts("birealnet", 438456, 439896, 294912, 46964736, 30835712, 128000),
    "birealnet_larq": ZooCounts("birealnet", 11689512, 11699112, 10985472, 1676279808, 137793536, 512000),
    "birealnet_larq_tiny": ZooCounts("birealnet", 143312, 144032, 73728, 11741184, 15116800, 64000),
    "quicknet_small": ZooCounts("quicknet", 12652504, 12661176, 11980800, 1156055040, 15941120, 512000),
    "quicknet": ZooCounts("quicknet", 13230024, 13239688, 12533760, 1849688064, 29651712, 512000),
    "quicknet_large": ZooCounts("quicknet", 23338184, 23355272, 22634496, 3699376128, 29651712, 512000),
    "quicknet_tiny": ZooCounts("quicknet", 126500, 127052, 58176, 9031680, 1247840, 64000),
    "meliusnet22": ZooCounts("meliusnet", 6944584, 6969672, 6119424, 4624220160, 136388608, 512000),
    "meliusnet_tiny": ZooCounts("meliusnet", 201800, 203848, 82944, 82978560, 72863744, 96000),
    "realtobinarynet": ZooCounts("realtobinarynet", 11986920, 11995624, 10985472, 1676279808, 138087936, 806400),
    "realtobinarynet_tiny": ZooCounts("realtobinarynet", 446248, 447464, 294912, 46964736, 30843232, 135520),
    "xnornet": ZooCounts("alexnet", 62377440, 62396768, 58236928, 1025744896, 113379328, 4096000),
    "xnornet_tiny": ZooCounts("alexnet", 137456, 138096, 67328, 17729280, 18277888, 64000),
    "binary_alexnet": ZooCounts("alexnet", 61838248, 61859192, 61827776, 768512000, 72855552, 0),
    "binary_alexnet_tiny": ZooCounts("alexnet", 138440, 141048, 137136, 20033280, 18213888, 0),
}
