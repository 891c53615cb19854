# Table 4, proxy scale: the same SSD300 architecture with every channel count / 8 (SlimSSDVGG), random
# init, on the generated VOC-format shapes dataset (benchmarks/openmmlab/voc_shapes.py). The run CLI sets
# data_root, iterations and the hook's levels/noise per cell.
_base_ = "./ssd300_vgg16_voc0712_cacim.py"

width = 1 / 8
model = dict(
    backbone=dict(type="SlimSSDVGG", width=width, init_cfg=None),
    neck=dict(in_channels=(64, 128), out_channels=(64, 128, 64, 32, 32, 32)),
    bbox_head=dict(in_channels=(64, 128, 64, 32, 32, 32)),
)
train_dataloader = dict(batch_size=8, num_workers=1, persistent_workers=True)
val_dataloader = dict(batch_size=8, num_workers=1)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-2), clip_grad=dict(max_norm=10.0))
train_cfg = dict(max_iters=2000, val_interval=100000)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="MultiStepLR", by_epoch=False, begin=0, end=2000, milestones=[1400, 1700], gamma=0.1),
]
default_hooks = dict(checkpoint=None, logger=dict(interval=50))
