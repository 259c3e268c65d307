// Detection postprocessing: decoding of the model's raw output and greedy non-maximum suppression, class-aware
// (boxes of different classes never suppress each other).
#pragma once
#include <cstdint>
#include <vector>

namespace dde {

// boxes (n, 4) xyxy, scores (n), class_ids (n). Writes the kept indices to keep[0:count], highest score first
// (equal scores in input order), and returns count. A box is dropped when its IoU with a kept box of its class
// is above iou_threshold; a pair whose union has no area has IoU 0. NaN scores rank last.
int64_t nms(const float* boxes, const float* scores, const int64_t* class_ids, int64_t n, float iou_threshold,
            int64_t* keep);

struct Decoded {
  std::vector<float> boxes;  // (n, 4) xyxy
  std::vector<float> scores;
  std::vector<int64_t> class_ids;
};

// One image's raw output, `anchors` rows of `width` = 4 + classes floats: a box xyxy, then per-class
// probabilities. Candidates: with multi_label, every (anchor, class) pair with probability > conf (NaN never
// is); otherwise each anchor's best class (the first on ties) when its probability > conf: one box per
// defect. In anchor then class order; beyond max_candidates only the highest-scoring are kept (on equal scores
// the earlier pair), still in that order. Then NMS, class-aware unless `agnostic`, and at most max_det
// detections, highest score first.
Decoded decode_detections(const float* raw, int64_t anchors, int64_t width, float conf, float iou_threshold,
                          int64_t max_candidates, int64_t max_det, bool multi_label, bool agnostic);

}  // namespace dde
