// The one list of differentiable ops that the tools iterate over (tg-gradcheck --op all,
// tg-bench --items ops) and that tests/ops/op_list_test.cpp gradchecks. A new op adds one entry in
// ops/op_list.cpp: a name and a function that builds a case (inputs of random, odd shapes and the
// function to check).
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
  std::string name;
  /// Builds a case with sizes and values drawn from gen, in dtype on device.
  std::function<OpCase(Generator& gen, DType dtype, Device device)> make;
};

/// Every op of the list, in a fixed order.
const std::vector<OpEntry>& op_list();
/// The entry named name; throws a tg::Error listing the names otherwise.
const OpEntry& find_op(const std::string& name);

}  // namespace tg::ops
