"""Built-in presets: one ``register(EncoderSpec(...))`` per model.

Sources: the Hugging Face model cards, cross-checked against slide2vec (``slide2vec/encoders/models/*``,
``docs/models.md``) and TRIDENT (``trident/patch_encoder_models/load.py``). ``TimmBuild.kwargs`` are the
card's ``timm.create_model`` kwargs verbatim; ``arch`` / ``arch_extra`` reproduce the repository's
``config.json`` with a timm built-in (TRIDENT uses the same pairs for local checkpoints) and are only used
for raw single-file checkpoints and for offline (meta-device) checks. Where the card was not reachable
from here the note says so.
"""

from __future__ import annotations

from slide2vec_dagster.encoders.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BaselineBuild,
    EncoderSpec,
    ExternalBuild,
    OutputVariant,
    Preprocessing,
    TimmBuild,
    TransformersBuild,
    WeightsSource,
    register,
)

SWIGLU = "py:timm.layers.SwiGLUPacked"
SILU = "py:torch.nn.SiLU"

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
HIBOU_MEAN = (0.7068, 0.5755, 0.722)
HIBOU_STD = (0.195, 0.2316, 0.1816)
LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)
HALF = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RUDOLF_MEAN = (0.7072, 0.5787, 0.7036)
RUDOLF_STD = (0.2119, 0.2301, 0.1775)
GENBIO_MEAN = (0.697, 0.575, 0.728)
GENBIO_STD = (0.188, 0.240, 0.187)

MULTI_SPACING = (0.25, 0.5, 1.0, 2.0)
NC = "non-commercial"


def _one(dim: int, pooling: str = "head") -> dict[str, OutputVariant]:
    return {"default": OutputVariant(dim, pooling)}  # type: ignore[arg-type]


def _cls_mean(dim: int, cls_pooling: str = "cls") -> dict[str, OutputVariant]:
    return {
        "cls": OutputVariant(dim, cls_pooling, "class token"),  # type: ignore[arg-type]
        "cls_patch_mean": OutputVariant(2 * dim, "cls_patch_mean", "class token + mean of patch tokens"),
    }


def _pre(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", resize: int | None = None):
    return Preprocessing(resize=resize or size, crop=size, mean=mean, std=std, interpolation=interpolation)


# --------------------------------------------------------------------------- offline baseline

register(
    EncoderSpec(
        name="baseline-color-texture",
        description=(
            "BASELINE, not a foundation model: deterministic weight-free 70-d colour / H&E stain / texture "
            "statistics (RGB & HSV stats, optical density, Ruifrok H&E deconvolution, tissue fraction, "
            "gradient / Laplacian / LBP / GLCM at two scales). For offline runs, tests and sanity baselines."
        ),
        output_variants={"default": OutputVariant(70, "features", "see encoders.baseline.FEATURE_NAMES")},
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        supported_spacings_um=MULTI_SPACING,
        precision="fp32",
        preprocessing=Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        build=BaselineBuild(),
        weights=None,
        aliases=("baseline",),
        source_note="slide2vec_dagster.encoders.baseline",
    )
)

# --------------------------------------------------------------------------- timm presets

register(
    EncoderSpec(
        name="lunit",
        description="Lunit DINO ViT-S/8 (Kang et al., CVPR 2023), timm port by 1aurent.",
        output_variants=_one(384),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224, LUNIT_MEAN, LUNIT_STD),
        build=TimmBuild(
            hub_name="hf-hub:1aurent/vit_small_patch8_224.lunit_dino",
            kwargs={"dynamic_img_size": True},
            arch="vit_small_patch8_224",
            arch_extra={"img_size": 224},
        ),
        weights=WeightsSource("1aurent/vit_small_patch8_224.lunit_dino", gated=False, license=f"Lunit {NC}"),
        aliases=("lunit-vits8",),
        source_note="mean/std: lunit-io/benchmark-ssl-pathology; slide2vec lunit.py; TRIDENT LunitS8",
    )
)

