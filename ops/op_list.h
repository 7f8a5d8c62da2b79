// The one list of differentiable ops that the tools iterate over (tg-gradcheck --op all,
// tg-bench --items ops) and that tests/ops/op_list_test.cpp gradchecks. A new op adds one entry in
// ops/op_list.cpp: a name and one function that builds a case of a requested size (0: gradcheck's
// random, odd shapes; otherwise a benchmark's inputs of about that many elements) and the function
// to check or time.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "../core/rng.h"
#include "../core/tensor.h"

namespace tg::ops {

/// One instance of an op to check: inputs (leaves that require grad, except where an input is not
/// differentiable) and the function of them.
struct OpCase {
  std::vector<Tensor> inputs;
  std::vector<std::string> input_names;
  std::function<std::vector<Tensor>(const std::vector<Tensor>&)> fn;
};

struct OpEntry {
  /// Builds a case in dtype on device with values drawn from gen: for elements == 0, gradcheck's
  /// small shapes drawn from gen; otherwise fixed benchmark shapes with about elements elements in
  /// each large input (a broadcast operand may be smaller).
  using SizedMake =
      std::function<OpCase(Generator& gen, DType dtype, Device device, int64_t elements)>;

  OpEntry(std::string name, SizedMake make_sized);

  std::string name;
  /// Builds a case with sizes and values drawn from gen, in dtype on device (gradcheck's shapes).
  std::function<OpCase(Generator& gen, DType dtype, Device device)> make;
  /// Builds a benchmark case: inputs of about elements elements (elements >= 1).
  std::function<OpCase(Generator& gen, DType dtype, Device device, int64_t elements)> make_bench;
};

/// Every op of the list, in a fixed order.
const std::vector<OpEntry>& op_list();
/// The entry named name; throws a tg::Error listing the names otherwise.
const OpEntry& find_op(const std::string& name);

}  // namespace tg::ops
