// Greedy non-maximum suppression, class-aware (boxes of different classes never suppress each other).
#pragma once
#include <cstdint>

namespace dde {

// boxes (n, 4) xyxy, scores (n), class_ids (n). Writes the kept indices to keep[0:count], highest score first
// (equal scores in input order), and returns count. A box is dropped when its IoU with a kept box of its class
// is above iou_threshold; a pair whose union has no area has IoU 0. NaN scores rank last.
int64_t nms(const float* boxes, const float* scores, const int64_t* class_ids, int64_t n, float iou_threshold,
            int64_t* keep);

}  // namespace dde
