// Greedy NMS over per-class lists: each kept box only scans the lower-scored boxes of its own class, so the
// cost is (kept boxes) x (their class's size) IoUs instead of a Python loop of numpy calls per kept box.
// decode_detections does the whole per-image postprocessing in one call: on a line most frames have no
// defect, and one compiled call is what keeps that frame's postprocessing cheap (a few numpy calls cost more).
#include "nms.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

namespace dde {

namespace {

float iou(const float* a, const float* b) {
  const float w = std::max(0.f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const float h = std::max(0.f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const float inter = w * h;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
  return inter / std::max(area_a + area_b - inter, 1e-9f);
}

}  // namespace

int64_t nms(const float* boxes, const float* scores, const int64_t* class_ids, int64_t n, float iou_threshold,
            int64_t* keep) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto rank = [&](int64_t i) { return std::isnan(scores[i]) ? -std::numeric_limits<float>::infinity() : scores[i]; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rank(a) > rank(b); });

  // each class's boxes in score order, and where each box sits in its class's list
  std::unordered_map<int64_t, std::vector<int64_t>> by_class;
  std::vector<size_t> slot(static_cast<size_t>(n));
  for (const int64_t i : order) {
    auto& members = by_class[class_ids[i]];
    slot[static_cast<size_t>(i)] = members.size();
    members.push_back(i);
  }
  std::vector<char> dropped(static_cast<size_t>(n), 0);
  int64_t count = 0;
  for (const int64_t i : order) {
    if (dropped[static_cast<size_t>(i)]) continue;
    keep[count++] = i;
    const auto& members = by_class[class_ids[i]];
    for (size_t s = slot[static_cast<size_t>(i)] + 1; s < members.size(); ++s) {
      const int64_t j = members[s];
      if (!dropped[static_cast<size_t>(j)] && iou(boxes + 4 * i, boxes + 4 * j) > iou_threshold)
        dropped[static_cast<size_t>(j)] = 1;
    }
  }
  return count;
}

Decoded decode_detections(const float* raw, int64_t anchors, int64_t width, float conf, float iou_threshold,
                          int64_t max_candidates, int64_t max_det, bool multi_label, bool agnostic) {
  const int64_t classes = width - 4;
  std::vector<int64_t> picked;  // anchor * classes + class
  for (int64_t a = 0; a < anchors; ++a) {
    const float* probs = raw + a * width + 4;
    if (multi_label) {
      for (int64_t c = 0; c < classes; ++c)
        if (probs[c] > conf) picked.push_back(a * classes + c);
      continue;
    }
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (probs[c] > probs[best] || (std::isnan(probs[best]) && !std::isnan(probs[c]))) best = c;
    if (probs[best] > conf) picked.push_back(a * classes + best);
  }
  auto prob = [&](int64_t k) { return raw[(k / classes) * width + 4 + k % classes]; };
  if (static_cast<int64_t>(picked.size()) > max_candidates) {
    const auto cut = picked.begin() + max_candidates;
    std::nth_element(picked.begin(), cut, picked.end(), [&](int64_t a, int64_t b) {
      const float pa = prob(a), pb = prob(b);
      return pa > pb || (pa == pb && a < b);
    });
    picked.erase(cut, picked.end());
    std::sort(picked.begin(), picked.end());
  }
  const int64_t n = static_cast<int64_t>(picked.size());
  std::vector<float> boxes(static_cast<size_t>(4 * n)), scores(static_cast<size_t>(n));
  std::vector<int64_t> class_ids(static_cast<size_t>(n)), keep(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = picked[static_cast<size_t>(i)] / classes;
    std::copy(raw + a * width, raw + a * width + 4, boxes.begin() + 4 * i);
    scores[static_cast<size_t>(i)] = prob(picked[static_cast<size_t>(i)]);
    class_ids[static_cast<size_t>(i)] = picked[static_cast<size_t>(i)] % classes;
  }
  const std::vector<int64_t> one_class(agnostic ? static_cast<size_t>(n) : 0, 0);
  const int64_t* nms_classes = agnostic ? one_class.data() : class_ids.data();
  const int64_t kept = std::min(nms(boxes.data(), scores.data(), nms_classes, n, iou_threshold, keep.data()),
                                std::max<int64_t>(max_det, 0));
  Decoded out;
  out.boxes.reserve(static_cast<size_t>(4 * kept));
  for (int64_t i = 0; i < kept; ++i) {
    const size_t k = static_cast<size_t>(keep[static_cast<size_t>(i)]);
    out.boxes.insert(out.boxes.end(), boxes.begin() + 4 * k, boxes.begin() + 4 * k + 4);
    out.scores.push_back(scores[k]);
    out.class_ids.push_back(class_ids[k]);
  }
  return out;
}

}  // namespace dde