register(
    EncoderSpec(
        name="prost40m",
        description="Prost40M: prostate-specific ViT-S tile encoder (Grisi et al.).",
        output_variants=_one(384),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224),
        build=TimmBuild(
            hub_name="hf-hub:waticlems/Prost40M",
            kwargs={"dynamic_img_size": True},
            arch="vit_small_patch14_dinov2",
            arch_extra={"img_size": 224},
        ),
        weights=WeightsSource("waticlems/Prost40M", gated=False, license="see model page"),
        source_note=(
            "dim/spacing/precision: slide2vec prost40m.py + docs. config.json not reachable offline: the "
            "ViT-S/14 arch and ImageNet mean/std are assumptions; the hub path uses the repo's own config"
        ),
    )
)

register(
    EncoderSpec(
        name="uni",
        description="UNI ViT-L/16 (Chen et al., Nat Med 2024).",
        output_variants=_one(1024),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp16",
        preprocessing=_pre(224, interpolation="bilinear"),  # card: Resize(224) (bilinear), CenterCrop(224)
        build=TimmBuild(
            hub_name="hf-hub:MahmoodLab/uni",
            kwargs={"init_values": 1e-5, "dynamic_img_size": True},
            arch="vit_large_patch16_224",
            arch_extra={"img_size": 224, "patch_size": 16},
        ),
        weights=WeightsSource("MahmoodLab/UNI", gated=True, license="CC-BY-NC-ND-4.0"),
        aliases=("uni_v1",),
    )
)

register(
    EncoderSpec(
        name="uni2",
        description="UNI2-h ViT-H/14 with 8 registers (MahmoodLab).",
        output_variants=_one(1536),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="bf16",  # slide2vec model_settings + TRIDENT use bf16
        preprocessing=_pre(224, interpolation="bilinear"),
        build=TimmBuild(
            hub_name="hf-hub:MahmoodLab/UNI2-h",
            kwargs={
                "img_size": 224,
                "patch_size": 14,
                "depth": 24,
                "num_heads": 24,
                "init_values": 1e-5,
                "embed_dim": 1536,
                "mlp_ratio": 2.66667 * 2,
                "num_classes": 0,
                "no_embed_class": True,
                "mlp_layer": SWIGLU,
                "act_layer": SILU,
                "reg_tokens": 8,
                "dynamic_img_size": True,
            },
            arch="vit_giant_patch14_224",
        ),
        weights=WeightsSource("MahmoodLab/UNI2-h", gated=True, license="CC-BY-NC-ND-4.0"),
        aliases=("uni_v2", "uni2-h"),
    )
)

