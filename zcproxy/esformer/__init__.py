"""ESFormer: the fine-grained EfficientFormerV2-derived search space and its model builder.

    from zcproxy.esformer import SearchSpace, build_model, arch_cost
    space = SearchSpace("s1")                       # extended=True adds ResNet bottlenecks
    arch = space.random(random.Random(0))
    child = space.mutate(arch, rng, genes="topology", n_mutations=2)
    model = build_model(arch, num_classes=1000, img_size=224, device="cuda")
"""
from .flops import Cost, arch_cost, count_macs, count_params
from .model import ESFormer, build_model
from .space import (
    ALL_GENES, SIZE_GENES, SKELETONS, TOPOLOGY_GENES, Architecture, BlockGenes, SearchSpace,
    efficientformer_v2,
)

__all__ = [
    "SearchSpace", "Architecture", "BlockGenes", "TOPOLOGY_GENES", "SIZE_GENES", "ALL_GENES",
    "SKELETONS", "efficientformer_v2", "build_model", "ESFormer", "count_params", "count_macs",
    "arch_cost", "Cost",
]
