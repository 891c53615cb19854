# Table 5, paper scale: PSPNet (ResNet-50-D8) on VOC 2012 aug (10,582 train) -> VOC 2012 val (1,449),
# multi-scale test averaged, with cacim's quantization. Inherits mmseg's packaged config.
_base_ = "mmseg::pspnet/pspnet_r50-d8_4xb4-20k_voc12aug-512x512.py"

custom_imports = dict(imports=["cacim_core.integrations.mmengine"], allow_failed_imports=False)

# One process (no distributed launcher): BN instead of the packaged SyncBN.
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg),
)

# Paper: batch 8; SGD momentum 0.9; lr 1e-2 with poly decay, power 0.9 (the packaged 20k schedule).
train_dataloader = dict(batch_size=8)
optim_wrapper = dict(optimizer=dict(type="SGD", lr=1e-2, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=20000, by_epoch=False)]

# Every conv layer quantized (Table 5 names no exception); multi-scale test: the run CLI swaps in the
# packaged `tta_pipeline` (scales 0.5..1.75, flip) and `SegTTAModel`, as mmseg's `tools/test.py --tta`.
cacim = dict(type="CacimHook", method="lloyd", levels=3, noise=0.0, trials=0, first_last="quantize")
custom_hooks = [cacim]