_VIRCHOW_KWARGS = {"mlp_layer": SWIGLU, "act_layer": SILU}
_VIRCHOW_ARCH = {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": ""}

register(
    EncoderSpec(
        name="virchow",
        description="Virchow ViT-H/14 (Paige, Vorontsov et al., Nat Med 2024).",
        output_variants=_cls_mean(1280),
        default_variant="cls_patch_mean",  # card: concat class token and mean patch token
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp16",
        preprocessing=_pre(224),  # timm config: bicubic, crop_pct 1.0, ImageNet stats
        build=TimmBuild(
            hub_name="hf-hub:paige-ai/Virchow",
            kwargs=_VIRCHOW_KWARGS,
            arch="vit_huge_patch14_224",
            arch_extra=_VIRCHOW_ARCH,
        ),
        weights=WeightsSource("paige-ai/Virchow", gated=True, license="Apache-2.0 + Paige acceptable-use terms"),
    )
)

register(
    EncoderSpec(
        name="virchow2",
        description="Virchow2 ViT-H/14 with 4 registers (Paige, Zimmermann et al., 2024).",
        output_variants=_cls_mean(1280),
        default_variant="cls_patch_mean",  # card: output[:, 0] + output[:, 5:].mean(1)
        tile_size_px=224,
        spacing_um=0.5,
        supported_spacings_um=(0.5, 1.0, 2.0),
        precision="fp16",
        preprocessing=_pre(224),
        build=TimmBuild(
            hub_name="hf-hub:paige-ai/Virchow2",
            kwargs=_VIRCHOW_KWARGS,
            arch="vit_huge_patch14_224",
            arch_extra={**_VIRCHOW_ARCH, "reg_tokens": 4},
        ),
        weights=WeightsSource("paige-ai/Virchow2", gated=True, license="CC-BY-NC-ND-4.0"),
    )
)

register(
    EncoderSpec(
        name="gigapath",
        description="Prov-GigaPath tile encoder, ViT-g/16 (Xu et al., Nature 2024).",
        output_variants=_one(1536),
        default_variant="default",
        tile_size_px=256,  # card: Resize(256, bicubic) -> CenterCrop(224)
        spacing_um=0.5,
        precision="fp16",
        preprocessing=_pre(224, resize=256),
        build=TimmBuild(
            hub_name="hf_hub:prov-gigapath/prov-gigapath",  # the card's spelling; timm maps hf_hub -> hf-hub
            kwargs={"dynamic_img_size": True},
            arch="vit_giant_patch14_dinov2",
            arch_extra={
                "img_size": 224,
                "patch_size": 16,
                "embed_dim": 1536,
                "depth": 40,
                "num_heads": 24,
                "mlp_ratio": 5.33334,
                "init_values": 1e-5,
            },
        ),
        weights=WeightsSource("prov-gigapath/prov-gigapath", gated=True, license="Apache-2.0"),
        aliases=("prov-gigapath", "prov-gigapath-tile"),
    )
)

_HOPT_VARIANTS = {
    "cls": OutputVariant(1536, "head", "class token (the card's model(x))"),
    "cls_patch_mean": OutputVariant(3072, "cls_patch_mean", "class token + mean of patch tokens"),
}
for _name, _repo, _license in (
    ("h-optimus-0", "bioptimus/H-optimus-0", "Apache-2.0"),
    ("h-optimus-1", "bioptimus/H-optimus-1", "CC-BY-NC-ND-4.0 (gated)"),
):
    register(
        EncoderSpec(
            name=_name,
            description=f"{_repo.split('/')[1]} ViT-g/14 with 4 registers (Bioptimus).",
            output_variants=_HOPT_VARIANTS,
            default_variant="cls",
            tile_size_px=224,
            spacing_um=0.5,
            precision="fp16",
            preprocessing=_pre(224, HOPTIMUS_MEAN, HOPTIMUS_STD),
            build=TimmBuild(
                hub_name=f"hf-hub:{_repo}",
                kwargs={"init_values": 1e-5, "dynamic_img_size": False},
                arch="vit_giant_patch14_reg4_dinov2",
                arch_extra={"img_size": 224, "global_pool": "token"},
            ),
            weights=WeightsSource(_repo, gated=_name != "h-optimus-0", license=_license),
            aliases=(_name.replace("-", ""),),  # TRIDENT names
        )
    )

register(
    EncoderSpec(
        name="h0-mini",
        description="H0-mini ViT-B/14 with 4 registers, distilled from H-optimus-0 (Bioptimus).",
        output_variants=_cls_mean(768),
        default_variant="cls_patch_mean",  # card recommends CLS + mean patch token concatenation
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp16",
        preprocessing=_pre(224, HOPTIMUS_MEAN, HOPTIMUS_STD),
        build=TimmBuild(
            hub_name="hf-hub:bioptimus/H0-mini",
            kwargs={"mlp_layer": SWIGLU, "act_layer": SILU},
            arch="vit_base_patch14_reg4_dinov2",
            arch_extra={"img_size": 224, "init_values": 1e-5},
        ),
        weights=WeightsSource("bioptimus/H0-mini", gated=True, license="CC-BY-NC-ND-4.0"),
        source_note="arch_extra mlp_ratio not verified offline (output dim does not depend on it)",
    )
)

register(
    EncoderSpec(
        name="mstar",
        description="mSTAR ViT-L/16 tile encoder (Xu et al., Nat Commun 2025).",
        output_variants=_one(1024),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224, interpolation="bilinear"),  # card: Resize(224), ImageNet stats
        build=TimmBuild(
            hub_name="hf-hub:Wangyh/mSTAR",
            kwargs={"init_values": 1e-5, "dynamic_img_size": True},
            arch="vit_large_patch16_224",
            arch_extra={"img_size": 224},
        ),
        weights=WeightsSource("Wangyh/mSTAR", gated=True, license="CC-BY-NC-ND-4.0"),
    )
)

