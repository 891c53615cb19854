# Table 4, paper scale: SSD300 (VGG16) on VOC07+12 trainval -> VOC07 test, with cacim's quantization.
# Inherits mmdet's packaged SSD300 VOC config; only the paper's schedule, the SSDHead fix and the hook change.
_base_ = "mmdet::pascal_voc/ssd300_voc0712.py"

custom_imports = dict(
    imports=["benchmarks.openmmlab.modules", "cacim_core.integrations.mmengine"], allow_failed_imports=False
)

# SSDHeadFixed: mmdet 3.3.0's SSDHead cannot predict (mmdetection issues #11063, #11780).
model = dict(bbox_head=dict(type="SSDHeadFixed"))

# Paper: batch 16; SGD momentum 0.9, weight decay 5e-4; lr 1e-3 for 80k iterations, then 1e-4 and 1e-5
# for 20k iterations each.
train_dataloader = dict(batch_size=16, sampler=dict(type="InfiniteSampler", shuffle=True))
train_cfg = dict(_delete_=True, type="IterBasedTrainLoop", max_iters=120000, val_interval=10000)
optim_wrapper = dict(optimizer=dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", by_epoch=False, begin=0, end=120000, milestones=[80000, 100000], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000))
log_processor = dict(by_epoch=False)

# Quantize every backbone layer except the first conv (features.0) and the final 1x1 conv (conv7,
# features.33 of SSDVGG); the neck and head stay float, as in the paper.
cacim = dict(
    type="CacimHook",
    method="lloyd",
    levels=3,
    noise=0.0,
    trials=0,
    include=["backbone.*"],
    exclude=["backbone.features.0", "backbone.features.33"],
    first_last="quantize",
    refit_threshold=0.1,
)
custom_hooks = [
    dict(type="NumClassCheckHook"),
    dict(type="CheckInvalidLossHook", interval=50, priority="VERY_LOW"),
    cacim,
]
