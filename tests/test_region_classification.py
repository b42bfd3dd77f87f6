"""The CLIP-on-cropped-regions baseline scores crops as documented."""

import numpy as np
import torch
import torch.nn.functional as F

from vild_d2.evaluation.region_classification import clip_on_crops_detections, lvis_results
from vild_d2.teacher import encode_regions


class _FixedProposals:
    """Two boxes per image, best objectness first, as RPNProposals(with_scores=True) returns."""

    boxes = np.array([[4.0, 4.0, 40.0, 40.0], [30.0, 20.0, 90.0, 70.0]], dtype=np.float32)
    logits = np.array([2.0, -1.0], dtype=np.float32)

    def __call__(self, dataset_dict, image, with_scores=False):
        assert with_scores
        return self.boxes, self.logits


def test_clip_on_crops_scores_are_sqrt_of_class_probability_times_objectness(
    tiny_lvis, tiny_clip_checkpoint
):
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils

    teacher = tiny_clip_checkpoint["model"].eval()
    d = teacher.text_projection.shape[1]
    text = F.normalize(torch.randn(5, d, generator=torch.Generator().manual_seed(0)), dim=1)
    dicts = DatasetCatalog.get(tiny_lvis["names"]["val"])[:1]
    dets = clip_on_crops_detections(
        teacher,
        text,
        _FixedProposals(),
        dicts,
        temperature=0.05,
        detections_per_image=3,
        progress=False,
    )
    assert len(dets) == 1 and len(dets[0]["scores"]) == 3  # top 3 of 2 boxes x 5 classes
    image = utils.read_image(dicts[0]["file_name"], format="RGB")
    emb = encode_regions(
        teacher,
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        torch.as_tensor(_FixedProposals.boxes),
    )
    probs = F.softmax(emb @ text.t() / 0.05, dim=1)
    expected = (probs * torch.sigmoid(torch.as_tensor(_FixedProposals.logits))[:, None]).sqrt()
    # NMS at 0.5 keeps both boxes (IoU < 0.5), so the 3 best scores overall survive
    np.testing.assert_allclose(
        np.sort(dets[0]["scores"])[::-1], np.sort(expected.flatten().numpy())[::-1][:3], rtol=1e-5
    )
    results = lvis_results(dets, {i: 100 + i for i in range(5)})
    assert {r["category_id"] for r in results} <= set(range(100, 105))
    x, y, w, h = results[0]["bbox"]
    assert w > 0 and h > 0