register(
    EncoderSpec(
        name="gpfm",
        description="GPFM ViT-L/14 DINOv2 tile encoder (Ma et al., 2024); raw GPFM.pth checkpoint.",
        output_variants=_one(1024),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=Preprocessing(resize=224, crop=224, interpolation="bicubic"),
        build=TimmBuild(
            hub_name=None,  # not a timm repo: one raw state_dict loaded strictly into the arch below
            kwargs={"init_values": 1e-5, "dynamic_img_size": True},
            arch="vit_large_patch14_dinov2",
            arch_extra={"img_size": 224},
        ),
        weights=WeightsSource("majiabo/GPFM", gated=False, license="MIT", filename="GPFM.pth"),
    )
)

register(
    EncoderSpec(
        name="dinov2-vitb14",
        description="Natural-image DINOv2 ViT-B/14 (LVD-142M) control: not a pathology model.",
        output_variants=_one(768),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,  # spacing-agnostic; 0.5 matches the pathology presets
        supported_spacings_um=MULTI_SPACING,
        precision="fp16",
        preprocessing=_pre(224, resize=256),  # Meta's eval recipe: Resize 256 bicubic -> CenterCrop 224
        build=TimmBuild(
            hub_name="hf-hub:timm/vit_base_patch14_dinov2.lvd142m",
            kwargs={"dynamic_img_size": True},
            arch="vit_base_patch14_dinov2",
        ),
        weights=WeightsSource("timm/vit_base_patch14_dinov2.lvd142m", gated=False, license="Apache-2.0"),
    )
)

register(
    EncoderSpec(
        name="dinov3-vitb16",
        description="Natural-image DINOv3 ViT-B/16 (LVD-1689M) control: not a pathology model.",
        output_variants={
            "patch_mean": OutputVariant(768, "head", "timm's avg pool over patch tokens (the checkpoint default)"),
            "cls": OutputVariant(768, "cls", "class token"),
        },
        default_variant="patch_mean",
        tile_size_px=256,
        spacing_um=0.5,
        supported_spacings_um=MULTI_SPACING,
        precision="fp16",
        preprocessing=_pre(256),
        build=TimmBuild(
            hub_name="hf-hub:timm/vit_base_patch16_dinov3.lvd1689m",
            kwargs={"dynamic_img_size": True},
            arch="vit_base_patch16_dinov3",
        ),
        weights=WeightsSource("timm/vit_base_patch16_dinov3.lvd1689m", gated=True, license="DINOv3 License"),
    )
)

