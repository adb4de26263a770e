"""Built-in slide- and patient-level presets: one ``register_slide_encoder(SlideEncoderSpec(...))`` per model.

Sources: slide2vec 7.1.4 (``slide2vec/encoders/models/{prism,prism2,titan,gigapath,moozy}``,
``docs/models.rst``), each model's release (prov-gigapath GitHub, the ``moozy`` 0.1.1 package on PyPI) and
Hugging Face model cards. Names, pairings and dimensions are slide2vec's.

How each one is built here:

* ``moozy-slide`` / ``moozy``: from the official ``moozy`` package (PyPI), with ``moozy.pt``.
* ``prism`` / ``prism2`` / ``titan``: their code exists only in their Hugging Face repositories; loaded with
  ``transformers`` remote code, only with ``model.trust_remote_code: true`` and a pinned ``model.revision``.
* ``gigapath-slide``: refused with the reason (its LongNet code is on GitHub only and needs flash attention).
* ``mean-pool`` / ``mean-pool-patient``: weight-free baselines for the offline demo, not models.
"""

from __future__ import annotations

from slide2vec_dagster.encoders.slide_spec import (
    MeanPoolBuild,
    PackageBuild,
    RemoteCodeBuild,
    SlideEncoderSpec,
    register_slide_encoder,
)
from slide2vec_dagster.encoders.spec import ExternalBuild, WeightsSource

NC = "non-commercial"
_TRANSFORMERS = ("transformers",)

# --------------------------------------------------------------------------- weight-free baselines

register_slide_encoder(
    SlideEncoderSpec(
        name="mean-pool",
        level="slide",
        description=(
            "BASELINE, not a model: the mean of the slide's tile features, (N, D) -> (D,). Weight-free and "
            "deterministic; pairs with any tile encoder (the offline demo uses baseline-color-texture)."
        ),
        tile_encoder=None,
        tile_variant=None,
        input_dim=None,
        feature_dim=None,
        build=MeanPoolBuild(),
        weights=None,
        precision="fp32",
        spacing_um=None,
        aliases=("meanpool", "mean"),
        source_note="slide2vec_dagster.encoders.pooling",
    )
)

register_slide_encoder(
    SlideEncoderSpec(
        name="mean-pool-patient",
        level="patient",
        description=(
            "BASELINE, not a model: the mean of one patient's slide embeddings, (S, D) -> (D,). Weight-free; "
            "accepts the slide embeddings of any slide encoder (the offline demo uses mean-pool)."
        ),
        tile_encoder=None,
        tile_variant=None,
        input_dim=None,
        feature_dim=None,
        build=MeanPoolBuild(),
        weights=None,
        precision="fp32",
        slide_encoder=None,
        spacing_um=None,
        aliases=("meanpool-patient",),
        source_note="slide2vec_dagster.encoders.pooling",
    )
)

# --------------------------------------------------------------------------- MOOZY (PyPI package)

_MOOZY_WEIGHTS = WeightsSource(
    "AtlasAnalyticsLab/MOOZY",
    gated=False,
    license=f"CC-BY-NC-SA-4.0 ({NC}; the moozy package's licence, see the model page)",
    filename="moozy.pt",
)
_MOOZY_BUILD = PackageBuild(
    package="moozy",
    pip_spec="moozy==0.1.1",
    # --no-deps: moozy's declared dependencies (wandb, scikit-survival, h5py, huggingface-hub<2) serve its
    # training CLI; the model modules used here import only torch.
    install_hint="pip install --no-deps moozy==0.1.1",
    adapter="moozy",
)

