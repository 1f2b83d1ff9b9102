"""Optional detectron2 PointRend backend (the paper's original engine).

detectron2 has no wheels on the package registries this project builds from, so the default
engine is the torchvision one (`karyoflow.segment.model`). This module imports detectron2 only
when it is called; on a GPU deployment install it from source first (see docs/segmentation.md):

    pip install 'git+https://github.com/facebookresearch/detectron2.git'

The configuration mirrors detectron2's `projects/PointRend` instance-segmentation config
(implicit PointRend mask head on p2, 3-layer point head of 256), with one class and BioImLab's
native 768x576 input, and is built in code so no YAML files from the detectron2 source tree are
needed.
"""

from __future__ import annotations

from pathlib import Path


class BackendUnavailable(RuntimeError):
    """detectron2 (with its PointRend project) is not installed."""


def _require_detectron2():
    try:
        import detectron2  # noqa: F401
        from detectron2.config import get_cfg
        from detectron2.projects import point_rend
    except ImportError as error:
        raise BackendUnavailable(
            "the detectron2 backend needs detectron2 with its PointRend project; install it with "
            "pip install 'git+https://github.com/facebookresearch/detectron2.git' (see docs/segmentation.md)"
        ) from error
    return get_cfg, point_rend


def pointrend_config(weights: Path | None = None, device: str = "cuda", output_dir: Path | None = None):
    """A detectron2 CfgNode for PointRend Mask R-CNN, R-50-FPN, one class, trained from scratch."""
    get_cfg, point_rend = _require_detectron2()
    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.WEIGHTS = str(weights) if weights else ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # from scratch: train every stage
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    cfg.MODEL.ROI_MASK_HEAD.NAME = "PointRendMaskHead"
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASK_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 1
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 14 * 14
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 5
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 28 * 28
    cfg.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0]
    cfg.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]
    cfg.INPUT.MASK_FORMAT = "bitmask"  # PointRend instance segmentation needs bitmasks
    cfg.INPUT.MIN_SIZE_TRAIN = (576,)
    cfg.INPUT.MAX_SIZE_TRAIN = 768
    cfg.INPUT.MIN_SIZE_TEST = 576
    cfg.INPUT.MAX_SIZE_TEST = 768
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def build_predictor(weights: Path, device: str = "cuda"):
    """detectron2's DefaultPredictor for trained PointRend weights: call it with a BGR image."""
    _require_detectron2()
    from detectron2.engine import DefaultPredictor

    cfg = pointrend_config(weights, device)
    cfg.freeze()
    return DefaultPredictor(cfg)


def train(coco_json: Path, image_dir: Path, output_dir: Path, iterations: int = 20000, device: str = "cuda") -> Path:
    """Train on a COCO export (`karyo data coco`) whose images were written to `image_dir`."""
    _require_detectron2()
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer

    register_coco_instances("karyoflow_train", {}, str(coco_json), str(image_dir))
    cfg = pointrend_config(None, device, output_dir)
    cfg.DATASETS.TRAIN = ("karyoflow_train",)
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MAX_ITER = iterations
    cfg.SOLVER.STEPS = (int(iterations * 0.75), int(iterations * 0.9))
    cfg.freeze()
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    return output_dir / "model_final.pth"