for _suffix, _arch, _dim, _img in (
    ("vits16", "vit_small_patch16_224", 384, 224),
    ("vits8", "vit_small_patch8_224", 384, 224),
    ("vitb16", "vit_base_patch16_224", 768, 224),
    ("vitb8", "vit_base_patch8_224", 768, 224),
    ("vitl14", "vit_large_patch14_reg4_dinov2", 1024, 518),
):
    _repo = f"1aurent/{_arch}.kaiko_ai_towards_large_pathology_fms"
    register(
        EncoderSpec(
            name=f"kaiko-{_suffix}",
            description=f"kaiko.ai 'Towards large-scale training of pathology foundation models' {_suffix}.",
            output_variants=_one(_dim),
            default_variant="default",
            tile_size_px=224,
            spacing_um=0.5,
            supported_spacings_um=MULTI_SPACING,
            precision="fp32",
            preprocessing=_pre(224, HALF, HALF, interpolation="bilinear"),
            build=TimmBuild(
                hub_name=f"hf-hub:{_repo}",
                kwargs={"dynamic_img_size": True},
                arch=_arch,
                arch_extra={"img_size": _img},
            ),
            weights=WeightsSource(_repo, gated=False, license="see model page"),
            source_note="TRIDENT KaikoInferenceEncoder",
        )
    )

# --------------------------------------------------------------------------- transformers presets

_TRANSFORMERS = ("transformers",)

register(
    EncoderSpec(
        name="phikon",
        description="Phikon iBOT ViT-B/16 (Owkin, Filiot et al. 2023); transformers ViTModel.",
        output_variants=_one(768, "cls"),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224, interpolation="bilinear"),
        build=TransformersBuild(),
        weights=WeightsSource("owkin/phikon", gated=False, license=f"Owkin {NC}"),
        requires=_TRANSFORMERS,
    )
)

register(
    EncoderSpec(
        name="phikonv2",
        description="Phikon-v2 DINOv2 ViT-L/16 (Owkin, Filiot et al. 2024); transformers AutoModel.",
        output_variants=_one(1024, "cls"),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224, interpolation="bilinear"),
        build=TransformersBuild(),
        weights=WeightsSource("owkin/phikon-v2", gated=False, license=f"Owkin {NC}"),
        requires=_TRANSFORMERS,
        aliases=("phikon-v2",),
    )
)

for _name, _repo, _dim in (("hibou-b", "histai/hibou-b", 768), ("hibou-l", "histai/hibou-L", 1024)):
    register(
        EncoderSpec(
            name=_name,
            description=f"{_repo} DINOv2 ViT with registers (HistAI); transformers remote code.",
            output_variants=_one(_dim, "pooler"),
            default_variant="default",
            tile_size_px=224,
            spacing_um=0.5,
            precision="fp16",
            preprocessing=_pre(224, HIBOU_MEAN, HIBOU_STD),
            build=TransformersBuild(trust_remote_code=True, num_prefix_tokens=5),
            weights=WeightsSource(_repo, gated=_name == "hibou-l", license="Apache-2.0"),
            requires=_TRANSFORMERS,
        )
    )

register(
    EncoderSpec(
        name="midnight",
        description="kaiko.ai Midnight-12k ViT-g/14 (Karasikov et al. 2025); transformers Dinov2Model.",
        output_variants={
            "cls_patch_mean": OutputVariant(3072, "cls_patch_mean", "class token + mean of patch tokens"),
            "cls": OutputVariant(1536, "cls", "class token"),
        },
        default_variant="cls_patch_mean",
        tile_size_px=224,
        spacing_um=0.5,
        supported_spacings_um=MULTI_SPACING,
        precision="fp16",
        preprocessing=_pre(224, HALF, HALF, interpolation="bilinear"),
        build=TransformersBuild(),
        weights=WeightsSource("kaiko-ai/midnight", gated=False, license="MIT"),
        requires=_TRANSFORMERS,
        aliases=("kaiko-midnight", "midnight12k"),
    )
)