register_slide_encoder(
    SlideEncoderSpec(
        name="moozy-slide",
        level="slide",
        description=(
            "MOOZY slide encoder (Kotp et al. 2026): ViT over lunit tile features with 2-D ALiBi on level-0 "
            "distances in tile units; the stage-2 checkpoint's slide encoder, [CLS] output."
        ),
        tile_encoder="lunit",
        tile_variant="default",
        input_dim=384,
        feature_dim=768,
        build=_MOOZY_BUILD,
        weights=_MOOZY_WEIGHTS,
        precision="fp32",
        uses_coordinates=True,
        requires=("moozy",),
        source_note=(
            "slide2vec 7.1.4 encoders/models/moozy (vendored copy of the package code); moozy 0.1.1 "
            "models/moozy_slide_encoder.py, models/serialization.py, models/factory.py:load_stage2_inference_model"
        ),
    )
)

register_slide_encoder(
    SlideEncoderSpec(
        name="moozy",
        level="patient",
        description=(
            "MOOZY patient encoder: the stage-2 case transformer ([CASE] token over the patient's moozy-slide "
            "embeddings), from the same moozy.pt checkpoint."
        ),
        tile_encoder="lunit",
        tile_variant="default",
        input_dim=768,
        feature_dim=768,
        build=_MOOZY_BUILD,
        weights=_MOOZY_WEIGHTS,
        precision="fp32",
        slide_encoder="moozy-slide",
        uses_coordinates=True,  # through its slide encoder
        requires=("moozy",),
        source_note="slide2vec 7.1.4 MOOZYPatientEncoder; moozy 0.1.1 models/case_transformer.py CaseAggregator",
    )
)

# --------------------------------------------------------------------------- Hugging Face remote code

register_slide_encoder(
    SlideEncoderSpec(
        name="prism",
        level="slide",
        description=(
            "PRISM (Paige, Shaikovski et al. 2024): Perceiver slide encoder over Virchow class-token + "
            "patch-mean tile features; output = image_embedding."
        ),
        tile_encoder="virchow",
        tile_variant="cls_patch_mean",
        input_dim=2560,
        feature_dim=1280,
        build=RemoteCodeBuild(
            method="slide_representations",
            call="features",
            output_key="image_embedding",
            latents_key="image_latents",
            feature_dtype="model",  # slide2vec casts stored features to PRISM's dtype
            install_hint="pip install transformers environs sacremoses  (slide2vec's prism extra)",
        ),
        weights=WeightsSource("paige-ai/Prism", gated=True, license=f"CC-BY-NC-ND-4.0 ({NC}, Paige terms)"),
        precision="fp16",
        latent_shape=(512, 1280),
        latent_description="the Perceiver's 512 latent queries after cross-attention (image_latents), (512, 1280)",
        requires=_TRANSFORMERS,
        source_note=(
            "slide2vec 7.1.4 prism.py (slide_representations; latents [1, 512, 1280]); model card: "
            "model.slide_representations(tile_embeddings) -> image_embedding [1, 1280], image_latents. "
            "slide2vec pins no revision for PRISM."
        ),
    )
)

register_slide_encoder(
    SlideEncoderSpec(
        name="prism2",
        level="slide",
        description=(
            "PRISM2 (Paige, Shaikovski et al. 2025) base embedding: the Perceiver image resampler's pooled output "
            "over Virchow2 class tokens. Needs a CUDA GPU with flash-attn (its cross-attention calls "
            "flash_attn_varlen_func)."
        ),
        tile_encoder="virchow2",
        tile_variant="cls",  # slide2vec docs: "virchow2 with its 1280-dimensional cls output"
        input_dim=1280,
        feature_dim=2560,
        build=RemoteCodeBuild(
            method="get_base_embedding",
            call="processor",
            load_dtype="auto",  # slide2vec: torch_dtype="auto"
            device_modules=("image_resampler",),  # the base embedding uses only this; Phi-3 stays on CPU
            install_hint="pip install 'transformers<5,>=4.51' flash-attn  (a CUDA GPU is required)",
        ),
        weights=WeightsSource(
            "paige-ai/Prism2",
            gated=True,
            license=f"CC-BY-NC-ND-4.0 ({NC}, Paige terms)",
            revision="450352d0ddc6b42b21ce20794ce0fbefe6b5a47a",
        ),
        precision="bf16",
        output_variants={"diagnostic": 3072},
        requires=_TRANSFORMERS,
        source_note=(
            "slide2vec 7.1.4 prism2.py (PRISM2_REVISION, AutoProcessor(tile_embeddings=[...]), get_base_embedding) "
            "and docs/models.rst 'PRISM2 gated-use contract'. The 3072-d 'diagnostic' variant (Phi-3 hidden state) "
            "is not built here: slide2vec patches transformers' Phi-3 internals for it."
        ),
    )
)

register_slide_encoder(
    SlideEncoderSpec(
        name="titan",
        level="slide",
        description=(
            "TITAN (MahmoodLab, Ding et al. 2024): ViT with 2-D ALiBi over CONCH v1.5 tile features placed on "
            "their level-0 grid (coords // tile_size_lv0)."
        ),
        tile_encoder="conchv15",
        tile_variant="default",
        input_dim=768,
        feature_dim=768,
        build=RemoteCodeBuild(
            method="encode_slide_from_patch_features",
            call="features_coords_tile_size",
            feature_dtype="float32",  # its preprocess_features index_add_ rejects fp16 features
            install_hint="pip install 'transformers<5,>=4.46' einops einops-exts  (slide2vec's titan extra)",
        ),
        weights=WeightsSource(
            "MahmoodLab/TITAN",
            gated=True,
            license=f"CC-BY-NC-ND-4.0 ({NC})",
            revision="dac6773d9961cfc75503440676ff157a2c6e8d2e",
        ),
        precision="fp16",
        uses_coordinates=True,
        requires=_TRANSFORMERS,
        source_note=(
            "slide2vec 7.1.4 titan.py (_TITAN_REVISION; encode_slide_from_patch_features(features, coords.long(), "
            "tile_size_lv0)); model card: patch_size_lv0 = 512 at 20x, 1024 at 40x"
        ),
    )
)

# --------------------------------------------------------------------------- not runnable here

register_slide_encoder(
    SlideEncoderSpec(
        name="gigapath-slide",
        level="slide",
        description=(
            "Prov-GigaPath slide encoder (Xu et al., Nature 2024): LongNet (dilated attention) over GigaPath tile "
            "features; last layer's [CLS] after the final norm."
        ),
        tile_encoder="gigapath",
        tile_variant="default",
        input_dim=1536,
        feature_dim=768,
        build=ExternalBuild(
            install_hint=(
                "pip install git+https://github.com/prov-gigapath/prov-gigapath fairscale einops flash-attn "
                "(a CUDA GPU is required)"
            ),
            reason=(
                "its LongNet slide encoder (gigapath.slide_encoder.create_model('gigapath_slide_enc12l768d')) is "
                "published only in prov-gigapath's GitHub package, whose vendored torchscale fork provides the "
                "DilatedAttention that PyPI's torchscale 0.3.0 lacks, and that attention asserts flash attention, "
                "so it cannot run on CPU"
            ),
        ),
        weights=WeightsSource(
            "prov-gigapath/prov-gigapath", gated=True, license="Apache-2.0", filename="slide_encoder.pth"
        ),
        precision="fp16",
        uses_coordinates=True,
        # slide2vec maps each tile to a 256-px LongNet grid cell, floor(coords / tile_size_lv0) * 256, so
        # overlapping tiles would share a cell.
        supports_tile_overlap=False,
        requires=("gigapath",),
        aliases=("prov-gigapath-slide",),
        source_note=(
            "slide2vec 7.1.4 gigapath.py (create_model(path, 'gigapath_slide_enc12l768d', 1536), "
            "slide_grid_coordinates, aggregation_revision=1); prov-gigapath gigapath/slide_encoder.py, "
            "torchscale/component/dilated_attention.py (assert self.args.flash_attention)"
        ),
    )
)