for _name, _repo, _dim in (
    ("rudolfv2", "Aignostics/RudolfV-2", 1536),
    ("rudolfv2-b", "Aignostics/RudolfV-2-B", 768),
    ("rudolfv2-s", "Aignostics/RudolfV-2-S", 384),
):
    register(
        EncoderSpec(
            name=_name,
            description=f"Aignostics {_repo.split('/')[1]} ViT/8 with 8 registers and 2-D RoPE (remote code).",
            output_variants={
                "cls_patch_mean": OutputVariant(2 * _dim, "cls_patch_mean", "class token + mean of patch tokens"),
                "cls": OutputVariant(_dim, "cls", "class token"),
            },
            default_variant="cls_patch_mean",
            tile_size_px=224,
            spacing_um=0.5,
            supported_spacings_um=MULTI_SPACING,
            precision="fp32",
            preprocessing=_pre(224, RUDOLF_MEAN, RUDOLF_STD),
            build=ExternalBuild(
                install_hint="pip install transformers  (the model runs Hugging Face remote code, trust_remote_code)",
                reason="its published encode() needs slide2vec's rectangular-RoPE block adapter, not ported here",
            ),
            weights=WeightsSource(_repo, gated=True, license="see model page"),
            requires=_TRANSFORMERS,
        )
    )

register(
    EncoderSpec(
        name="genbio-pathfm",
        description="GenBio-PathFM 1.1B single-channel ViT, per-channel CLS concatenation (remote code).",
        output_variants=_one(4608, "features"),
        default_variant="default",
        tile_size_px=224,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(224, GENBIO_MEAN, GENBIO_STD),
        build=TransformersBuild(trust_remote_code=True),
        weights=WeightsSource("genbio-ai/genbio-pathfm", gated=False, license="GenBio AI Community License"),
        requires=_TRANSFORMERS,
    )
)

# --------------------------------------------------------------------------- external packages

register(
    EncoderSpec(
        name="conch",
        description="CONCH ViT-B/16 vision-language model (Lu et al., Nat Med 2024), image tower.",
        output_variants=_one(512, "features"),
        default_variant="default",
        tile_size_px=448,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=_pre(448, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        build=ExternalBuild(
            install_hint="pip install git+https://github.com/Mahmoodlab/CONCH.git",
            reason="CONCH is built by its own open_clip fork (conch.open_clip_custom), not by timm",
        ),
        weights=WeightsSource("MahmoodLab/conch", gated=True, license="CC-BY-NC-ND-4.0"),
        requires=("conch",),
        aliases=("conch_v1",),
    )
)

register(
    EncoderSpec(
        name="conchv15",
        description="CONCH v1.5 ViT-L/16 image tower, extracted from TITAN (MahmoodLab).",
        output_variants=_one(768, "features"),
        default_variant="default",
        tile_size_px=448,
        spacing_um=0.5,
        precision="fp16",
        preprocessing=_pre(448),
        build=ExternalBuild(
            install_hint="pip install transformers  (MahmoodLab/TITAN runs remote code: trust_remote_code=True)",
            reason="the tower comes from TITAN's remote-code return_conch(), which this platform does not execute",
        ),
        weights=WeightsSource("MahmoodLab/TITAN", gated=True, license="CC-BY-NC-ND-4.0"),
        requires=_TRANSFORMERS,
        aliases=("conch_v15", "conch-v1.5"),
    )
)

register(
    EncoderSpec(
        name="musk",
        description="MUSK vision-language model (Xiang et al., Nature 2025), image tower.",
        output_variants={
            "ms_aug": OutputVariant(2048, "features", "multi-scale augmented CLS"),
            "cls": OutputVariant(1024, "features", "class token"),
        },
        default_variant="ms_aug",
        tile_size_px=384,
        spacing_um=0.5,
        supported_spacings_um=(0.25, 0.5, 1.0),
        precision="fp16",
        preprocessing=_pre(384, HALF, HALF),
        build=ExternalBuild(
            install_hint="pip install fairscale git+https://github.com/lilab-stanford/MUSK.git",
            reason="musk_large_patch16_384 is registered in timm only by the musk package",
        ),
        weights=WeightsSource("xiangjx/musk", gated=True, license="CC-BY-NC-ND-4.0"),
        requires=("musk", "fairscale"),
    )
)
